"""The retention sweep: delete what the rules say is due, exactly once, whatever happens midway.

A sweep works in batches.  For each batch:

1. **Intent** (one transaction): every clip the rules (retention.decide,
   re-checked inside the transaction, so a hold logged a moment ago wins)
   say is due moves from ``held`` to ``deleting`` and names this sweep.
2. **Shred**: each segment's wrapped key is overwritten and its file removed
   (blobstore ``shred``); one flush of the file system makes the batch
   durable.
3. **Record** (one transaction): per clip, a tombstone per segment, the
   segment and track rows removed, the clip ``deleted``, and one ``delete``
   audit record.

A sweep killed between 1 and 3 leaves clips in ``deleting``; the next sweep
finishes those first (shredding what is left; a file already gone was this
clip's and is not an error) and records them, unless a mark or a request has
held the clip since and nothing of it has been shredded yet: then the
deletion is abandoned and the clip is held again (audited).  The ``delete`` record is
written in the transaction that moves a clip from ``deleting`` to
``deleted``, so no clip is recorded as deleted twice; nothing that was not
moved to ``deleting`` is touched.  A segment that arrives for a clip while it
is being deleted keeps its file and row: the clip goes back to ``held`` and
a later sweep takes it when it is due.

Dry run: the same decisions, nothing changed, nothing audited but the fact
that somebody looked (by the caller).
"""

from __future__ import annotations

import fcntl
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .audit_time import segments_detail, when
from . import audit, geoindex, lifecycle
from .blobstore import BlobStore
from .db import MetadataStore
from .errors import Conflict
from .geoindex import iso_utc
from .media import drop_clip_views
from .retention import RetentionPolicy, decide, due_utc_us

log = logging.getLogger("bwv.server.sweep")

SWEEP_ACTOR = "system:retention-sweep"
# The lock every node's sweep takes in a shared PostgreSQL (MetadataStore.hold_exclusive); "bwvw".
SWEEP_LOCK = 0x62777677


class _Both:
    """Two locks released together."""

    def __init__(self, *locks):
        self.locks = locks

    def close(self) -> None:
        for lock in self.locks:
            lock.close()
DEFAULT_BATCH = 500


@dataclass
class SweepReport:
    sweep_id: str
    dry_run: bool
    now_utc: str
    held_before: int = 0  # clips the rules were asked about
    resumed: int = 0  # clips an interrupted sweep had begun, finished here
    abandoned: list[str] = field(default_factory=list)  # ... held since, and so kept (nothing shredded yet)
    deleted_clips: list[str] = field(default_factory=list)  # (dry run: would delete)
    deleted_segments: int = 0
    bytes_freed: int = 0
    kept_late_segments: int = 0
    unknown_categories: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "sweep_id": self.sweep_id, "dry_run": self.dry_run, "now": self.now_utc,
            "clips_considered": self.held_before, "resumed": self.resumed, "abandoned": len(self.abandoned),
            "deleted_clips": len(self.deleted_clips), "deleted_segments": self.deleted_segments,
            "bytes_freed": self.bytes_freed, "kept_late_segments": self.kept_late_segments,
            "unknown_categories": dict(self.unknown_categories), "seconds": round(self.seconds, 3),
        }


def new_sweep_id(now: datetime) -> str:
    return f"sweep-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


