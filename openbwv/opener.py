"""`bwv open`: turn verified sealed segments back into playable video (server side only).

Needs the server's private key.  Every file is verified first (layout, hash,
signature, chain); a file that fails is not decrypted.  The segments of each
clip are decrypted in order and their MPEG-TS media joined into one `.ts`,
then remuxed (no re-encoding) into an `.mp4` that any player opens.  A JSON
manifest beside them says which segments went in, with their hashes and the
metadata records sealed with them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
from av.bitstream import BitStreamFilterContext

from .sealed.durable import atomic_write, fsync_dir
from .sealed.errors import SegmentError
from .sealed.keys import ServerKeyPair
from .sealed.layout import RECORD_EVENTS, RECORD_INFO, RECORD_LOCATION, RECORD_MEDIA
from .sealed.reader import KeyLookup, VerifiedSegment, decrypt_records
from .verification import Problem, VerifyReport, verify_paths


def utc_text(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class OpenedClip:
    device_id: str
    clip_id: str
    segments: list[VerifiedSegment]
    ts_path: Path
    mp4_path: Path | None
    manifest_path: Path
    duration_s: float | None


@dataclass
class OpenReport:
    verify: VerifyReport
    clips: list[OpenedClip] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, hex, read a MiB at a time (manifests of opened and exported footage)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def remux_to_mp4(ts_path: Path, mp4_path: Path) -> float | None:
    """Copy the packets of an MPEG-TS file into MP4; return the duration in seconds."""
    tmp = mp4_path.with_name(f".{mp4_path.name}.tmp")
    with av.open(str(ts_path)) as inp, av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        mapping = {}
        for s in inp.streams:
            if s.type in ("video", "audio"):
                mapping[s.index] = out.add_stream_from_template(s)
        for pkt in inp.demux(*[inp.streams[i] for i in mapping]):
            if pkt.dts is None or pkt.size == 0:
                continue
            pkt.stream = mapping[pkt.stream.index]
            out.mux(pkt)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, mp4_path)
    fsync_dir(mp4_path.parent)
    with av.open(str(mp4_path)) as c:
        return c.duration / av.time_base if c.duration else None


# Fragmented MP4 as it is written: an empty index first, then a fragment (moof + mdat) at every video
# keyframe, each flushed to the file as it is made, so a reader can serve the first seconds while the
# rest is still being decrypted (server/media.py's progressive view).
FRAGMENTED_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


class ChunkReader(io.RawIOBase):
    """A read-only, unseekable file over an iterator of byte strings, pulled only as far as it is read:
    the demuxer asks for the next bytes and the next segment is decrypted then, not before."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def segment_media(segments: Iterable[VerifiedSegment], keys: KeyLookup, server: ServerKeyPair) -> Iterator[bytes]:
    """The MPEG-TS media of verified segments, in the order given, decrypted one chunk at a time (each
    segment was verified by the caller, so it is not read twice for that)."""
    for seg in segments:
        for rtype, payload in decrypt_records(Path(seg.path or ""), keys, server, verified=seg):
            if rtype == RECORD_MEDIA:
                yield payload


def remux_stream_to_fragmented_mp4(ts_chunks: Iterable[bytes], mp4_path: Path) -> None:
    """Copy the packets of an MPEG-TS byte stream into a fragmented MP4 written as it goes (no
    re-encoding): the file is playable from its start while it grows, fragment by fragment."""
    with av.open(ChunkReader(ts_chunks), format="mpegts") as inp, \
            av.open(str(mp4_path), "w", format="mp4", options=dict(FRAGMENTED_OPTIONS)) as out:
        mapping = {}
        for s in inp.streams:
            if s.type in ("video", "audio"):
                mapping[s.index] = out.add_stream_from_template(s)
        # The index is written before any packet, so an ADTS AAC stream's decoder configuration (which a
        # faststart remux learns from its packets) must be known first: read it from the first packet's
        # header, holding back what came before it (the first few video packets); the frames then lose
        # their ADTS headers (aac_adtstoasc), as MP4 carries raw AAC.
        adts = {i: BitStreamFilterContext("aac_adtstoasc", inp.streams[i]) for i, o in mapping.items()
                if o.type == "audio" and o.codec_context.name == "aac"}
        waiting = set(adts)
        held: list[av.Packet] = []
        for pkt in inp.demux(*[inp.streams[i] for i in mapping]):
            if pkt.dts is None or pkt.size == 0:
                continue
            index = pkt.stream.index
            if index in waiting:
                mapping[index].codec_context.extradata = adts_audio_specific_config(bytes(pkt))
                waiting.discard(index)
            packets = adts[index].filter(pkt) if index in adts else [pkt]
            for p in packets:
                p.stream = mapping[index]
            if waiting:
                held.extend(packets)
                continue
            for p in held + packets:
                out.mux(p)
            held.clear()
        for p in held:  # a stream that never sent a packet: nothing more to wait for
            out.mux(p)


