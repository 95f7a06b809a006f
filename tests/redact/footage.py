"""Test footage made of real faces: scikit-image's astronaut photograph and its LFW face crops.

Scenes are drawn in BGR with numpy and OpenCV and encoded as H.264 by PyAV,
the way the camera's clips are, so redaction is tested on what a decoder
really hands it, compression artefacts included.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import cv2
import numpy as np
import skimage
from skimage import data

from openbwv.server.redact import Box

_LFW = Path(skimage.__file__).parent / "data" / "lfw_subset.npy"


def astronaut_head(height: int) -> np.ndarray:
    """The astronaut's head (hair to chin, a little shoulder), BGR, scaled to `height` rows."""
    head = data.astronaut()[15:215, 145:310, ::-1]  # rows, columns of the 512x512 photograph
    width = round(head.shape[1] * height / head.shape[0])
    return cv2.resize(np.ascontiguousarray(head), (width, height), interpolation=cv2.INTER_AREA)


def lfw_face(index: int, size: int) -> np.ndarray:
    """Face `index` (0-99 are faces) of scikit-image's LFW subset, upscaled to size x size, BGR."""
    grey = (np.load(_LFW)[index] * 255).astype(np.uint8)
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def background(width: int, height: int, seed: int = 7) -> np.ndarray:
    """A soft, textured backdrop with no faces in it: smoothed noise over a gradient."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 8)
    ramp = np.linspace(60, 160, width, dtype=np.float32)[None, :, None]
    return np.clip(ramp + (noise.astype(np.float32) - 128) * 3, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, image: np.ndarray, x: int, y: int) -> Box:
    h, w = image.shape[:2]
    frame[y : y + h, x : x + w] = image
    return Box(x, y, w, h)


def document(width: int, height: int) -> np.ndarray:
    """A sheet of printed lines: the kind of detail a manual box is drawn over."""
    sheet = np.full((height, width, 3), 235, np.uint8)
    for row, y in enumerate(range(14, height - 4, 14)):
        cv2.putText(sheet, f"NAME {row} 07700 9{row}0{row}", (4, y), cv2.FONT_HERSHEY_PLAIN, 0.8, (20, 20, 20), 1, cv2.LINE_AA)
    return sheet


@dataclass(frozen=True)
class Scene:
    """Where things are in a composed clip, frame by frame (source pixels)."""

    width: int
    height: int
    fps: int
    frames: list[np.ndarray]
    kept_face: Box  # the requester: still, for the whole clip
    moving_faces: list[list[Box]]  # per frame, the other people's faces
    document: Box  # still, for the whole clip


def street_scene(frames: int = 30, fps: int = 30) -> Scene:
    """480x270: the requester still on the left, two other people moving on the right, a document bottom left."""
    width, height = 480, 270
    back = background(width, height)
    requester = astronaut_head(100)
    passer = cv2.flip(astronaut_head(84), 1)  # the mirrored photograph: another face to the detector
    other = lfw_face(2, 80)
    sheet = document(110, 60)
    out, moving = [], []
    kept = doc = None
    for i in range(frames):
        frame = back.copy()
        kept = paste(frame, requester, 20, 20)
        doc = paste(frame, sheet, 20, 195)
        moving.append([paste(frame, passer, 230 + 2 * i, 20), paste(frame, other, 380 - i, 170 - i // 2)])
        out.append(frame)
    assert kept is not None and doc is not None
    return Scene(width, height, fps, out, kept, moving, doc)


def write_h264(path: Path, frames: Iterable[np.ndarray], *, fps: int = 30, audio: bool = False, container: str = "mpegts",
               keyframe_every: int | None = None) -> None:
    """Encode BGR frames as H.264 (and a tone as AAC if `audio`), MPEG-TS by default like the camera; a keyframe
    every `keyframe_every` frames if given (a camera's segments begin at keyframes)."""
    frames = list(frames)
    height, width = frames[0].shape[:2]
    options = {"preset": "ultrafast", "crf": "16"} | ({"g": str(keyframe_every)} if keyframe_every else {})
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream("libx264", rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream("aac", rate=48000) if audio else None
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            samples = 48000 * len(frames) // fps
            t = np.arange(samples) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))


def luma_frames(path: Path) -> list[np.ndarray]:
    """Every frame's luma (Y) plane as decoded, which is what the redactor's detector looks at."""
    with av.open(str(path)) as container:
        return [frame.reformat(format="yuv420p").to_ndarray()[: frame.height] for frame in container.decode(video=0)]


def bgr_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def core(head: Box) -> Box:
    """The middle of a pasted head or face picture: eyes, nose and mouth, without hair or backdrop."""
    return Box(head.x + head.w // 5, head.y + head.h // 4, head.w * 3 // 5, head.h // 2)


def region(image: np.ndarray, box: Box) -> np.ndarray:
    return image[box.y : box.bottom, box.x : box.right]


def detail(image: np.ndarray) -> float:
    """Fine detail left in an image: the variance of its Laplacian (edges, print, eyes)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())
