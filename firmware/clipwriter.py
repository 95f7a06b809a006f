"""From encoded packets to sealed segments: one clip, cut at keyframes, durable every second.

`ClipWriter` muxes H.264 packets, and AAC-LC packets when the clip has
sound, into MPEG-TS (streamable, no index that a power cut could lose) and
seals the bytes as MEDIA records of the open segment: audio and video in the
same chunks, under the same encryption, made durable by the same flushes.

Presentation times come from each packet's capture time on the monotonic
clock (``t_mono``), at 90 kHz, for both streams: one clock, so a clip plays
in sync whatever frames a camera dropped or however the sound card's crystal
drifted.  They count from ``pts_origin_mono`` (the camera passes its run's
start, so every clip and segment of a run shares one timeline and joined
segments play on without a jump).  Audio never opens or cuts a segment:
packets that arrive before the first video keyframe are dropped (counted),
and the few that arrive just after a cut go into the new segment, a little
before its keyframe, which any player handles.  At least every `flush_seconds` of capture time it writes what it has
as a chunk and fsyncs the file, so a crash or power cut loses at most that
much video; the open segment is sealed from what survived at the next start.
A new segment begins at the first keyframe after `segment_seconds`.

Location (GNSS fixes and fix events, `add_location`) travels as LOCATION
records inside the same encrypted chunks.  A segment sealed without a single
fix says so with a final `{"no_fix": true, "reason": ...}` line, so that
"no fix" and "no location recorded" can never be confused.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import av

from ..sealed.layout import RECORD_EVENTS, RECORD_INFO, RECORD_LOCATION, RECORD_MEDIA
from ..sealed.storage import DeviceStorage, StoredSegment
from ..sealed.writer import SealedInfo
from .packets import EncodedPacket

log = logging.getLogger("bwv.camera.clip")

# LOCATION payloads are padded to a multiple of this many bytes with a blank
# line: chunk lengths are clear, and the length of a line of digits must not
# hint at a place (a minus sign is a hemisphere).
LOCATION_PAD = 256

PTS_HZ = 90_000  # MPEG-TS's clock
PTS_TIME_BASE = Fraction(1, PTS_HZ)
# Packets earlier than the origin (the AAC priming frame) must not get negative times: the TS
# muxer would shift that one segment's timeline and joined segments would jump back.
PTS_LEAD_S = 1.0
# How long FFmpeg's muxer may hold a packet to interleave the streams; bounded so that a stalled
# microphone cannot keep video out of the flushes (the power-cut promise is <= 1 s lost).
MAX_INTERLEAVE_US = 200_000


def pad_location(payload: str) -> str:
    """JSON lines, then spaces and a newline up to a multiple of LOCATION_PAD (readers skip blank lines)."""
    short = -len(payload.encode()) % LOCATION_PAD
    return payload + (" " * (short - 1) + "\n" if short else "")


@dataclass(frozen=True)
class ClockState:
    """What the camera knows about its clock: when the dock last set it, and by how much."""

    sync_utc_us: int = 0  # 0: never synced since enrolment (the server flags such footage)
    offset_us: int = 0


@dataclass(frozen=True)
class AudioFormat:
    """The sound track of a clip; `extradata` is the encoder's AudioSpecificConfig (the muxer needs it)."""

    codec: str = "aac"
    sample_rate: int = 48_000
    channels: int = 1
    bitrate: int = 64_000
    extradata: bytes = b""

    def describe(self) -> dict[str, Any]:
        return {"codec": self.codec, "profile": "LC", "sample_rate": self.sample_rate, "channels": self.channels,
                "bitrate": self.bitrate}


@dataclass(frozen=True)
class VideoFormat:
    width: int
    height: int
    fps: int
    codec: str = "h264"
    bitrate: int = 0


