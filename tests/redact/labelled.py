"""A labelled test set for face redaction: real face photographs composited into video with known boxes.

The faces are the photographs scikit-image ships: its astronaut (in colour,
and mirrored, which is another face to a detector) and the grey 25x25 face
crops of its LFW subset.  Each *actor* is one face with a path through the
clip: where it is, how big (24 to 300 pixels tall), how far it is turned
(foreshortened across, the nearest a flat photograph comes to a head turning),
tilted, lit; a pole passes in front of some of them, the whole scene's light
rises and falls, and the clip opens and closes on frames without any face.
Because the scene is drawn, the box of every face on every frame is known
exactly: that is what recall and over-blur are measured against.

Kept free of relative imports so that scripts/bench_redact.py can load it as
a plain module and measure the same set at greater length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
import cv2
import numpy as np
import skimage
from skimage import data

from openbwv.server.redact import Box

MIN_FACE_PX = 24  # faces whose box is smaller than this (shorter side) are not counted for recall
COVERED = 0.95  # a face counts as redacted when this share of its box is obscured

_LFW = Path(skimage.__file__).parent / "data" / "lfw_subset.npy"
# The astronaut's head as cut from the 512x512 photograph (rows, columns), and her face within that cut:
# hairline to chin, ear to ear, judged by eye.
_HEAD_ROWS, _HEAD_COLS = (15, 215), (145, 310)
_ASTRONAUT_FACE = Box(176 - 145, 52 - 15, 112, 122)


@dataclass(frozen=True)
class Portrait:
    """A picture with a face in it, BGR, and where the face is in the picture."""

    image: np.ndarray
    face: Box


def astronaut(mirrored: bool = False) -> Portrait:
    head = np.ascontiguousarray(data.astronaut()[_HEAD_ROWS[0] : _HEAD_ROWS[1], _HEAD_COLS[0] : _HEAD_COLS[1], ::-1])
    face = _ASTRONAUT_FACE
    if mirrored:
        head = np.ascontiguousarray(head[:, ::-1])
        face = Box(head.shape[1] - face.right, face.y, face.w, face.h)
    return Portrait(head, face)


def lfw(index: int) -> Portrait:
    """Face `index` (0-99 are faces) of scikit-image's LFW subset: a grey 25x25 crop that is all face."""
    grey = (np.load(_LFW)[index] * 255).astype(np.uint8)
    return Portrait(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), Box(0, 0, 25, 25))


Curve = Callable[[float], float]  # of the clip's time in seconds


def ramp(t0: float, v0: float, t1: float, v1: float) -> Curve:
    """v0 until t0, v1 after t1, a straight line between."""
    return lambda t: v0 + (v1 - v0) * min(1.0, max(0.0, (t - t0) / (t1 - t0)))


def const(v: float) -> Curve:
    return lambda t: v


def swing(mid: float, amplitude: float, period_s: float, phase: float = 0.0) -> Curve:
    return lambda t: mid + amplitude * math.sin(2 * math.pi * t / period_s + phase)


@dataclass(frozen=True)
class Actor:
    """One face's part in the clip.  x and y are the face's centre as fractions of the frame; height is the
    face box's height as a fraction of the frame's; yaw (degrees) foreshortens it across; tilt rotates it."""

    portrait: Portrait
    enter_s: float
    leave_s: float
    x: Curve
    y: Curve
    height: Curve
    yaw: Curve = const(0.0)
    tilt: Curve = const(0.0)
    light: Curve = const(1.0)
    note: str = ""


@dataclass(frozen=True)
class Pole:
    """Something in front of the faces (a lamppost, an arm): a vertical bar sweeping across."""

    x: Curve  # left edge, fraction of the width
    width: float  # fraction of the width


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    fps: int
    seconds: float
    actors: tuple[Actor, ...]
    poles: tuple[Pole, ...]
    light: Curve  # the whole picture's gain
    seed: int = 20261206

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)