class Sweeper:
    """Runs retention sweeps over one evidence database and blob store."""

    def __init__(self, store: MetadataStore, blobs: BlobStore, policy: RetentionPolicy, *,
                 actor: str = SWEEP_ACTOR, batch: int = DEFAULT_BATCH,
                 checkpoint: Callable[[], object] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.store = store
        self.blobs = blobs
        self.policy = policy
        self.actor = actor
        self.batch = batch
        self.checkpoint = checkpoint
        self.clock = clock
        self._exports: dict[str, list[Path]] | None = None

    def run(self, *, now: datetime | None = None, dry_run: bool = False,
            progress: Callable[[SweepReport], None] | None = None) -> SweepReport:
        now = now or self.clock()
        now_us = geoindex.to_utc_us(now)
        started = time.monotonic()
        report = SweepReport(new_sweep_id(now), dry_run, _iso(now))
        reader = self.store.reader()
        report.held_before = lifecycle.counts_by_state(reader).get(lifecycle.CLIP_HELD, 0)
        report.unknown_categories = lifecycle.unknown_categories(reader, self.policy)
        for category, count in report.unknown_categories:
            log.warning("%d held clip(s) carry the category %r, which the configuration no longer defines: "
                        "they are kept until it is defined again or they are re-filed", count, category)
        if dry_run:
            report.deleted_clips = [c.clip_id for c in lifecycle.due_between(reader, self.policy, now_us)]
            report.seconds = time.monotonic() - started
            return report

        lock = self._lock()
        try:
            shared = self.store.hold_exclusive(SWEEP_LOCK)
        except BaseException:
            lock.close()
            raise
        if shared is None:
            lock.close()
            raise Conflict("another retention sweep is running on this evidence database (on another node); its "
                           "sweep_finished audit record will say what it deleted")
        lock = _Both(lock, shared)
        self._exports = None  # exported copies by clip, indexed at the first deletion of this run
        try:
            return self._run(report, now, now_us, started, progress)
        finally:
            lock.close()  # closing the file releases the lock

    def _lock(self):  # this node's; hold_exclusive above is every node's on a shared PostgreSQL
        """One sweep at a time per evidence database, whoever starts it (the hourly timer, the console,
        the HTTP API): two sweeps would each be exactly-once, but one could abandon a clip the other is
        shredding.  A lock file beside the database, held with flock, which the kernel releases if the
        process dies, so a killed sweep never leaves it locked."""
        path = self.store.local_dir / "retention-sweep.lock"
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException as e:
            f.close()
            if not isinstance(e, BlockingIOError):
                raise
            raise Conflict("another retention sweep is running on this evidence database (the hourly timer, "
                           "the console or the HTTP API); its sweep_finished audit record will say what it "
                           "deleted") from None
        return f

    def _run(self, report: SweepReport, now: datetime, now_us: int, started: float,
             progress: Callable[[SweepReport], None] | None) -> SweepReport:
        with self.store.transaction() as db:
            audit.append(db, actor=self.actor, action="sweep_started", target=f"sweep:{report.sweep_id}",
                         detail={"now": report.now_utc, "clips_held": report.held_before}, at=self.clock())
        # First what an interrupted sweep began: it was due then and is half gone now.
        while True:
            pending = self._deleting(limit=self.batch)
            if not pending:
                break
            abandoned = len(report.abandoned)
            self._shred_and_record(pending, report)
            report.resumed += len(pending) - (len(report.abandoned) - abandoned)
            if progress:
                progress(report)
        done: set[str] = set()
        while True:
            due = [c for c in lifecycle.due_between(self.store.reader(), self.policy, now_us, limit=self.batch)
                   if c.clip_id not in done]
            if not due:
                break
            intended = self._intend([c.clip_id for c in due], report.sweep_id, now_us)
            done.update(c.clip_id for c in due)
            if intended:
                self._shred_and_record(intended, report)
            if progress:
                progress(report)
        self.blobs.sync_all()  # and what the store could not finish when it shredded (S3: locks ended since)
        report.seconds = time.monotonic() - started
        with self.store.transaction() as db:
            audit.append(db, actor=self.actor, action="sweep_finished", target=f"sweep:{report.sweep_id}",
                         detail=report.to_dict(), at=self.clock())
        if self.checkpoint is not None:
            self.checkpoint()  # deletions are the records most worth a signature
        log.info("sweep %s: %d clip(s), %d segment(s), %.1f MB deleted (%d resumed) in %.1f s", report.sweep_id,
                 len(report.deleted_clips), report.deleted_segments, report.bytes_freed / 1e6, report.resumed,
                 report.seconds)
        return report

    # ------------------------------------------------------------------ steps
    def _deleting(self, *, limit: int) -> list[tuple[str, str]]:
        """(clip, sweep id) of clips left in ``deleting`` by a sweep that did not finish."""
        return [tuple(r) for r in self.store.reader().execute(
            "SELECT clip_id, sweep_id FROM clips WHERE state = 'deleting' ORDER BY clip_id LIMIT ?", (limit,))]

    def _begin_shred(self, clips: list[tuple[str, str]], report: SweepReport) -> list[tuple[str, str]]:
        """Step 2a, one transaction: the last word of the holds.  A clip in ``deleting`` whose shredding
        has not begun is asked once more whether a mark or a request holds it (one logged while this
        batch was chosen, or while an interrupted sweep was down): if so, and its files are all there,
        its deletion is abandoned and it is ``held`` again (audited).  Every other one is marked
        ``shred_begun_utc`` in the same transaction, and from that commit on no hold is taken on it
        (sar.py), so nobody is told footage is held that is being destroyed.  A clip whose shredding
        had begun (an interrupted sweep) is finished.  Returns the clips to shred.  The batch is read
        in a few queries and marked by one executemany, not a statement per clip: on PostgreSQL
        each is a round trip."""
        begun = _iso(self.clock())
        shred: list[tuple[str, str]] = []
        ids = [clip_id for clip_id, _ in clips]
        with self.store.transaction() as db:
            records = lifecycle.clips(db, ids)
            shred_begun = dict(self._by_clip(db, "SELECT clip_id, shred_begun_utc FROM clips", ids))
            keys = self._blob_keys(db, ids)
            starting: list[tuple[str, str]] = []
            for clip_id, sweep_id in clips:
                record = records.get(clip_id)
                if record is None or record.state != lifecycle.CLIP_DELETING:
                    continue
                if shred_begun.get(clip_id) is None:
                    # A file already gone (a sweep of an older version, killed mid-shred) cannot be held.
                    if record.held and all(self.blobs.exists(k) for k in keys.get(clip_id, [])):
                        self._abandon(db, clip_id, sweep_id, report)
                        continue
                    starting.append((begun, clip_id))
                shred.append((clip_id, sweep_id))
            if starting:
                db.executemany("UPDATE clips SET shred_begun_utc = ? WHERE clip_id = ?", starting)
        return shred

    @staticmethod
    def _by_clip(db: sqlite3.Connection, select: str, clip_ids: list[str], order: str = "") -> list[tuple]:
        """Rows of `select` (whose first column is clip_id) for the given clips, IN lists of a bounded size."""
        rows: list[tuple] = []
        for i in range(0, len(clip_ids), lifecycle.IN_LIST_MAX):
            part = clip_ids[i:i + lifecycle.IN_LIST_MAX]
            rows.extend(tuple(r) for r in db.execute(
                f"{select} WHERE clip_id IN ({', '.join('?' * len(part))}){order}", part))
        return rows

    def _blob_keys(self, db: sqlite3.Connection, clip_ids: list[str]) -> dict[str, list[str]]:
        keys: dict[str, list[str]] = {}
        for clip_id, key in self._by_clip(db, "SELECT clip_id, blob_key FROM segments", clip_ids):
            keys.setdefault(clip_id, []).append(key)
        return keys

    def _abandon(self, db: sqlite3.Connection, clip_id: str, sweep_id: str, report: SweepReport) -> None:
        db.execute("UPDATE clips SET state = 'held', sweep_id = NULL, shred_begun_utc = NULL "
                   "WHERE clip_id = ? AND state = 'deleting'", (clip_id,))
        audit.append(db, actor=self.actor, action="hold", target=f"clip:{clip_id}", at=self.clock(),
                     detail={"sweep": sweep_id, "why": "held since the sweep chose it: its deletion is abandoned, "
                                                       "nothing was shredded"})
        report.abandoned.append(clip_id)

    def _intend(self, clip_ids: list[str], sweep_id: str, now_us: int) -> list[tuple[str, str]]:
        """Step 1: move the clips that are (still) due to ``deleting``, in one transaction."""
        chosen: list[tuple[str, str]] = []
        with self.store.transaction() as db:
            records = lifecycle.clips(db, clip_ids)
            for clip_id in clip_ids:
                record = records.get(clip_id)
                if record is None or record.state != lifecycle.CLIP_HELD:
                    continue
                if not decide(self.policy, record.facts(), now_us).delete:
                    continue  # a mark or a request arrived since the list was read
                chosen.append((clip_id, sweep_id))
            if chosen:
                db.executemany("UPDATE clips SET state = 'deleting', sweep_id = ? WHERE clip_id = ? AND state = 'held'",
                               [(sweep, clip_id) for clip_id, sweep in chosen])
        return chosen

    def _shred_and_record(self, clips: list[tuple[str, str]], report: SweepReport) -> None:
        """Steps 2 and 3 for clips in ``deleting``."""
        clips = self._begin_shred(clips, report)
        if not clips:
            return
        keys = self._blob_keys(self.store.reader(), [clip_id for clip_id, _ in clips])
        destroyed: dict[str, str | None] = {}
        copies: dict[str, int] = {}
        views: dict[str, int] = {}
        for clip_id, _ in clips:
            for key in keys.get(clip_id, []):
                destroyed[key] = self.blobs.shred(key, sync=False)
            copies[clip_id] = self._remove_export_copies(clip_id)
            # Decrypted views being watched (media.py) go with the clip: no one finishes watching deleted footage.
            views[clip_id] = drop_clip_views(self.store.local_dir, clip_id)
            from .redact_survey import drop_clip_surveys  # the faces found in it go too (OpenCV loaded only now)

            drop_clip_surveys(self.store.local_dir, clip_id)
        self.blobs.sync_all()
        at = _iso(self.clock())
        with self.store.transaction() as db:
            self._record_batch(db, clips, destroyed, at, report, copies, views)

    def _remove_export_copies(self, clip_id: str) -> int:
        """Remove the exported copies of a clip being deleted (sar_export.py: subject access exports
        under exports/<request>/<n>/, evidential ones under exports/evidential/<clip>/<n>/).  They are
        footage too, decrypted: kept, they would outlive the retention the public was promised.  Each
        export's signed manifest stays, the record of what was disclosed, to whom and when.  Returns
        how many were removed (a re-run after a crash finds fewer: removal is idempotent)."""
        if self._exports is None:
            self._exports = self._index_exports()
        removed = 0
        for path in self._exports.pop(clip_id, []):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _index_exports(self) -> dict[str, list[Path]]:
        """Every exported copy, by clip: one walk of the exports per sweep, not one per clip deleted."""
        root = self.store.local_dir / "exports"
        index: dict[str, list[Path]] = {}
        if root.is_dir():
            for path in [*root.glob("*/*/*.mp4"), *root.glob("evidential/*/*/*.mp4")]:
                index.setdefault(path.stem, []).append(path)
        return index

    def _record(self, db: sqlite3.Connection, clip_id: str, sweep_id: str, destroyed: dict[str, str | None],
                at: str, report: SweepReport, export_copies: int = 0, views: int = 0) -> None:
        """Step 3 for one clip (`_record_batch` of one)."""
        self._record_batch(db, [(clip_id, sweep_id)], destroyed, at, report, {clip_id: export_copies},
                           {clip_id: views})

    def _record_batch(self, db: sqlite3.Connection, clips: list[tuple[str, str]], destroyed: dict[str, str | None],
                      at: str, report: SweepReport, export_copies: dict[str, int], views: dict[str, int]) -> None:
        """Step 3 for a batch, in the caller's transaction: per clip still ``deleting``, a tombstone per
        shredded segment, its segment and track rows removed, the clip ``deleted`` (or ``held`` again
        when a segment arrived after the shred) and one ``delete`` audit record.  Read in a few
        queries and written by one executemany per table, not statements per segment."""
        ids = [clip_id for clip_id, _ in clips]
        records = lifecycle.clips(db, ids)
        segments: dict[str, list[tuple]] = {}
        for row in self._by_clip(
                db, "SELECT clip_id, segment_hash, device_id, sequence, prev_hash, segment_index, start_utc_us, "
                "end_utc_us, size, received_utc, receipt, blob_key, wrapped_key_sha256 FROM segments", ids,
                " ORDER BY clip_id, sequence"):
            segments.setdefault(row[0], []).append(row[1:])
        tombstones: list[tuple] = []
        gone_all: list[str] = []
        states: list[tuple] = []
        released: list[str] = []
        entries: list[dict] = []
        for clip_id, sweep_id in clips:
            record = records.get(clip_id)
            if record is None or record.state != lifecycle.CLIP_DELETING:
                continue  # recorded already (never twice)
            gone: list[str] = []
            size = 0
            late = 0
            for (h, device, seq, prev, index, start, end, nbytes, received, receipt, key,
                 wrapped_at_ingest) in segments.get(clip_id, []):
                if key not in destroyed and self.blobs.exists(key):
                    late += 1  # arrived after this batch was shredded: it stays, the clip is held again
                    continue
                # The digest taken at ingest is the authority; the one read back while shredding only
                # stands in for segments held before it was recorded (a resumed shred reads zeros).
                wrapped = wrapped_at_ingest or destroyed.get(key) or ""
                tombstones.append((h, device, seq, prev, clip_id, index, start, end, nbytes, received, receipt,
                                   wrapped, record.category, at, sweep_id))
                gone.append(h)
                size += nbytes
            gone_all.extend(gone)
            states.append((lifecycle.CLIP_HELD if late else lifecycle.CLIP_DELETED, None if late else at, clip_id))
            if late:
                released.append(clip_id)  # what arrived late is held from its arrival, with the notice week
            entries.append({"actor": self.actor, "action": "delete", "target": f"clip:{clip_id}", "at": when(at),
                            "detail": {
                "sweep": sweep_id, "category": record.category, "recorded": iso_utc(record.recorded_utc_us),
                "due": iso_utc(due_utc_us(self.policy, record.facts())), **segments_detail(gone), "bytes": size,
                "wrapped_keys_destroyed": len(gone), "kept_late_segments": late,
                "export_copies_removed": export_copies.get(clip_id, 0), "views_removed": views.get(clip_id, 0),
            }})
            report.deleted_clips.append(clip_id)
            report.deleted_segments += len(gone)
            report.bytes_freed += size
            report.kept_late_segments += late
        if tombstones:
            db.executemany(
                "INSERT INTO tombstones (segment_hash, device_id, sequence, prev_hash, clip_id, segment_index, "
                "start_utc_us, end_utc_us, size, received_utc, receipt, wrapped_key_sha256, category, deleted_utc, "
                "sweep_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tombstones)
            geoindex.delete_tracks(db, gone_all)  # before the segment rows: the index rows refer to them
            db.executemany("DELETE FROM segments WHERE segment_hash = ?", [(h,) for h in gone_all])
        if states:
            db.executemany("UPDATE clips SET state = ?, deleted_utc = ?, shred_begun_utc = NULL "
                           "WHERE clip_id = ? AND state = 'deleting'", states)
        if released:
            lifecycle.record_release(db, released, at)
        audit.append_many(db, entries)


__all__ = ["SWEEP_ACTOR", "SweepReport", "Sweeper", "new_sweep_id"]
