"""H.264 encoding through PyAV (FFmpeg): libx264 in software, h264_v4l2m2m on a Pi 4.

The encoder runs all the time the camera is on, recording or not, because the
pre-event buffer holds *encoded* packets (about 1 MB a second at 8 Mbit/s)
rather than raw frames (6 MB per 1080p frame).  Each output packet carries the
monotonic and UTC capture times of its frame, looked up by pts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from .packets import EncodedPacket

HARDWARE_CODECS = {"h264_v4l2m2m"}


class EncoderError(Exception):
    """The encoder cannot be opened with these settings or failed while running."""


@dataclass(frozen=True)
class EncoderSettings:
    width: int = 1920
    height: int = 1080
    fps: int = 30
    bitrate: int = 8_000_000
    codec: str = "libx264"
    preset: str = "veryfast"
    # zerolatency: no lookahead or frame threads, so a packet leaves the encoder with
    # its frame; otherwise a crash or a stop would lose the ~1 s still inside x264.
    tune: str = "zerolatency"
    keyframe_seconds: float = 1.0
    input_format: str = "bgr24"  # layout of the numpy frames the source gives
    extra_options: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not (16 <= self.width <= 7680 and 16 <= self.height <= 4320) or self.width % 2 or self.height % 2:
            raise EncoderError(f"resolution {self.width}x{self.height}: need even sizes from 16x16 to 7680x4320")
        if not 1 <= self.fps <= 120:
            raise EncoderError(f"frame rate {self.fps}: need 1-120")
        if not 100_000 <= self.bitrate <= 100_000_000:
            raise EncoderError(f"bitrate {self.bitrate}: need 100 kbit/s to 100 Mbit/s")
        if not 0.1 <= self.keyframe_seconds <= 10:
            raise EncoderError(f"keyframe interval {self.keyframe_seconds} s: need 0.1-10 s")
        if self.codec not in av.codecs_available:
            raise EncoderError(f"encoder {self.codec!r} is not in this FFmpeg build")

    @property
    def gop(self) -> int:
        return max(1, round(self.fps * self.keyframe_seconds))


class H264Encoder:
    """Frames in, EncodedPacket out; keyframes at a fixed interval so segments and the pre-buffer can cut there."""

    def __init__(self, settings: EncoderSettings):
        settings.validate()
        self.settings = settings
        self.time_base = Fraction(1, settings.fps)
        ctx = av.CodecContext.create(settings.codec, "w")
        ctx.width, ctx.height = settings.width, settings.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = self.time_base
        ctx.framerate = Fraction(settings.fps)
        ctx.bit_rate = settings.bitrate
        ctx.gop_size = settings.gop
        opts = {"bf": "0"}
        if settings.codec == "libx264":
            # No B-frames and no scene-cut keyframes: output order = capture order, and
            # keyframes exactly every GOP, so cuts land where the pre-buffer expects them.
            opts |= {
                "preset": settings.preset,
                **({"tune": settings.tune} if settings.tune else {}),
                "g": str(settings.gop),
                "keyint_min": str(settings.gop),
                "sc_threshold": "0",
                "x264-params": f"nal-hrd=none:vbv-maxrate={settings.bitrate // 1000}:vbv-bufsize={settings.bitrate // 1000}",
            }
        opts |= settings.extra_options
        ctx.options = opts
        try:
            ctx.open()
        except av.FFmpegError as e:
            raise EncoderError(f"cannot open encoder {settings.codec}: {e}") from None
        self._ctx = ctx
        self._next_pts = 0
        self._times: dict[int, tuple[float, int]] = {}
        self.frames_in = 0
        self.bytes_out = 0

    def _convert(self, frame: np.ndarray) -> av.VideoFrame:
        s = self.settings
        rows = s.height * 3 // 2 if s.input_format == "yuv420p" else s.height
        if frame.shape[:2] != (rows, s.width):
            raise EncoderError(
                f"{s.input_format} frame has shape {frame.shape}, encoder expects {s.width}x{s.height}"
            )
        # PyAV converts to the encoder's yuv420p itself when the source gives RGB/BGR.
        return av.VideoFrame.from_ndarray(frame, format=s.input_format)

    def encode(self, frame: np.ndarray, t_mono: float, utc_us: int) -> list[EncodedPacket]:
        vf = self._convert(frame)
        vf.pts = self._next_pts
        vf.time_base = self.time_base
        self._times[self._next_pts] = (t_mono, utc_us)
        self._next_pts += 1
        self.frames_in += 1
        return self._collect(self._ctx.encode(vf))

    def flush(self) -> list[EncodedPacket]:
        """Drain the encoder (at shutdown); it cannot be used afterwards."""
        return self._collect(self._ctx.encode(None))

    def _collect(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        for p in packets:
            pts = p.pts if p.pts is not None else 0
            t_mono, utc_us = self._times.pop(pts, (0.0, 0))
            data = bytes(p)
            self.bytes_out += len(data)
            out.append(EncodedPacket(data, pts, self.time_base, bool(p.is_keyframe), t_mono, utc_us))
        return out