def adts_audio_specific_config(frame: bytes) -> bytes:
    """The two-byte AudioSpecificConfig (ISO 14496-3) that an ADTS header describes: audio object type,
    sampling frequency index and channel configuration, which MP4 keeps once in its index instead of
    before every frame."""
    if len(frame) < 7 or frame[0] != 0xFF or frame[1] & 0xF0 != 0xF0:
        raise ValueError("the first AAC packet has no ADTS header: cannot tell its configuration")
    object_type = (frame[2] >> 6) + 1
    frequency_index = (frame[2] >> 2) & 0x0F
    channels = ((frame[2] & 0x01) << 2) | (frame[3] >> 6)
    return ((object_type << 11) | (frequency_index << 7) | (channels << 3)).to_bytes(2, "big")


def open_paths(
    paths: Iterable[Path],
    keys: KeyLookup,
    server: ServerKeyPair,
    out_dir: Path,
    *,
    mp4: bool = True,
    on_clip: Callable[[OpenedClip], None] | None = None,
) -> OpenReport:
    report = OpenReport(verify_paths(paths, keys))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips: dict[tuple[str, str], list[VerifiedSegment]] = {}
    for seg in report.verify.segments:
        clips.setdefault((seg.device_id, str(seg.preamble.clip_id)), []).append(seg)
    for (device_id, clip_id), segs in sorted(clips.items(), key=lambda kv: min(s.sequence for s in kv[1])):
        segs.sort(key=lambda s: (s.preamble.segment_index, s.sequence))
        stem = f"{device_id}_{clip_id}"
        ts_path = out_dir / f"{stem}.ts"
        tmp = out_dir / f".{stem}.ts.tmp"
        entries = []
        opened: list[VerifiedSegment] = []
        with open(tmp, "wb") as ts:
            for seg in segs:
                meta: dict[str, list] = {"info": [], "location": [], "events": []}
                # LOCATION and EVENTS are JSON-lines streams that may span chunks: join, then split.
                streams = {RECORD_LOCATION: bytearray(), RECORD_EVENTS: bytearray()}
                media_bytes = 0
                try:
                    for rtype, payload in decrypt_records(Path(seg.path or ""), keys, server):
                        if rtype == RECORD_MEDIA:
                            ts.write(payload)
                            media_bytes += len(payload)
                        elif rtype == RECORD_INFO:
                            meta["info"].append(json.loads(payload))
                        elif rtype in streams:
                            streams[rtype] += payload
                    for rtype, name in ((RECORD_LOCATION, "location"), (RECORD_EVENTS, "events")):
                        meta[name] = [json.loads(line) for line in bytes(streams[rtype]).splitlines() if line.strip()]
                except SegmentError as e:
                    report.problems.append(Problem(seg.path or "?", e.reason, "cannot decrypt"))
                    continue
                except ValueError as e:
                    report.problems.append(Problem(seg.path or "?", f"metadata record is not JSON: {e}", "bad metadata"))
                    continue
                opened.append(seg)
                p, t = seg.preamble, seg.trailer
                entries.append(
                    {
                        "file": os.path.basename(seg.path or ""),
                        "sequence": p.sequence,
                        "segment_index": p.segment_index,
                        "start_utc": utc_text(p.start_utc_us),
                        "end_utc": utc_text(t.end_utc_us),
                        "segment_hash": seg.segment_hash.hex(),
                        "recovered_after_power_loss": t.recovered,
                        "clock_offset_us": p.clock_offset_us,
                        "clock_synced_utc": utc_text(p.clock_sync_utc_us) if p.clock_sync_utc_us else None,
                        "media_bytes": media_bytes,
                        **{k: v for k, v in meta.items() if v},
                    }
                )
            ts.flush()
            os.fsync(ts.fileno())
        if not opened:
            tmp.unlink()
            continue
        os.replace(tmp, ts_path)
        mp4_path = out_dir / f"{stem}.mp4" if mp4 else None
        duration = None
        if mp4_path is not None:
            try:
                duration = remux_to_mp4(ts_path, mp4_path)
            except av.FFmpegError as e:
                report.problems.append(Problem(str(ts_path), f"remux to MP4 failed ({e}); the .ts is complete", "remux"))
                mp4_path = None
        indices = [s.preamble.segment_index for s in opened]
        missing = sorted(set(range(min(indices), max(indices) + 1)) - set(indices))
        manifest = {
            "device_id": device_id,
            "clip_id": clip_id,
            "opened_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "segments": entries,
            "missing_segment_indices": missing,
            "outputs": {
                ts_path.name: sha256_file(ts_path),
                **({mp4_path.name: sha256_file(mp4_path)} if mp4_path else {}),
            },
        }
        manifest_path = out_dir / f"{stem}.json"
        atomic_write(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
        clip = OpenedClip(device_id, clip_id, opened, ts_path, mp4_path, manifest_path, duration)
        report.clips.append(clip)
        if on_clip:
            on_clip(clip)
    return report