def street(width: int = 1280, height: int = 720, seconds: float = 4.0, fps: int = 30, blank_s: float = 0.6) -> Scene:
    """The standard scene: nine faces from 24 to 300 pixels tall (at 720p; in proportion at other sizes),
    moving, turning, tilting, passing behind a pole, in dimming and brightening light, with no face in the
    first and last `blank_s`."""
    b = blank_s
    s = seconds
    per_px = 1 / 720  # face heights below are written in pixels of a 720-row frame
    actors = (
        Actor(astronaut(), b, s - b, ramp(b, 0.30, s, 0.45), const(0.55), ramp(b, 150 * per_px, s, 300 * per_px),
              yaw=ramp(0.3 * s, 0, 0.7 * s, 60), note="walks up to the camera, turning away"),
        Actor(astronaut(mirrored=True), b, s - b, ramp(b, 0.92, s - 0.3, 0.62), const(0.22), const(60 * per_px),
              tilt=swing(0, 20, 2.0), note="crosses the top, head tilting"),
        Actor(lfw(3), b, s - b, ramp(b, 0.05, s - 0.3, 0.35), ramp(b, 0.10, s - 0.3, 0.30), const(24 * per_px),
              note="far away: the smallest face counted"),
        Actor(lfw(11), b, s - b, const(0.78), const(0.62), const(40 * per_px), note="stands still behind the pole"),
        Actor(lfw(27), b, s - b, ramp(b, 0.70, s, 0.85), const(0.85), ramp(b, 56 * per_px, s, 32 * per_px),
              light=const(0.45), note="in shadow, walking away"),
        Actor(astronaut(), b + 0.3, s - b - 0.2, ramp(b + 0.3, 0.10, s - b - 0.2, 0.20), const(0.80), const(40 * per_px),
              yaw=swing(0, 45, 1.6), note="small, looking left and right"),
        Actor(lfw(42), b, min(s - b, b + 2.0), ramp(b, -0.05, b + 2.0, 1.05), const(0.40), const(80 * per_px),
              note="runs across the frame in two seconds, in from the left edge, out at the right"),
        Actor(lfw(64), b, s - b, const(0.55), ramp(b, 0.08, s - 0.3, 0.15), const(30 * per_px),
              light=swing(0.9, 0.4, 1.5), note="under a flickering light"),
        Actor(lfw(88), max(b, 1.0), s - b, ramp(max(b, 1.0), 0.95, s - b, 0.88), const(0.40), const(110 * per_px),
              yaw=ramp(max(b, 1.0), 50, s - b, 0), note="comes in at the right edge, turning to face the camera"),
    )
    poles = (Pole(ramp(b, 0.70, s - 0.3, 0.86), 0.015), Pole(ramp(b, 0.50, s - 0.3, 0.20), 0.03))
    return Scene(width, height, fps, seconds, actors, poles, light=swing(0.85, 0.3, s))


def _backdrop(width: int, height: int) -> np.ndarray:
    """scikit-image's rocket photograph (no faces in it), filling the frame."""
    return cv2.resize(np.ascontiguousarray(data.rocket()[:, :, ::-1]), (width, height), interpolation=cv2.INTER_AREA)


def _place(frame: np.ndarray, actor: Actor, t: float, width: int, height: int) -> Box | None:
    """Draw the actor at time t; its face's box on the frame (clipped), None when not in view."""
    p = actor.portrait
    face_h = actor.height(t) * height
    scale = face_h / p.face.h
    squash = math.cos(math.radians(actor.yaw(t)))
    sx, sy = scale * squash, scale
    fcx, fcy = p.face.x + p.face.w / 2, p.face.y + p.face.h / 2
    cx, cy = actor.x(t) * width, actor.y(t) * height
    angle = math.radians(actor.tilt(t))
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    # source -> frame: scale about the face's centre, rotate, move the face's centre to (cx, cy)
    linear = np.array([[cos_a * sx, -sin_a * sy], [sin_a * sx, cos_a * sy]])
    offset = np.array([cx, cy]) - linear @ np.array([fcx, fcy])
    h, w = p.image.shape[:2]
    corners = (linear @ np.array([[0, w, w, 0], [0, 0, h, h]], float)).T + offset
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    image = p.image if actor.light(t) == 1.0 else cv2.convertScaleAbs(p.image, alpha=actor.light(t))
    roi = frame[y0:y1, x0:x1]
    matrix = np.hstack([linear, (offset - [x0, y0])[:, None]])
    cv2.warpAffine(image, matrix, (x1 - x0, y1 - y0), dst=roi, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
                   borderMode=cv2.BORDER_TRANSPARENT)
    f = p.face
    face_corners = (linear @ np.array([[f.x, f.right, f.right, f.x], [f.y, f.y, f.bottom, f.bottom]], float)).T + offset
    fx0, fy0 = np.floor(face_corners.min(axis=0)).astype(int)
    fx1, fy1 = np.ceil(face_corners.max(axis=0)).astype(int)
    return Box(int(fx0), int(fy0), int(fx1 - fx0), int(fy1 - fy0)).clipped(width, height)


