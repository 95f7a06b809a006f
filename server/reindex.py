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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from ..registry import DeviceRegistry
from ..sealed.keys import ServerKeyPair
from . import audit, geoindex
from .blobstore import LocalBlobStore
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


_UNINDEXED = ("FROM segments s LEFT JOIN segment_tracks t ON t.segment_hash = s.segment_hash "
              "WHERE (t.segment_hash IS NULL{extra})")


def _extra(retry_unreadable: bool) -> str:
    return f" OR t.status = '{geoindex.TRACK_UNREADABLE}'" if retry_unreadable else ""


def unindexed(db: MetadataStore, *, retry_unreadable: bool = False, after_rowid: int = 0,
              limit: int = 1_000_000_000) -> list[tuple[int, str, str, str, str]]:
    """(rowid, segment hash, device, clip, blob key) of held segments the index does not cover, in rowid
    order from `after_rowid`: a page at a time, so a million of them never sit in memory at once."""
    return [tuple(r) for r in db.reader().execute(
        "SELECT s.rowid, s.segment_hash, s.device_id, s.clip_id, s.blob_key "
        + _UNINDEXED.format(extra=_extra(retry_unreadable)) + " AND s.rowid > ? ORDER BY s.rowid LIMIT ?",
        (after_rowid, limit))]


def reindex(db: MetadataStore, blobs: LocalBlobStore, registry: DeviceRegistry, keys: ServerKeyPair, *,
            actor: str, retry_unreadable: bool = False, dry_run: bool = False, batch: int = DEFAULT_BATCH,
            progress: Callable[[ReindexReport], None] | None = None) -> ReindexReport:
    """Read and index the track of every held segment the index lacks; see the module docstring."""
    count = db.reader().execute("SELECT COUNT(*) " + _UNINDEXED.format(extra=_extra(retry_unreadable))).fetchone()[0]
    report = ReindexReport(candidates=count)
    if dry_run:
        return report
    after = 0
    while page := unindexed(db, retry_unreadable=retry_unreadable, after_rowid=after, limit=max(1, batch)):
        after = page[-1][0]
        read = [(h, device, clip, geoindex.read_track(blobs.path(key), registry, keys))
                for _, h, device, clip, key in page]
        with db.transaction() as conn:
            for h, device, clip, track in read:
                _write(conn, h, device, clip, track, actor, retry_unreadable, report)
        if progress:
            progress(report)
    log.info("reindex: %d candidate(s): %d indexed (%d fixes), %d without a fix, %d unreadable, %d skipped",
             report.candidates, report.indexed, report.fixes, report.no_fix, report.unreadable, report.skipped)
    return report


def _write(conn, segment_hash: str, device: str, clip: str, track: geoindex.SegmentTrack, actor: str,
           retry_unreadable: bool, report: ReindexReport) -> None:
    if conn.execute("SELECT 1 FROM segments WHERE segment_hash = ?", (segment_hash,)).fetchone() is None:
        report.skipped += 1  # deleted by the sweep since it was listed
        return
    row = conn.execute("SELECT status FROM segment_tracks WHERE segment_hash = ?", (segment_hash,)).fetchone()
    if row is not None:
        if not (retry_unreadable and row[0] == geoindex.TRACK_UNREADABLE):
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