class _TsSink:
    """File object for the TS muxer: collects bytes until the writer turns them into a chunk."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> int:
        self.buf += data
        self.total += len(data)
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data


@dataclass
class _OpenSegment:
    stored: StoredSegment
    container: Any
    stream: Any
    audio_stream: Any
    sink: _TsSink
    start_mono: float
    index: int
    start_utc_us: int = 0
    packets: int = 0
    last_utc_us: int = 0
    last_mono: float = 0.0
    audio_packets: int = 0
    fixes: int = 0  # location fixes sealed in this segment so far
    no_fix_at_open: str | None = None  # why there was no fix when the segment opened (None: there was one)


@dataclass
class ClipStats:
    segments: list[SealedInfo] = field(default_factory=list)
    packets: int = 0
    audio_packets: int = 0
    audio_dropped_before_video: int = 0
    media_bytes: int = 0
    flushes: int = 0
    dropped_before_keyframe: int = 0


class ClipWriter:
    def __init__(
        self,
        storage: DeviceStorage,
        video: VideoFormat,
        *,
        clip_id: uuid.UUID | None = None,
        segment_seconds: float = 10.0,
        flush_seconds: float = 1.0,
        clock: ClockState = ClockState(),
        info: dict[str, Any] | None = None,
        no_fix_reason: Callable[[], str | None] | None = None,
        audio: AudioFormat | None = None,
        pts_origin_mono: float | None = None,
    ):
        """`no_fix_reason`, when given, turns on the explicit no-fix record: it is asked, at the seal of a
        segment that holds no fix, why there was none (None: "no fix arrived during this segment")."""
        if not 1.0 <= segment_seconds <= 3600:
            raise ValueError(f"segment length {segment_seconds} s outside 1..3600")
        if not 0.05 <= flush_seconds <= 1.0:
            raise ValueError(f"flush interval {flush_seconds} s outside 0.05..1 (at most 1 s may be lost)")
        self.storage = storage
        self.video = video
        self.audio = audio
        self.pts_origin_mono = pts_origin_mono
        self._last_pts = {"video": -1, "audio": -1}
        self.clip_id = clip_id or uuid.uuid4()
        self.segment_seconds = segment_seconds
        self.flush_seconds = flush_seconds
        self.clock = clock
        self.info = dict(info or {})
        self.stats = ClipStats()
        self._seg: _OpenSegment | None = None
        self._last_flush_mono = 0.0
        self._pending: dict[int, list[str]] = {RECORD_EVENTS: [], RECORD_LOCATION: []}
        self._pending_fixes = 0
        self.no_fix_reason = no_fix_reason
        self._frame_us = 1_000_000 // max(1, video.fps)
        self.closed = False

    @property
    def recording_segment(self) -> int | None:
        return self._seg.index if self._seg else None

    # -- records other than media -------------------------------------------
    def add_event(self, event: dict[str, Any]) -> None:
        """A bookmark, trigger or policy change; sealed with the next flush, inside the encryption."""
        self._pending[RECORD_EVENTS].append(json.dumps(event, separators=(",", ":")))

    def add_location(self, fix: dict[str, Any]) -> None:
        """A GNSS fix or fix event; travels only inside the encrypted chunks, never in the clear header."""
        self._pending[RECORD_LOCATION].append(json.dumps(fix, separators=(",", ":")))
        if "lat" in fix:
            self._pending_fixes += 1

    # -- media ----------------------------------------------------------------
    def _pts(self, pkt: EncodedPacket) -> int:
        """The packet's presentation time at 90 kHz from its capture time; strictly rising per stream."""
        if self.pts_origin_mono is None:
            self.pts_origin_mono = pkt.t_mono
        pts = round((pkt.t_mono - self.pts_origin_mono + PTS_LEAD_S) * PTS_HZ)
        pts = max(pts, self._last_pts[pkt.media] + 1)
        self._last_pts[pkt.media] = pts
        return pts

    def write(self, pkt: EncodedPacket) -> list[SealedInfo]:
        """Add one packet (video or audio); returns the segments this sealed (at a cut)."""
        if self.closed:
            raise RuntimeError("clip already closed")
        sealed: list[SealedInfo] = []
        if pkt.media == "audio":
            self._write_audio(pkt)
            return sealed
        if self._seg is None:
            if not pkt.keyframe:
                self.stats.dropped_before_keyframe += 1
                return sealed
            self._open(pkt)
        elif pkt.keyframe and pkt.t_mono - self._seg.start_mono >= self.segment_seconds:
            sealed.append(self._seal_current())
            self._open(pkt)
        seg = self._seg
        assert seg is not None
        packet = av.Packet(pkt.data)
        packet.pts = packet.dts = self._pts(pkt)
        packet.time_base = PTS_TIME_BASE
        packet.is_keyframe = pkt.keyframe
        packet.stream = seg.stream
        seg.container.mux(packet)
        seg.packets += 1
        seg.last_utc_us = pkt.utc_us
        seg.last_mono = pkt.t_mono
        self.stats.packets += 1
        if pkt.t_mono - self._last_flush_mono >= self.flush_seconds:
            self.flush()
        return sealed

    def _write_audio(self, pkt: EncodedPacket) -> None:
        seg = self._seg
        if self.audio is None:
            raise ValueError("an audio packet for a clip opened without sound (audio=None)")
        if seg is None:
            self.stats.audio_dropped_before_video += 1
            return
        packet = av.Packet(pkt.data)
        packet.pts = packet.dts = self._pts(pkt)
        packet.time_base = PTS_TIME_BASE
        packet.is_keyframe = True
        packet.stream = seg.audio_stream
        seg.container.mux(packet)
        seg.audio_packets += 1
        self.stats.audio_packets += 1
        if pkt.t_mono - self._last_flush_mono >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Seal what is buffered as chunks and fsync: the durability point."""
        seg = self._seg
        if seg is None:
            return
        data = seg.sink.take()
        if data:
            seg.stored.append(RECORD_MEDIA, data)
            self.stats.media_bytes += len(data)
        for rtype, lines in self._pending.items():
            if lines:
                payload = "\n".join(lines) + "\n"
                if rtype == RECORD_LOCATION:
                    payload = pad_location(payload)
                seg.stored.append(rtype, payload.encode())
                lines.clear()
        seg.fixes += self._pending_fixes
        self._pending_fixes = 0
        seg.stored.flush()
        self._last_flush_mono = seg.last_mono
        self.stats.flushes += 1

    def flush_if_due(self, now_mono: float) -> None:
        """Flush on time even when packets stop coming (a stalled source must not hold video back)."""
        if self._seg is not None and now_mono - self._last_flush_mono >= self.flush_seconds:
            self.flush()

    def close(self) -> list[SealedInfo]:
        """Seal the open segment (if any) and end the clip."""
        out = [self._seal_current()] if self._seg is not None else []
        self.closed = True
        return out

    # -- segments -------------------------------------------------------------
    def _open(self, pkt: EncodedPacket) -> None:
        index = len(self.stats.segments)
        stored = self.storage.open_segment(
            clip_id=self.clip_id,
            segment_index=index,
            start_utc_us=pkt.utc_us,
            start_mono_ns=int(pkt.t_mono * 1e9),
            clock_sync_utc_us=self.clock.sync_utc_us,
            clock_offset_us=self.clock.offset_us,
        )
        info = {
            "container": "video/mp2t",
            "video": {"codec": self.video.codec, "width": self.video.width, "height": self.video.height,
                      "fps": self.video.fps, "bitrate": self.video.bitrate},
            "audio": self.audio.describe() if self.audio is not None else None,
            "timestamps": "90 kHz from the monotonic capture clock, audio and video alike",
            "segment_index": index,
            **self.info,
        }
        stored.append(RECORD_INFO, json.dumps(info).encode())
        sink = _TsSink()
        container = av.open(sink, "w", format="mpegts", container_options={"flush_packets": "1"},
                            options={"max_interleave_delta": str(MAX_INTERLEAVE_US)})
        stream = container.add_stream("h264", rate=Fraction(self.video.fps))
        stream.width, stream.height = self.video.width, self.video.height
        audio_stream = None
        if self.audio is not None:
            audio_stream = container.add_stream("aac", rate=self.audio.sample_rate)
            audio_stream.codec_context.layout = "mono" if self.audio.channels == 1 else "stereo"
            audio_stream.codec_context.sample_rate = self.audio.sample_rate
            audio_stream.codec_context.extradata = self.audio.extradata
        self._seg = _OpenSegment(stored, container, stream, audio_stream, sink, pkt.t_mono, index, start_utc_us=pkt.utc_us,
                                 no_fix_at_open=self.no_fix_reason() if self.no_fix_reason is not None else None)
        self._last_flush_mono = pkt.t_mono
        log.debug("segment %d of clip %s opened (sequence %d)", index, self.clip_id, stored.writer.preamble.sequence)

    def _seal_current(self) -> SealedInfo:
        seg = self._seg
        assert seg is not None
        seg.container.close()  # writes any trailing TS packets into the sink
        if self.no_fix_reason is not None and seg.fixes + self._pending_fixes == 0:
            # Asked at the seal, which may come a little after the segment's end (a loaded camera): if
            # the fix is back by then, why there was none is what it was when the segment opened.
            reason = self.no_fix_reason() or seg.no_fix_at_open or "no fix arrived during this segment"
            self.add_location({"no_fix": True, "reason": reason,
                               "from_utc_us": seg.start_utc_us, "to_utc_us": seg.last_utc_us + self._frame_us})
        self.flush()
        info = seg.stored.seal(seg.last_utc_us + self._frame_us, int(seg.last_mono * 1e9))
        self.stats.segments.append(info)
        self._seg = None
        log.info("sealed %s (%d video, %d audio packets)", info.path.name, seg.packets, seg.audio_packets)
        return info
