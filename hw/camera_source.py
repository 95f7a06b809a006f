"""Camera sources: where frames come from, behind one interface.

Every source yields :class:`Frame` objects whose pixels are a numpy array of
shape ``(height, width, 3)``, dtype ``uint8``, in **BGR** order (OpenCV's
order, PyAV's ``bgr24``, and what Picamera2 calls ``"RGB888"``), each frame
its own array that the source never writes to again, so a pre-event buffer
may hold on to it.  Each carries its capture time twice: ``monotonic``
(``time.monotonic()``, for ordering and audio/video sync within a run) and
``utc_ns`` (wall clock, nanoseconds since the epoch, for the timestamp the
guidance asks to be on all footage).

Sources:

* :class:`SyntheticSource`: a moving test pattern with a burnt-in UTC clock
  and frame counter, for laptops, CI and tests.  Frame ``i`` depends only on
  the start time, ``i`` and the size, so two runs can be compared pixel for
  pixel.
* :class:`OpenCvSource`: a V4L2 device or a video file via ``cv2.VideoCapture``.
* :class:`Picamera2Source`: the Pi camera; Picamera2 is imported only when
  this source is constructed, so nothing else needs it installed.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from .errors import BackendUnavailable, CameraError, CameraOpenFailed, EndOfStream

PIXEL_FORMAT = "BGR"


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured picture and when it was captured."""

    pixels: np.ndarray
    index: int
    monotonic: float
    utc_ns: int

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def utc(self) -> datetime:
        """The capture time as a datetime (microsecond resolution)."""
        seconds, ns = divmod(self.utc_ns, 1_000_000_000)
        return datetime.fromtimestamp(seconds, tz=timezone.utc) + timedelta(microseconds=ns // 1000)


def format_utc_ms(utc_ns: int) -> str:
    """``2026-11-25 16:12:03.033 UTC``: the burnt-in clock's text (truncated, never rounded, to the ms)."""
    seconds, ns = divmod(utc_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.") + f"{ns // 1_000_000:03d} UTC"


class FrameSource(ABC):
    """A camera: :meth:`read` blocks until the next frame; iterate for all of them.

    ``width``, ``height`` and ``fps`` are what the source delivers (a device
    may not honour what was asked; it is then what it actually gives).
    """

    width: int
    height: int
    fps: float
    pixel_format: str = PIXEL_FORMAT

    @abstractmethod
    def read(self) -> Frame:
        """The next frame; raises :class:`EndOfStream` when a finite source is done or closed."""

    def close(self) -> None:
        """Release the device.  Idempotent."""

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:
                yield self.read()
            except EndOfStream:
                return

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pacer:
    """Releases frame ``i`` no earlier than ``start + i / fps`` (real time), never sleeping to catch up twice.

    A consumer that falls behind gets the next frames at once, as many as it
    asks for: frames are not dropped, because a synthetic or file source
    is used to test the consumer, and a dropped frame would hide its lag.
    """

    def __init__(self, fps: float):
        self._interval = 1.0 / fps
        self._start: float | None = None

    def wait(self, index: int) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start = now - index * self._interval
        due = self._start + index * self._interval
        if due > now:
            time.sleep(due - now)


class SyntheticSource(FrameSource):
    """A moving test pattern with the capture time and frame number burnt in.

    What moves: colour bars and a grey ramp scroll left, a square bounces,
    and the clock ticks, so that an encoder has motion to encode and a
    viewer can see at a glance that frames are neither frozen nor reordered.
    The clock (top left, white on black) reads the frame's ``utc_ns`` to the
    millisecond and its index; :attr:`clock_region` says where it is.

    ``start_utc_ns`` is frame 0's time; frame ``i`` is stamped
    ``start_utc_ns + i / fps``, so a paced source's clock runs with real
    time and an unpaced one (``paced=False``, as fast as possible, for tests
    and benchmarks) still stamps each frame where it would have been.

    Speed: the scrolling background is drawn once, twice as wide as the
    frame, and each frame is one slice copy of it plus two small fills and
    two ``cv2.putText`` calls (well over 30 fps at 1920x1080 on one core).
    With ``render_ahead`` (the default) a background thread renders the
    next frame while the caller works on this one, as a real camera's
    sensor exposes the next frame while the encoder works: numpy's copy and
    OpenCV's drawing release the GIL, so the 1-3 ms a 1080p frame costs
    leave the capture loop's thread.  The thread starts at the first
    :meth:`read` and ends with :meth:`close` (or when the source is
    dropped); it holds at most two frames the caller has not read yet.

    ``flash_period_s`` (A/V sync tests): the frames captured from half a
    frame before a multiple of the period on the monotonic clock until
    ``flash_s`` after it are all white instead, so the first white frame is
    the one captured nearest the instant a
    :class:`~openbwv.hw.audio_source.SyntheticAudioSource` with that period
    clicks (as a sensor whose exposure is centred on its timestamp would
    see a flash): a correct pipeline plays the two within half a frame.
    """

    SCROLL_PIXELS_PER_FRAME = 8

    def __init__(self, width: int = 1920, height: int = 1080, fps: float = 30.0, *,
                 start_utc_ns: int | None = None, paced: bool = True, frame_limit: int | None = None,
                 render_ahead: bool = True, flash_period_s: float | None = None, flash_s: float = 0.1):
        if flash_period_s is not None and not (0.05 <= flash_period_s <= 3600 and 0 < flash_s < flash_period_s):
            raise CameraError(f"flash period {flash_period_s!r} s / flash {flash_s!r} s are not usable; expected a "
                              "period of 0.05 to 3600 s and a flash shorter than it")
        self.flash_period_s = flash_period_s
        self.flash_s = flash_s
        if width < 320 or height < 240 or width % 2 or height % 2:
            raise CameraError(f"synthetic source size {width}x{height} is not usable; expected even sizes of at least 320x240")
        if not 0 < fps <= 240:
            raise CameraError(f"synthetic source fps {fps!r} is out of range; expected more than 0 and at most 240")
        self.width, self.height, self.fps = width, height, float(fps)
        self.start_utc_ns = time.time_ns() if start_utc_ns is None else int(start_utc_ns)
        self.frame_limit = frame_limit
        self._pacer = _Pacer(self.fps) if paced else None
        self._next = 0
        self._closed = False
        self._render_ahead = render_ahead
        self._renderer: _RenderAhead | None = None  # started by the first read()
        self._background = _scrolling_background(width, height)
        scale = height / 1080
        self._font_scale = 1.5 * scale
        self._thickness = max(1, int(round(3 * scale)))
        self._margin = int(24 * scale)
        # Hershey digits differ in width: size the black box for the widest of each.
        sizes = [cv2.getTextSize(f"{d}{d}{d}{d}-{d}{d}-{d}{d} {d}{d}:{d}{d}:{d}{d}.{d}{d}{d} UTC",
                                 cv2.FONT_HERSHEY_SIMPLEX, self._font_scale, self._thickness) for d in "0123456789"]
        text_w = max(w for (w, _h), _b in sizes)
        text_h = max(h for (_w, h), _b in sizes)
        baseline = max(b for _s, b in sizes)
        self._line_h = text_h + baseline + int(16 * scale)
        self._text_h = text_h
        #: (x, y, width, height) of the black box holding the clock and the frame number.
        self.clock_region = (0, 0, min(width, text_w + 2 * self._margin), min(height, 2 * self._line_h + self._margin))
        self._square = max(16, height // 8)

    def frame_time_ns(self, index: int) -> int:
        """The UTC time stamped on frame ``index``."""
        return self.start_utc_ns + int(round(index * 1e9 / self.fps))

    def render(self, index: int) -> np.ndarray:
        """The pixels of frame ``index`` (pure: same arguments, same pixels)."""
        h, w = self.height, self.width
        offset = (index * self.SCROLL_PIXELS_PER_FRAME) % w
        out = np.empty((h, w, 3), dtype=np.uint8)
        np.copyto(out, self._background[:, offset:offset + w])

        s = self._square
        y = _bounce(index * 7, h - s)
        x = _bounce(index * 11, w - s)
        out[y:y + s, x:x + s] = (32, 160, 255)
        out[y + s // 4:y + 3 * s // 4, x + s // 4:x + 3 * s // 4] = (0, 0, 0)

        cx, cy, cw, ch = self.clock_region
        out[cy:cy + ch, cx:cx + cw] = 0
        text = format_utc_ms(self.frame_time_ns(index))
        font, white = cv2.FONT_HERSHEY_SIMPLEX, (255, 255, 255)
        base = self._margin + self._text_h
        cv2.putText(out, text, (self._margin, base), font, self._font_scale, white, self._thickness, cv2.LINE_AA)
        cv2.putText(out, f"frame {index:08d}", (self._margin, base + self._line_h), font, self._font_scale,
                    white, self._thickness, cv2.LINE_AA)
        return out

    def read(self) -> Frame:
        if self._closed:
            raise EndOfStream("synthetic source is closed")
        index = self._next
        if self.frame_limit is not None and index >= self.frame_limit:
            raise EndOfStream(f"synthetic source reached its frame limit of {self.frame_limit}")
        if self._pacer is not None:
            self._pacer.wait(index)
        if self._render_ahead:
            if self._renderer is None:
                self._renderer = _RenderAhead(self, index)
            pixels = self._renderer.take(index)
        else:
            pixels = self.render(index)
        self._next = index + 1
        mono = time.monotonic()
        if self.flash_period_s is not None and (mono + 0.5 / self.fps) % self.flash_period_s < self.flash_s:
            pixels = np.full_like(pixels, 255)
        return Frame(pixels, index, mono, self.frame_time_ns(index))

    def close(self) -> None:
        self._closed = True
        if self._renderer is not None:
            self._renderer.close()


class _RenderAhead:
    """Renders a synthetic source's frames ``first``, ``first + 1``, ... in a daemon thread.

    The queue holds one finished frame and the thread may hold the next, so
    the source never runs more than two frames ahead of its reader.  The
    thread keeps only a weak reference to the source, so a source dropped
    without :meth:`SyntheticSource.close` does not keep it (or its frames)
    alive.  A rendering error reaches the reader, raised from :meth:`take`.
    """

    _POLL_S = 0.1  # how soon the thread notices a close() or a dropped source

    def __init__(self, source: SyntheticSource, first: int):
        self._queue: queue.Queue[tuple[int, np.ndarray | BaseException]] = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(weakref.ref(source), first, source.frame_limit),
                                        name="synthetic-render", daemon=True)
        self._thread.start()

    def _run(self, source_ref: Callable[[], SyntheticSource | None], index: int, limit: int | None) -> None:
        while limit is None or index < limit:
            source = source_ref()
            if source is None:
                return
            try:
                item: tuple[int, np.ndarray | BaseException] = (index, source.render(index))
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, who raises it
                item = (index, exc)
            del source
            while True:
                if self._closed.is_set() or source_ref() is None:
                    return
                try:
                    self._queue.put(item, timeout=self._POLL_S)
                    break
                except queue.Full:
                    continue
            if isinstance(item[1], BaseException):
                return
            index += 1

    def take(self, index: int) -> np.ndarray:
        """Frame ``index``'s pixels, waiting for them if the thread has not finished them yet."""
        while True:
            try:
                got, pixels = self._queue.get(timeout=self._POLL_S)
                break
            except queue.Empty:
                if self._closed.is_set():
                    raise EndOfStream("synthetic source is closed") from None
                if not self._thread.is_alive() and self._queue.empty():
                    raise CameraError(f"synthetic source's render thread ended before frame {index}")
        if isinstance(pixels, BaseException):
            raise CameraError(f"synthetic source could not render frame {got}: {pixels!r}") from pixels
        if got != index:
            raise CameraError(f"synthetic source rendered frame {got} where frame {index} was due")
        return pixels

    def close(self) -> None:
        self._closed.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def _bounce(position: int, span: int) -> int:
    """A triangle wave: ``position`` folded back and forth over ``0..span``."""
    if span <= 0:
        return 0
    p = position % (2 * span)
    return p if p <= span else 2 * span - p


def _scrolling_background(width: int, height: int) -> np.ndarray:
    """Colour bars over a grey ramp with a fine checker, tiled twice across so any window is one slice."""
    bars_bgr = np.array([
        (235, 235, 235), (16, 235, 235), (235, 235, 16), (16, 235, 16),
        (235, 16, 235), (16, 16, 235), (235, 16, 16), (16, 16, 16),
    ], dtype=np.uint8)
    tile = np.empty((height, width, 3), dtype=np.uint8)
    top = height * 2 // 3
    tile[:top] = bars_bgr[(np.arange(width) * len(bars_bgr)) // width][None, :, :]
    ramp = (16 + (np.arange(width) * 219) // max(1, width - 1)).astype(np.uint8)
    tile[top:] = ramp[None, :, None]
    # A fine checker in the ramp gives the encoder high-frequency detail to keep.
    checker = ((np.arange(height - top)[:, None] // 4 + np.arange(width)[None, :] // 4) % 2).astype(bool)
    band = tile[top:]
    band[checker] = band[checker] // 2 + 8
    return np.concatenate([tile, tile], axis=1)


class OpenCvSource(FrameSource):
    """A V4L2 camera (``device=0`` or ``"/dev/video0"``) or a video file through ``cv2.VideoCapture``.

    A file plays as fast as it is read unless ``paced`` (then at its own
    frame rate), and ends with :class:`EndOfStream` unless ``loop``.  The
    capture time is when OpenCV handed the frame over: files have no
    capture time of their own worth trusting.
    """

    def __init__(self, device: int | str = 0, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, paced: bool = False, loop: bool = False):
        self.device = device
        self._is_file = isinstance(device, str) and not device.startswith("/dev/")
        cap = cv2.VideoCapture(device)
        if not cap.isOpened():
            what = "video file" if self._is_file else "video device"
            raise CameraOpenFailed(
                f"could not open {what} {device!r} with OpenCV (VideoCapture.isOpened() is False); "
                "expected a readable video file or a V4L2 device the user may open (group 'video')"
            )
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        self._cap: Any = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or fps or 30.0)
        self._loop = loop
        self._pacer = _Pacer(self.fps) if paced else None
        self._next = 0

    def read(self) -> Frame:
        if self._cap is None:
            raise EndOfStream(f"OpenCV source {self.device!r} is closed")
        if self._pacer is not None:
            self._pacer.wait(self._next)
        ok, pixels = self._cap.read()
        if not ok and self._loop and self._is_file and self._next > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, pixels = self._cap.read()
        if not ok:
            if self._is_file:
                raise EndOfStream(f"video file {self.device!r} ended after {self._next} frame(s)")
            raise CameraError(f"video device {self.device!r} stopped delivering frames after {self._next} frame(s)")
        frame = Frame(np.ascontiguousarray(pixels), self._next, time.monotonic(), time.time_ns())
        self._next += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class Picamera2Source(FrameSource):
    """The Raspberry Pi camera through Picamera2, delivering BGR frames from the main stream.

    Picamera2's ``"RGB888"`` format is BGR in memory (its naming follows
    DRM's), which is the order every source here promises.
    """

    def __init__(self, width: int = 1920, height: int = 1080, fps: float = 30.0, *, camera_num: int = 0):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise BackendUnavailable(
                f"camera source 'picamera2' needs the picamera2 library ({exc}); on Raspberry Pi OS install "
                "python3-picamera2 and create the virtualenv with --system-site-packages"
            ) from None
        try:
            cam = Picamera2(camera_num)
            config = cam.create_video_configuration(main={"size": (width, height), "format": "RGB888"},
                                                    controls={"FrameRate": float(fps)})
            cam.configure(config)
            cam.start()
        except Exception as exc:
            raise CameraOpenFailed(
                f"Picamera2 could not start camera {camera_num} at {width}x{height} {fps} fps "
                f"({type(exc).__name__}: {exc}); expected a connected, enabled camera module"
            ) from None
        self._cam: Any = cam
        self.width, self.height, self.fps = width, height, float(fps)
        self._next = 0

    def read(self) -> Frame:
        if self._cam is None:
            raise EndOfStream("Picamera2 source is closed")
        request = self._cam.capture_request()
        try:
            pixels = request.make_array("main")
        finally:
            request.release()
        frame = Frame(pixels, self._next, time.monotonic(), time.time_ns())
        self._next += 1
        return frame

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
            finally:
                self._cam.close()
                self._cam = None


def measure_fps(source: FrameSource, frames: int = 60) -> float:
    """Frames per second ``source`` delivers when read back to back (unpaced sources: its raw speed)."""
    start = time.perf_counter()
    for _ in range(frames):
        source.read()
    return frames / (time.perf_counter() - start)
