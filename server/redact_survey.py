"""A survey of a clip's faces: the tracks the export will find, shown to staff before they export.

A disclosure officer picks the requester's face as a *track* (one person followed through the
clip), not as a box on one frame.  To do that they need the tracks the export will use: how long
each face is on screen, whether the track they mean is one person, which other faces exist.  So
the survey runs the export's own first pass (redact.py: `FaceDetector` on the luma plane of the
frames `redact_video` examines, every `every`-th frame, at full size every `between`-th look,
detections linked by `FaceTracker`) over the same clip, and keeps the tracks it makes:

* `survey_frames` is that pass as a pure function: (time, luma) frames in, a `Survey` out, with the
  detector given (no file, no clock).  `redact.examine_schedule` is the frame schedule, the one
  `redact_video`'s pass 1 uses (tests/redact/test_survey.py also holds the two passes' tracks equal,
  track for track, on the same clip, so a change to one loop that is not made to the other fails
  there);
* `survey_video` is the thin I/O around it: decode a file with PyAV, as `redact_video` does (the
  first video stream as yuv420p, times from the first frame, a frame that does not advance put a
  frame period after the last);
* `keep_box_for` turns a track into the export's keep choice: a box at one of the track's own
  detections, over less than a frame of time, that `pick_tracks` maps back to that very track (it
  is checked, not assumed), so the export keeps the whole track clear;
* `SurveyStore` keeps finished surveys.

**Where surveys are kept, and why.**  A survey costs as much as the export's first pass (minutes
for a long clip), and the officer comes back to the list after each choice, so it is kept, as JSON,
under ``BWV_HOME/server/surveys/<clip_id>/<key>.json``, beside the decrypted views (media.py).
``key`` is a SHA-256 of the clip's sealed segment hashes (what the clip *is*, known without
decrypting it), the detector's settings and this module's `SURVEY_VERSION`: the same footage
surveyed with the same detector gives the same tracks, so a survey is shared by every request that
holds the clip, and a change of detector or model is a new key, never a stale answer.  A survey
holds only numbers (frame times, boxes, confidences), never a picture: the thumbnails are cut
afresh from the officer's own audited view (ui_pages_faces.py), so no decrypted image outlives the
view.  It never leaks between requests because it is only ever read after the same checks as the
preview (request.export, and the clip held for *that* request); the choices made from it travel in
the page's address, as the preview's do, so any node of a fleet serves the export.  The file is
node-local: a node that has none offers to survey again (the result is the same).  The retention
sweep removes a clip's surveys with the clip (`drop_clip_surveys`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..sealed.durable import atomic_write
from .redact import (Box, FaceDetector, FaceTracker, Observation, RedactionError, TimedBox, Track, UnreadableVideo,
                     examine_schedule, pick_tracks)

SURVEY_VERSION = 1  # bump when what a survey holds, or how it is made, changes: old files are then not read
SURVEYS_DIR = "surveys"
KEEP_WINDOW_FRAMES = 0.45  # a keep box made from a track spans this many frame periods either side of its detection
_CLIP_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_KEY_RE = re.compile(r"^[0-9a-f]{64}\Z")
_EPS = 1e-6


class SurveyError(RedactionError):
    """A survey could not be made or read."""


class NoSuchFace(SurveyError, LookupError):
    """A face (track) number the survey does not have."""


# -- the pure pass ----------------------------------------------------------------


@dataclass
class Survey:
    """Every face track of one clip, as the export's first pass makes them, and what the pass was."""

    width: int
    height: int
    fps: float
    frames: int  # frames decoded
    duration_s: float  # the last frame's time plus one frame period
    every: int
    between: int
    detector: dict[str, Any]  # FaceDetector.settings()
    tracks: list[Track] = field(default_factory=list)

    def track(self, number: int) -> Track:
        """Face `number` as the pages count them (1, 2, ...: the track with id number - 1)."""
        if not 1 <= number <= len(self.tracks):
            raise NoSuchFace(f"this clip has no face {number}: the survey found "
                             + (f"faces 1 to {len(self.tracks)}" if self.tracks else "no face"))
        return self.tracks[number - 1]

    def report_tracks(self) -> list[dict[str, Any]]:
        """The tracks as the export's report lists them (without its "kept"): for comparing the two."""
        return [t.to_dict() for t in self.tracks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SURVEY_VERSION, "width": self.width, "height": self.height, "fps": self.fps,
            "frames": self.frames, "duration_s": self.duration_s, "every": self.every, "between": self.between,
            "detector": self.detector,
            "tracks": [[[o.index, o.time_s, o.box.x, o.box.y, o.box.w, o.box.h, o.score] for o in t.observations]
                       for t in self.tracks],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Survey":
        if doc.get("version") != SURVEY_VERSION:
            raise SurveyError(f"survey version {doc.get('version')!r}, expected {SURVEY_VERSION}")
        try:
            tracks = [Track(i, [Observation(int(o[0]), float(o[1]), Box(*map(int, o[2:6])), float(o[6])) for o in obs])
                      for i, obs in enumerate(doc["tracks"])]
            return cls(int(doc["width"]), int(doc["height"]), float(doc["fps"]), int(doc["frames"]),
                       float(doc["duration_s"]), int(doc["every"]), int(doc["between"]), dict(doc["detector"]), tracks)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise SurveyError(f"the survey file is not a survey: {e}") from None


def survey_frames(frames: Iterable[tuple[float, np.ndarray]], *, width: int, height: int, fps: float,
                  detector: FaceDetector, progress: Callable[[int], None] | None = None) -> Survey:
    """The export's first pass over `frames` ((seconds from the first frame, luma plane) in order): the
    examined frames searched for faces, the faces linked into tracks.  `progress(frames done)` after each."""
    every, between = examine_schedule(detector, fps, width)
    tracker = FaceTracker()
    looks = 0
    count = 0
    last_s = 0.0
    for index, (time_s, luma) in enumerate(frames):
        if index % every == 0:
            found = detector.detections(luma, full=looks % between == 0)
            looks += 1
            tracker.add(index, time_s, found)
        count, last_s = index + 1, time_s
        if progress is not None:
            progress(count)
    if count == 0:
        raise UnreadableVideo("the video holds no frame that decodes")
    return Survey(width, height, fps, count, last_s + 1 / fps, every, between, detector.settings(), tracker.tracks)


# -- the I/O around it ---------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    expected_frames: int  # what the container promises (for progress only), 0 if it does not say


def decoded_luma(path: Path) -> tuple[VideoInfo, Iterator[tuple[float, np.ndarray]]]:
    """The first video stream of `path`: its size and rate, and (seconds from the first frame, luma) for
    every frame, timed as `redact_video` times them.  The file is closed when the frames run out."""
    import av

    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError) as e:
        raise UnreadableVideo(f"{path}: not a video file PyAV can read ({e})") from None
    if not container.streams.video:
        container.close()
        raise UnreadableVideo(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    width, height = stream.codec_context.width, stream.codec_context.height
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if width <= 0 or height <= 0 or width % 2 or height % 2 or not rate or rate <= 0:
        container.close()
        raise UnreadableVideo(f"{path}: frame size {width}x{height} at rate {rate}: not a clip the export can redact")
    fps = float(Fraction(rate).limit_denominator(1_001_000))
    expected = int(stream.frames) if stream.frames else (
        round(container.duration / 1_000_000 * fps) if container.duration else 0)

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        first: float | None = None
        last = -math.inf
        count = 0
        try:
            for frame in container.decode(stream):
                if (frame.width, frame.height) != (width, height):
                    raise UnreadableVideo(f"{path}: frame {count} is {frame.width}x{frame.height}, "
                                          f"the stream began at {width}x{height}")
                t = float(frame.time) if frame.time is not None else count / fps
                if first is None:
                    first = t
                t -= first
                if t <= last:
                    t = last + 1 / fps
                last = t
                if frame.format.name != "yuv420p":
                    frame = frame.reformat(format="yuv420p")
                yield t, frame.to_ndarray().reshape(-1)[: width * height].reshape(height, width)
                count += 1
        except av.FFmpegError as e:
            raise UnreadableVideo(f"{path}: decoding failed after {count} frame(s): {e}") from None
        finally:
            container.close()
    return VideoInfo(width, height, fps, expected), frames()


def survey_video(path: Path, *, detector: FaceDetector | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Survey:
    """`survey_frames` over a video file; `progress(frames done, frames expected)`."""
    info, frames = decoded_luma(Path(path))
    detector = FaceDetector() if detector is None else detector

    def step(done: int) -> None:
        if progress is not None:
            progress(done, max(done, info.expected_frames))
    try:
        return survey_frames(frames, width=info.width, height=info.height, fps=info.fps, detector=detector,
                             progress=step)
    finally:
        frames.close()  # type: ignore[attr-defined]


# -- from a track to the export's keep choice ----------------------------------------------


def best_observation(track: Track) -> Observation:
    """The track's most confident detection (the earliest of equals): its thumbnail and its keep box."""
    return max(track.observations, key=lambda o: (o.score, -o.index))


def keep_box_for(survey: Survey, track_id: int) -> TimedBox:
    """A keep box that `pick_tracks` maps to track `track_id` and no other: one of the track's detections
    (the most confident that works), over `KEEP_WINDOW_FRAMES` frame periods either side of it, so small
    differences of timing between the survey's copy of the clip and the export's do not lose it, while no
    other examined frame falls inside."""
    track = next((t for t in survey.tracks if t.id == track_id), None)
    if track is None:
        raise NoSuchFace(f"the survey has no track {track_id}")
    half = KEEP_WINDOW_FRAMES / survey.fps
    for o in sorted(track.observations, key=lambda o: (-o.score, o.index)):
        t = round(o.time_s, 6)
        keep = TimedBox(max(0.0, round(t - half, 6)), round(t + half, 6), o.box)
        if pick_tracks([keep], survey.tracks) == [track_id]:
            return keep
    raise SurveyError(f"no box at a detection of track {track_id} picks it alone: another face shares its every "
                      "position; draw the keep box on the preview instead")


def kept_tracks(survey: Survey, keep: Sequence[TimedBox]) -> list[int | None]:
    """For each keep box, the track the export will keep clear for it (None: none), as `pick_tracks` says."""
    return pick_tracks(list(keep), survey.tracks)


# -- where finished surveys are kept --------------------------------------------------------


def survey_key(segment_hashes: Sequence[str], detector_settings: dict[str, Any]) -> str:
    """What a survey is of and how it was made: the clip's sealed segments, the detector, this module."""
    if not segment_hashes:
        raise SurveyError("the clip has no segments to survey")
    doc = {"version": SURVEY_VERSION, "segments": list(segment_hashes), "detector": detector_settings}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def surveys_root(local_dir: Path) -> Path:
    """Where the surveys of the node whose local files are in `local_dir` (BWV_HOME/server) are kept."""
    return Path(local_dir) / SURVEYS_DIR


class SurveyStore:
    """Finished surveys on this node: one JSON file per clip and key, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, clip_id: str, key: str) -> Path:
        if not _CLIP_ID_RE.match(clip_id) or not _KEY_RE.match(key):
            raise SurveyError(f"clip {clip_id[:40]!r} / key {key[:70]!r}: not a clip id and a SHA-256")
        return self.root / clip_id / f"{key}.json"

    def load(self, clip_id: str, key: str) -> Survey | None:
        """The survey, or None if there is none (or it is from another version: it is made again)."""
        try:
            doc = json.loads(self.path(clip_id, key).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        try:
            return Survey.from_dict(doc)
        except SurveyError:
            return None

    def save(self, clip_id: str, key: str, survey: Survey) -> Path:
        path = self.path(clip_id, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(survey.to_dict(), separators=(",", ":")) + "\n").encode(), mode=0o600)
        return path

    def drop_clip(self, clip_id: str) -> int:
        """Remove every survey of a clip; returns how many there were."""
        directory = self.root / clip_id
        if not _CLIP_ID_RE.match(clip_id) or not directory.is_dir():
            return 0
        count = sum(1 for p in directory.iterdir() if p.suffix == ".json")
        shutil.rmtree(directory, ignore_errors=True)
        return count


def drop_clip_surveys(local_dir: Path, clip_id: str) -> int:
    """For the retention sweep: a deleted clip's surveys go with it."""
    return SurveyStore(surveys_root(local_dir)).drop_clip(clip_id)


# -- what the pages show ------------------------------------------------------------------


def mm_ss(seconds: float) -> str:
    """A time into the clip as a player shows it: 00:04, 12:30, 1:02:03."""
    whole = max(0, int(seconds + _EPS))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def frames_on_screen(track: Track) -> int:
    """Frames from the track's first detection to its last, both counted: how long the face is followed."""
    return track.last.index - track.first.index + 1


def face_crop(image: np.ndarray, box: Box, *, size: int = 128) -> np.ndarray:
    """A square crop around `box` (the face and half its size again around it), scaled to `size` pixels."""
    import cv2

    height, width = image.shape[:2]
    side = max(box.w, box.h) * 2
    cx, cy = box.centre
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    crop = image[y0:y1, x0:x1]
    if crop.size == 0:
        raise SurveyError(f"{box} lies outside the {width}x{height} frame")
    scale = size / max(crop.shape[:2])
    return cv2.resize(np.ascontiguousarray(crop), (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


__all__ = ["KEEP_WINDOW_FRAMES", "NoSuchFace", "SURVEY_VERSION", "Survey", "SurveyError", "SurveyStore", "VideoInfo",
           "best_observation", "decoded_luma", "drop_clip_surveys", "examine_schedule", "face_crop", "frames_on_screen",
           "keep_box_for", "kept_tracks", "mm_ss", "survey_key", "survey_frames", "survey_video", "surveys_root"]
