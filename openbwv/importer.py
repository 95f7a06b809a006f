"""Seal an existing video file as a device would: `bwv seal`.

The file is split at keyframes into segments of about `segment_seconds`
(no re-encoding: packets are copied), each remuxed to MPEG-TS (a streamable,
non-proprietary container with no index to lose) and sealed into the device's
storage.  This is how tests make footage and how a force imports video from
another source.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import av

from .sealed.errors import SegmentError
from .firmware.clipwriter import pad_location
from .sealed.layout import RECORD_INFO, RECORD_LOCATION, RECORD_MEDIA
from .sealed.storage import DeviceStorage, StoredSegment
from .sealed.writer import SealedInfo

# Audio codecs MPEG-TS can carry; other audio streams are left out (and said so).
TS_AUDIO_CODECS = {"aac", "mp3", "mp2", "ac3", "eac3", "opus"}
TS_VIDEO_CODECS = {"h264", "hevc", "mpeg2video", "mpeg4"}
CONTAINER = "video/mp2t"


class VideoImportError(SegmentError):
    """The input video cannot be imported (unreadable, no video stream, unsupported codec)."""


class MediaChunker:
    """A write-only file object for PyAV's muxer that seals its bytes as MEDIA records.

    Buffers up to `flush_bytes` so chunks are of a useful size, then appends.
    """

    def __init__(self, segment: StoredSegment, flush_bytes: int):
        self.segment = segment
        self.flush_bytes = flush_bytes
        self._buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> int:
        self._buf += data
        self.total += len(data)
        if len(self._buf) >= self.flush_bytes:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self.segment.append(RECORD_MEDIA, bytes(self._buf))
            self._buf.clear()


@dataclass
class ImportReport:
    source: Path
    clip_id: uuid.UUID
    segments: list[SealedInfo] = field(default_factory=list)
    packets: int = 0
    dropped_before_keyframe: int = 0
    skipped_streams: list[str] = field(default_factory=list)
    media_bytes: int = 0


def _utc_us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def source_start_time(container: av.container.InputContainer, path: Path) -> datetime:
    """When the footage began: the file's creation_time tag if present, else its mtime."""
    tag = container.metadata.get("creation_time")
    if tag:
        try:
            return datetime.fromisoformat(tag.replace("Z", "+00:00")).astimezone(timezone.utc)
        except ValueError:
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def import_video(
    source: Path,
    storage: DeviceStorage,
    *,
    segment_seconds: float = 10.0,
    start: datetime | None = None,
    clip_id: uuid.UUID | None = None,
    progress: Callable[[SealedInfo], None] | None = None,
    gnss: Sequence[tuple[int, float, float]] = (),
) -> ImportReport:
    """Seal `source` into `storage` as one clip.  `gnss`: fixes (UTC µs, latitude, longitude) taken beside
    the recording (a separate receiver's log); each segment carries, as its camera would, the LOCATION
    lines of the fixes that fall within it."""
    source = Path(source)
    if segment_seconds <= 0:
        raise ValueError("segment length must be positive")
    try:
        inp = av.open(str(source))
    except (av.FFmpegError, OSError) as e:
        raise VideoImportError(f"cannot read video: {e}", path=str(source)) from None
    with inp:
        if not inp.streams.video:
            raise VideoImportError("no video stream in the file", path=str(source))
        video = inp.streams.video[0]
        if video.codec_context.name not in TS_VIDEO_CODECS:
            raise VideoImportError(
                f"video codec {video.codec_context.name!r} cannot be carried in MPEG-TS without re-encoding "
                f"(supported: {', '.join(sorted(TS_VIDEO_CODECS))})",
                path=str(source),
            )
        streams = [video]
        report = ImportReport(source, clip_id or uuid.uuid4())
        for s in inp.streams.audio:
            if s.codec_context.name in TS_AUDIO_CODECS:
                streams.append(s)
            else:
                report.skipped_streams.append(f"audio #{s.index} ({s.codec_context.name})")
        start_utc = start or source_start_time(inp, source)
        info = {
            "container": CONTAINER,
            "imported_from": source.name,
            "video": {
                "codec": video.codec_context.name,
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "fps": float(video.average_rate) if video.average_rate else None,
            },
            "audio": [s.codec_context.name for s in streams[1:]],
        }

        seg: StoredSegment | None = None
        out = sink = None
        out_streams: dict[int, av.stream.Stream] = {}
        first_t: float | None = None
        seg_start_t = 0.0
        last_t = 0.0

        def seconds(pkt: av.Packet) -> float | None:
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if ts is None:
                return None
            return float(ts * pkt.time_base)

        def close_segment(end_t: float, final: bool = False) -> None:
            nonlocal seg, out, sink
            assert seg is not None and out is not None and sink is not None
            out.close()
            sink.flush()
            report.media_bytes += sink.total
            seg_from = _utc_us(start_utc) + int((seg_start_t - (first_t or 0.0)) * 1_000_000)
            seg_to = _utc_us(start_utc) + int((end_t - (first_t or 0.0)) * 1_000_000)
            lines = [json.dumps({"utc_us": t, "lat": lat, "lon": lon, "quality": 1}, separators=(",", ":"))
                     for t, lat, lon in gnss if seg_from <= t < seg_to or (t == seg_to and final)]
            if lines:
                seg.append(RECORD_LOCATION, pad_location("\n".join(lines) + "\n").encode())
            sealed = seg.seal(seg_to)
            report.segments.append(sealed)
            if progress:
                progress(sealed)
            seg = out = sink = None

        def open_segment(t: float) -> None:
            nonlocal seg, out, sink, seg_start_t
            seg_start_t = t
            seg = storage.open_segment(
                clip_id=report.clip_id,
                segment_index=len(report.segments),
                start_utc_us=_utc_us(start_utc) + int((t - (first_t or 0.0)) * 1_000_000),
            )
            seg.append(RECORD_INFO, json.dumps(info | {"segment_index": len(report.segments)}).encode())
            sink = MediaChunker(seg, storage.chunk_limit)
            out = av.open(sink, "w", format="mpegts")
            out_streams.clear()
            for s in streams:
                out_streams[s.index] = out.add_stream_from_template(s)

        try:
            for pkt in inp.demux(streams):
                if pkt.size == 0:
                    continue  # demuxer flush packet
                t = seconds(pkt)
                is_video = pkt.stream.index == video.index
                if seg is None:
                    if not (is_video and pkt.is_keyframe and t is not None):
                        report.dropped_before_keyframe += 1
                        continue
                    if first_t is None:
                        first_t = t
                    open_segment(t)
                elif is_video and pkt.is_keyframe and t is not None and t - seg_start_t >= segment_seconds:
                    close_segment(t)
                    open_segment(t)
                if t is not None:
                    dur = float(pkt.duration * pkt.time_base) if pkt.duration else 0.0
                    last_t = max(last_t, t + dur)
                pkt.stream = out_streams[pkt.stream.index]
                out.mux(pkt)  # type: ignore[union-attr]
                report.packets += 1
            if seg is not None:
                close_segment(last_t, final=True)
        except av.FFmpegError as e:
            raise VideoImportError(f"video could not be read to the end: {e}", path=str(source)) from None
        if not report.segments:
            raise VideoImportError("no keyframe found: nothing decodable to seal", path=str(source))
        return report
