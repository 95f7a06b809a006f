"""Index the tracks of held segments that the track index does not cover (`bwv server reindex`).

The server indexes a segment's sealed GNSS track at ingest (geoindex.py).
Segments held before the index existed (schema version 1), and segments whose
track could not be read at the time (a server key restored later), are not
in it, so a subject-access search by place would silently miss them.  This
fills the gap, and cannot be a schema migration: it needs the server's private
key, the device registry and the blob store, and migrations run whenever any
command opens the database.

Each segment is decrypted outside any write transaction (it is the slow
part); its index rows and the audit record of the key use are then written in
one short transaction per batch, after checking that the segment is still
held and still unindexed, so a live server's ingest and a retention sweep can
run beside it.  Re-running continues where a previous run stopped.

It runs on either metadata engine and either blob store: pages go by segment hash (not SQLite's
rowid), and a segment held in S3 is copied into a temporary directory to be read, then removed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..registry import DeviceRegistry
from ..sealed.keys import ServerKeyPair
from . import audit, geoindex
from .blobstore import BlobStore, readable_path
from .db import MetadataStore

log = logging.getLogger("bwv.server.reindex")

DEFAULT_BATCH = 50


@dataclass
class ReindexReport:
    candidates: int = 0
    indexed: int = 0  # segments whose fixes are now searchable
    no_fix: int = 0  # read, and sealed without a fix
    unreadable: int = 0  # still unreadable (the reason is in segment_tracks.note)
    skipped: int = 0  # deleted or indexed by someone else meanwhile
    fixes: int = 0
    notes: list[str] = field(default_factory=list)  # the first few unreadable ones, for the operator

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def unindexed(db: MetadataStore, *, retry_unreadable: bool = False, after_hash: str = "",
              limit: int = 1_000_000_000) -> list[tuple[str, str, str, str]]:
    """(segment hash, device, clip, blob key) of held segments the index does not cover (db.py)."""
    return db.unindexed_segments(retry_unreadable=retry_unreadable, after_hash=after_hash, limit=limit)


def reindex(db: MetadataStore, blobs: BlobStore, registry: DeviceRegistry, keys: ServerKeyPair, *,
            actor: str, retry_unreadable: bool = False, dry_run: bool = False, batch: int = DEFAULT_BATCH,
            progress: Callable[[ReindexReport], None] | None = None) -> ReindexReport:
    """Read and index the track of every held segment the index lacks; see the module docstring."""
    report = ReindexReport(candidates=db.count_unindexed(retry_unreadable=retry_unreadable))
    if dry_run:
        return report
    after = ""
    with tempfile.TemporaryDirectory(prefix="bwv-reindex-") as workdir:
        while page := unindexed(db, retry_unreadable=retry_unreadable, after_hash=after, limit=max(1, batch)):
            after = page[-1][0]
            read = [(h, device, clip, _read(blobs, key, registry, keys, Path(workdir)))
                    for h, device, clip, key in page]
            with db.transaction() as conn:
                for h, device, clip, track in read:
                    _write(conn, h, device, clip, track, actor, retry_unreadable, report)
            if progress:
                progress(report)
    log.info("reindex: %d candidate(s): %d indexed (%d fixes), %d without a fix, %d unreadable, %d skipped",
             report.candidates, report.indexed, report.fixes, report.no_fix, report.unreadable, report.skipped)
    return report


def _read(blobs: BlobStore, key: str, registry: DeviceRegistry, keys: ServerKeyPair,
          workdir: Path) -> geoindex.SegmentTrack:
    """The segment's track, read from a local path to the blob (a copy, removed at once, for S3).

    A blob the store does not have is recorded as unreadable, with the reason; a store that cannot be
    reached (StoreError) stops the run instead, so that an outage is not written down as a finding."""
    try:
        path = readable_path(blobs, key, workdir)
    except FileNotFoundError as e:
        return geoindex.SegmentTrack(geoindex.TRACK_UNREADABLE, note=f"the held segment could not be read: {e}"[:500])
    try:
        return geoindex.read_track(path, registry, keys)
    finally:
        if path.parent == workdir:
            path.unlink(missing_ok=True)


def _write(conn, segment_hash: str, device: str, clip: str, track: geoindex.SegmentTrack, actor: str,
           retry_unreadable: bool, report: ReindexReport) -> None:
    if not geoindex.segment_held(conn, segment_hash):
        report.skipped += 1  # deleted by the sweep since it was listed
        return
    status = geoindex.stored_status(conn, segment_hash)
    if status is not None:
        if not (retry_unreadable and status == geoindex.TRACK_UNREADABLE):
            report.skipped += 1  # indexed meanwhile (by another run)
            return
        geoindex.delete_track(conn, segment_hash)
    geoindex.store_track(conn, segment_hash, device, clip, track)
    audit.append(conn, actor=actor, action="key_use", target=f"segment:{segment_hash}", detail={
        "why": "track reindex", "status": track.status, "fixes": len(track.fixes), "clip": clip})
    if track.status == geoindex.TRACK_INDEXED:
        report.indexed += 1
        report.fixes += len(track.fixes)
    elif track.status == geoindex.TRACK_NO_FIX:
        report.no_fix += 1
    else:
        report.unreadable += 1
        if len(report.notes) < 5:
            report.notes.append(f"{device} segment {segment_hash[:16]}: {track.note}")


__all__ = ["ReindexReport", "reindex", "unindexed"]
