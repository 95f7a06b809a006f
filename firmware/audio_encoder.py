"""AAC-LC encoding through PyAV (FFmpeg's native ``aac`` encoder): microphone chunks in, packets out.

AAC-LC because MPEG-TS carries it (as ADTS), MP4 carries it, every browser
and player decodes it, and FFmpeg's own encoder is in every PyAV wheel (no
libfdk).  48 kHz mono at 64 kbit/s is what speech evidence needs: about
29 MB over a 12-hour shift, next to 1.4-5 GB of video.

The encoder works in frames of exactly 1024 samples, so the chunks a
microphone delivers (a period of any length) are re-framed here.  Each
output packet carries the monotonic capture time of its first sample,
worked out from the chunk stamps (`AudioChunk.monotonic`), which the
segmenter turns into the presentation time, on the same clock as the
video's.  FFmpeg's encoder delays its output by one frame (the priming
frame, pts -1024); that packet is stamped 1024 samples before the first.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from ..hw.audio_source import SAMPLE_RATE, AudioChunk
from .packets import EncodedPacket

AAC_FRAME = 1024


class AudioEncoderError(Exception):
    """The audio encoder cannot be opened with these settings or was fed something it cannot encode."""


class AacEncoder:
    """48 kHz mono AAC-LC; `encode` takes `AudioChunk` s and returns the packets they completed."""

    def __init__(self, *, bitrate: int = 64_000, sample_rate: int = SAMPLE_RATE):
        if not 16_000 <= bitrate <= 320_000:
            raise AudioEncoderError(f"AAC bitrate {bitrate}: need 16000 to 320000 bit/s")
        if "aac" not in av.codecs_available:
            raise AudioEncoderError("FFmpeg's 'aac' encoder is not in this PyAV build")
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = sample_rate
        ctx.layout = "mono"
        ctx.format = "fltp"
        ctx.bit_rate = bitrate
        ctx.time_base = Fraction(1, sample_rate)
        try:
            ctx.open()
        except av.FFmpegError as e:
            raise AudioEncoderError(f"cannot open the AAC encoder: {e}") from None
        self._ctx = ctx
        self.bitrate = bitrate
        self.sample_rate = sample_rate
        self.time_base = Fraction(1, sample_rate)
        self.extradata = bytes(ctx.extradata or b"")  # AudioSpecificConfig: the muxers need it
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_mono = 0.0  # capture time of _pending[0]
        self._pending_utc_us = 0
        self._next_pts = 0
        self._times: dict[int, tuple[float, int]] = {}
        self.samples_in = 0
        self.bytes_out = 0

    def encode(self, chunk: AudioChunk) -> list[EncodedPacket]:
        if chunk.sample_rate != self.sample_rate:
            raise AudioEncoderError(f"chunk at {chunk.sample_rate} Hz; this encoder takes {self.sample_rate} Hz")
        samples = np.asarray(chunk.samples)
        if samples.ndim != 1:
            raise AudioEncoderError(f"chunk samples have shape {samples.shape}; expected mono, shape (n,)")
        if len(self._pending) == 0:
            self._pending_mono = chunk.monotonic
            self._pending_utc_us = chunk.utc_ns // 1000
        as_float = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float32)
        self._pending = np.concatenate([self._pending, as_float])
        self.samples_in += len(samples)
        out: list[EncodedPacket] = []
        while len(self._pending) >= AAC_FRAME:
            out += self._encode_frame(self._pending[:AAC_FRAME])
            self._pending = self._pending[AAC_FRAME:]
            self._pending_mono += AAC_FRAME / self.sample_rate
            self._pending_utc_us += AAC_FRAME * 1_000_000 // self.sample_rate
        return out

    def flush(self) -> list[EncodedPacket]:
        """Encode what is pending (padded with silence) and drain the encoder; it cannot be used afterwards."""
        out: list[EncodedPacket] = []
        if len(self._pending):
            out += self._encode_frame(np.pad(self._pending, (0, AAC_FRAME - len(self._pending))))
            self._pending = np.zeros(0, dtype=np.float32)
        return out + self._collect(self._ctx.encode(None))

    def _encode_frame(self, samples: np.ndarray) -> list[EncodedPacket]:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.reshape(1, -1)), format="fltp", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._next_pts
        frame.time_base = self.time_base
        self._times[self._next_pts] = (self._pending_mono, self._pending_utc_us)
        self._next_pts += AAC_FRAME
        return self._collect(self._ctx.encode(frame))

    def _collect(self, packets: list[av.Packet]) -> list[EncodedPacket]:
        out = []
        for p in packets:
            pts = p.pts if p.pts is not None else 0
            if pts in self._times:
                t_mono, utc_us = self._times.pop(pts)
            else:  # the priming frame, before the first sample: one frame earlier than the next known one
                later = min((k for k in self._times if k > pts), default=None)
                base_mono, base_utc = self._times[later] if later is not None else (self._pending_mono, self._pending_utc_us)
                gap = ((later if later is not None else self._next_pts) - pts) / self.sample_rate
                t_mono, utc_us = base_mono - gap, base_utc - int(gap * 1e6)
            data = bytes(p)
            self.bytes_out += len(data)
            out.append(EncodedPacket(data, pts, self.time_base, True, t_mono, utc_us, media="audio"))
        return out