def render(scene: Scene) -> Iterator[tuple[np.ndarray, list[Box], list[int]]]:
    """Every frame of the scene (BGR) with the boxes of the faces in it and which actor each is."""
    back = _backdrop(scene.width, scene.height)
    rng = np.random.default_rng(scene.seed)
    grain = [rng.integers(0, 6, back.shape, dtype=np.uint8) for _ in range(5)]
    for i in range(scene.frames):
        t = i / scene.fps
        frame = back.copy()
        boxes, who = [], []
        for n, actor in enumerate(scene.actors):
            if actor.enter_s <= t <= actor.leave_s:
                box = _place(frame, actor, t, scene.width, scene.height)
                if box is not None:
                    boxes.append(box)
                    who.append(n)
        for pole in scene.poles:
            x0 = round(pole.x(t) * scene.width)
            frame[:, max(0, x0) : max(0, x0 + round(pole.width * scene.width))] = (40, 45, 50)
        frame = cv2.convertScaleAbs(frame, alpha=scene.light(t))
        frame = cv2.add(frame, grain[i % len(grain)])
        yield frame, boxes, who


def write_scene(scene: Scene, path: Path, *, crf: int = 20) -> list[list[Box]]:
    """Encode the scene as H.264 in MPEG-TS, as the camera records; returns every frame's face boxes."""
    truth = []
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=scene.fps, options={"preset": "ultrafast", "crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        for i, (pixels, boxes, _) in enumerate(render(scene)):
            frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, scene.fps)
            out.mux(stream.encode(frame))
            truth.append(boxes)
        out.mux(stream.encode(None))
    return truth


@dataclass(frozen=True)
class Miss:
    frame: int
    face: Box
    covered: float  # share of its box that was obscured


@dataclass(frozen=True)
class Score:
    """Recall and over-blur of a redaction against the known boxes."""

    faces: int  # ground-truth boxes counted (all frames, shorter side >= MIN_FACE_PX)
    redacted: int  # of those, at least COVERED obscured
    blurred_px: int  # obscured pixels, summed over frames
    outside_px: int  # of those, outside every ground-truth face box
    misses: tuple[Miss, ...]

    @property
    def recall(self) -> float:
        return self.redacted / self.faces if self.faces else 1.0

    @property
    def overblur(self) -> float:
        return self.outside_px / self.blurred_px if self.blurred_px else 0.0


def score(width: int, height: int, truth: Sequence[Sequence[Box]], regions: Sequence[Iterable[Box]]) -> Score:
    """Compare the regions obscured on each frame with the faces known to be there."""
    if len(truth) != len(regions):
        raise ValueError(f"{len(truth)} frames of ground truth, {len(regions)} of redaction")
    faces = redacted = blurred = outside = 0
    misses = []
    mask = np.zeros((height, width), bool)
    gt = np.zeros((height, width), bool)
    for i, (known, done) in enumerate(zip(truth, regions)):
        mask[:] = False
        gt[:] = False
        for r in done:
            mask[r.y : r.bottom, r.x : r.right] = True
        for f in known:
            gt[f.y : f.bottom, f.x : f.right] = True
        for f in known:
            if min(f.w, f.h) < MIN_FACE_PX:
                continue
            faces += 1
            share = float(mask[f.y : f.bottom, f.x : f.right].mean())
            if share >= COVERED:
                redacted += 1
            else:
                misses.append(Miss(i, f, share))
        blurred += int(mask.sum())
        outside += int((mask & ~gt).sum())
    return Score(faces, redacted, blurred, outside, tuple(misses))
