"""The evidence server's metadata: docks, uploads in progress, held segments.

`MetadataStore` is the one narrow interface the rest of the server uses for
its records, so that PostgreSQL can stand in for SQLite later without the
protocol or ingest code changing.  The schema lives here and only here, as a
list of numbered migrations applied in order; the database records the
version it is at, and a server refuses a database newer than itself rather
than guess.

SQLite is opened in WAL mode with ``synchronous=FULL``: a commit that has
returned survives a power cut, which is what lets an upload's offset be
trusted after a crash (the offset is committed only after its bytes are
fsynced).  Writes go through one connection behind a lock, so each method
is one atomic step; reads use a connection per thread (WAL lets them run
beside a writer), so the event loop never waits for another thread's fsync.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from datetime import datetime
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterator, Union

from . import audit, geoindex, lifecycle, sar, users
from .audit_time import when
from .errors import Conflict, ConfigError, InsufficientStorage, OffsetMismatch, StoreError
from .store import SQLITE, DatabaseUrl, open_engine, parse_database_url, sqlite_url
from .store.pg_schema import PG_MIGRATIONS

# Each migration takes the schema from version N-1 to N.  Never edit one that
# has shipped: add the next.  A migration is SQL text (statements separated by
# ';'), or a function of the connection when converting the data needs Python;
# either way it runs in one transaction with the version it reaches.
Migration = Union[str, Callable[[sqlite3.Connection], None]]


def _run_sql(db: sqlite3.Connection, sql: str) -> None:
    """Each ';'-separated statement in turn, in the caller's transaction (not executescript,
    which commits first)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def _index_tracks_by_span(db: sqlite3.Connection) -> None:
    """Migration 3: the track index by span (geoindex.py) instead of by fix.

    Migration 2 gave every fix a row of ``track_points`` and a box in ``track_rtree``: a
    million ten-second segments were ten million boxes, too slow to fill and to search.  Each
    segment's fixes, in the order they were indexed, become spans of packed fixes
    (``track_spans``) with one box each (``track_span_rtree``); then the per-fix tables go.
    ``segment_tracks`` (status, fix count, note per segment) is kept as it is."""
    _run_sql(db, """
        CREATE TABLE track_spans (
            id            INTEGER PRIMARY KEY,
            segment_hash  TEXT NOT NULL REFERENCES segments(segment_hash),
            first_fix     INTEGER NOT NULL CHECK (first_fix >= 0),
            device_id     TEXT NOT NULL,
            clip_id       TEXT NOT NULL,
            records       BLOB NOT NULL CHECK (length(records) > 0 AND length(records) % 32 = 0),
            UNIQUE (segment_hash, first_fix)
        );
        CREATE VIRTUAL TABLE track_span_rtree USING rtree_i32(id, min_lat, max_lat, min_lon, max_lon, min_t, max_t);
    """)
    points = db.execute(
        "SELECT segment_hash, device_id, clip_id, utc_us, lat, lon, hdop FROM track_points ORDER BY segment_hash, id"
    )
    by_segment = ((segment_hash, list(rows)) for segment_hash, rows in groupby(points, key=itemgetter(0)))
    geoindex.insert_tracks(db, ((segment_hash, rows[0][1], rows[0][2], [geoindex.Fix(*row[3:]) for row in rows])
                                for segment_hash, rows in by_segment))
    _run_sql(db, "DROP TABLE track_rtree; DROP TABLE track_points")


def _record_releases(db: sqlite3.Connection) -> None:
    """Migration 7: when each clip was last released (lifecycle.py), so that a clip whose mark is
    lifted, whose request is closed or which is re-filed into a shorter category spends the notice
    period on the due list before the sweep can take it.

    Clips released before this migration get the latest of: a mark on them lifted, a request that
    held them closed, a category change in the audit trail (any change: the policy that says which
    were shorter is not known here, and counting one too many only keeps a clip a little longer)."""
    _run_sql(db, lifecycle.RELEASES_SCHEMA)
    latest: dict[str, datetime] = {}
    releases = db.execute(
        "SELECT clip_id, lifted_utc FROM evidence_marks WHERE lifted_utc IS NOT NULL "
        "UNION ALL SELECT h.clip_id, r.closed_utc FROM sar_holds h JOIN subject_requests r ON r.id = h.sar_id "
        "WHERE r.status = 'closed' AND r.closed_utc IS NOT NULL "
        "UNION ALL SELECT SUBSTR(target, 6), at_utc FROM audit_log WHERE action = 'category_set' "
        "AND target LIKE 'clip:%'")
    for clip_id, at in releases:
        try:
            t = when(at)
        except ValueError:
            continue  # not a time this server wrote; the notice from arrival still applies
        if clip_id not in latest or t > latest[clip_id]:
            latest[clip_id] = t
    db.executemany("UPDATE clips SET released_utc_us = ? WHERE clip_id = ?",
                   ((geoindex.to_utc_us(t), clip_id) for clip_id, t in latest.items()))


MIGRATIONS: list[tuple[int, Migration]] = [
    (
        1,
        """
        CREATE TABLE docks (
            dock_id       TEXT PRIMARY KEY,
            token_sha256  TEXT NOT NULL UNIQUE,
            created_utc   TEXT NOT NULL
        );
        CREATE TABLE uploads (
            id            TEXT PRIMARY KEY,
            dock          TEXT NOT NULL REFERENCES docks(dock_id),
            metadata      TEXT NOT NULL,
            device_id     TEXT NOT NULL,
            sequence      INTEGER NOT NULL,
            segment_hash  TEXT NOT NULL,
            length        INTEGER NOT NULL CHECK (length > 0),
            "offset"      INTEGER NOT NULL DEFAULT 0 CHECK ("offset" >= 0 AND "offset" <= length),
            state         TEXT NOT NULL DEFAULT 'receiving' CHECK (state IN ('receiving', 'complete')),
            created_utc   TEXT NOT NULL,
            updated_utc   TEXT NOT NULL
        );
        CREATE INDEX uploads_by_hash ON uploads(segment_hash);
        CREATE TABLE segments (
            segment_hash  TEXT PRIMARY KEY,
            device_id     TEXT NOT NULL,
            sequence      INTEGER NOT NULL,
            prev_hash     TEXT NOT NULL,
            clip_id       TEXT NOT NULL,
            segment_index INTEGER NOT NULL,
            start_utc_us  INTEGER NOT NULL,
            end_utc_us    INTEGER NOT NULL,
            size          INTEGER NOT NULL,
            recovered     INTEGER NOT NULL,
            chain_status  TEXT NOT NULL,
            received_utc  TEXT NOT NULL,
            dock          TEXT NOT NULL,
            blob_key      TEXT NOT NULL,
            receipt       TEXT NOT NULL,
            UNIQUE (device_id, sequence)
        );
        """,
    ),
    (
        2,
        # Where footage was recorded (geoindex.py): one row per GNSS fix, the same id in an
        # R*Tree of integer boxes (microdegrees; seconds since 2000-01-01), and per segment
        # whether its track could be read.
        """
        CREATE TABLE segment_tracks (
            segment_hash  TEXT PRIMARY KEY REFERENCES segments(segment_hash),
            status        TEXT NOT NULL,
            fixes         INTEGER NOT NULL,
            note          TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE track_points (
            id            INTEGER PRIMARY KEY,
            segment_hash  TEXT NOT NULL REFERENCES segments(segment_hash),
            device_id     TEXT NOT NULL,
            clip_id       TEXT NOT NULL,
            utc_us        INTEGER NOT NULL,
            lat           REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
            lon           REAL NOT NULL CHECK (lon BETWEEN -180 AND 180),
            hdop          REAL
        );
        CREATE INDEX track_points_by_segment ON track_points(segment_hash);
        CREATE INDEX segments_by_clip ON segments(clip_id);
        CREATE VIRTUAL TABLE track_rtree USING rtree_i32(id, min_lat, max_lat, min_lon, max_lon, min_t, max_t);
        """,
    ),
    (3, _index_tracks_by_span),
    # The audit trail (audit.py): hash-chained records and signed checkpoints.
    (4, audit.SCHEMA),
    # The lifecycle (lifecycle.py, sar.py): clips, categories, marks, requests and their holds,
    # tombstones; and per segment the digest of its wrapped key, for the tombstone of a shred.
    (5, lifecycle.SCHEMA + ";\n" + sar.SCHEMA + ";\nALTER TABLE segments ADD COLUMN wrapped_key_sha256 TEXT"),
    # Staff accounts and their tokens (users.py).
    (6, users.SCHEMA),
    # When each clip was last released from what kept it (lifecycle.py), and the clips a camera
    # running ahead recorded, indexed for subject access holds (sar.py).
    (7, _record_releases),
    # When the sweep began shredding a clip (sweep.py): from then on no hold can save it, so none is
    # taken (sar.py), and a resumed sweep knows to finish rather than abandon it.
    (8, "ALTER TABLE clips ADD COLUMN shred_begun_utc TEXT"),
    # Requests from the public page (sar.py): where a request came from, the keyed tag of the client
    # that sent it (the rate limit), and who verified the requester.
    (9, sar.PUBLIC_SCHEMA),
]
MIGRATIONS.sort(key=lambda m: m[0])
if [m[0] for m in MIGRATIONS] != list(range(1, len(MIGRATIONS) + 1)):
    raise RuntimeError(f"schema migrations must be numbered 1..N without gaps, got {[m[0] for m in MIGRATIONS]}")
SCHEMA_VERSION = MIGRATIONS[-1][0]
if sorted(PG_MIGRATIONS) != [m[0] for m in MIGRATIONS]:
    raise RuntimeError(f"every schema migration needs its PostgreSQL side (server/store/pg_schema.py): SQLite has "
                       f"{[m[0] for m in MIGRATIONS]}, PostgreSQL {sorted(PG_MIGRATIONS)}")

UPLOAD_RECEIVING = "receiving"
UPLOAD_COMPLETE = "complete"
CHAIN_LINKED = "linked"


def gap_status(after_sequence: int) -> str:
    """The chain status of a segment that arrived with segments missing before it."""
    return f"gap after {after_sequence}"


@dataclass(frozen=True)
class UploadRecord:
    """One tus upload: who is sending what, how long it is, and how much is durably written."""

    id: str
    dock: str
    metadata: dict[str, str]
    device_id: str
    sequence: int
    segment_hash: str
    length: int
    offset: int = 0
    state: str = UPLOAD_RECEIVING
    created_utc: str = ""
    updated_utc: str = ""

    @property
    def complete(self) -> bool:
        return self.state == UPLOAD_COMPLETE


@dataclass(frozen=True)
class SegmentRecord:
    """A held segment: what was verified about it, where its bytes are, and the receipt issued."""

    segment_hash: str
    device_id: str
    sequence: int
    prev_hash: str
    clip_id: str
    segment_index: int
    start_utc_us: int
    end_utc_us: int
    size: int
    recovered: bool
    chain_status: str
    received_utc: str
    dock: str
    blob_key: str
    receipt: str  # the issued receipt document, canonical JSON

    def public(self) -> dict:
        """What a dock may learn about a held segment (not where the server keeps it)."""
        return {
            "segment_hash": self.segment_hash,
            "device_id": self.device_id,
            "sequence": self.sequence,
            "prev_hash": self.prev_hash,
            "clip_id": self.clip_id,
            "segment_index": self.segment_index,
            "start_utc_us": self.start_utc_us,
            "end_utc_us": self.end_utc_us,
            "size": self.size,
            "recovered": self.recovered,
            "chain_status": self.chain_status,
            "received_utc": self.received_utc,
            "dock": self.dock,
        }


@dataclass(frozen=True)
class DeviceSummary:
    device_id: str
    segments: int
    lowest: int
    highest: int
    flagged: list[tuple[int, str]] = field(default_factory=list)  # (sequence, chain status) not "linked"


_SEGMENT_COLUMNS = (
    "segment_hash, device_id, sequence, prev_hash, clip_id, segment_index, start_utc_us, end_utc_us, "
    "size, recovered, chain_status, received_utc, dock, blob_key, receipt"
)
_UPLOAD_COLUMNS = 'id, dock, metadata, device_id, sequence, segment_hash, length, "offset", state, created_utc, updated_utc'


def _segment(row: tuple | None) -> SegmentRecord | None:
    if row is None:
        return None
    values = list(row)
    values[9] = bool(values[9])
    return SegmentRecord(*values)


def _upload(row: tuple | None) -> UploadRecord | None:
    if row is None:
        return None
    values = list(row)
    values[2] = json.loads(values[2])
    return UploadRecord(*values)


class _NoLock:
    def close(self) -> None:
        pass


def _unindexed_sql(retry_unreadable: bool) -> tuple[str, tuple]:
    """FROM/WHERE of the held segments without an indexed track, and its arguments."""
    sql = ("FROM segments s LEFT JOIN segment_tracks t ON t.segment_hash = s.segment_hash "
           "WHERE (t.segment_hash IS NULL" + (" OR t.status = ?)" if retry_unreadable else ")"))
    return sql, ((geoindex.TRACK_UNREADABLE,) if retry_unreadable else ())


class MetadataStore:
    """The server's records in SQLite (WAL, synchronous=FULL) or PostgreSQL, safe to call from any thread.

    `where` is a database URL (server/store/url.py) or, as before, the path of an SQLite file.
    `local_dir` is where this node keeps the files that are its own whichever engine holds the
    metadata (decrypted views, the sweep's lock file): BWV_HOME/server; by default the SQLite
    file's folder, which is that."""

    def __init__(self, where: Path | str | DatabaseUrl, *, local_dir: Path | None = None):
        if isinstance(where, DatabaseUrl):
            url = where
        elif isinstance(where, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", where):
            url = parse_database_url(where)
        else:
            url = sqlite_url(Path(where))
        self.url = url
        self.engine = open_engine(url)
        self.path = url.path  # None on PostgreSQL
        self._local_dir = Path(local_dir) if local_dir is not None else url.path.parent if url.path else None
        self._db = self.engine.writer()
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list = []
        self._migrate()

    @property
    def local_dir(self) -> Path:
        if self._local_dir is None:
            raise ConfigError(f"{self.engine.shown}: this store was opened without the node's local folder")
        return self._local_dir

    @property
    def engine_name(self) -> str:
        """"sqlite" or "postgresql": for the few places whose SQL must differ (server/store says which)."""
        return self.engine.name

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if not self.engine.usable(self._db):
                self._db = self.engine.writer()  # PostgreSQL restarted or the link dropped: a fresh one
            try:
                self.engine.begin(self._db)
            except self.engine.Error as e:
                raise StoreError(f"evidence database {self.engine.shown}: {e}") from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                if self.engine.usable(self._db) and self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if self.engine.is_full(e):
                    raise InsufficientStorage(f"evidence database {self.engine.shown}: {e}") from None
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """A read on this thread's connection.  A read that fails because the connection broke
        (PostgreSQL restarted, or failed over to its standby, since the last read) is asked once
        more on a fresh connection: reads change nothing, so the retry is safe, and without it the
        first request on each thread after a restart would fail."""
        for attempt in (1, 2):
            conn = self._reader()
            try:
                return conn.execute(sql, args).fetchall()
            except self.engine.Error as e:
                if attempt == 1 and not self.engine.usable(conn):
                    continue
                raise StoreError(f"evidence database {self.engine.shown}: {e}") from None
        raise AssertionError("unreachable")

    def transaction(self) -> "contextmanager[sqlite3.Connection]":
        """One write transaction (BEGIN IMMEDIATE on SQLite): for the lifecycle modules, which take the
        connection and append their audit records in it."""
        return self._transaction()

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (never waits for a writer)."""
        return self._reader()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self.engine.usable(conn):
            conn = None
        if conn is None:
            conn = self.engine.reader()
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION one numbered step at a time, each step in one transaction
        with the version it reaches; the version is read again inside each (under the engine's schema
        lock), so several nodes starting at once on one PostgreSQL each find the work done or do it once."""
        steps = dict(MIGRATIONS) if self.engine.name == SQLITE else PG_MIGRATIONS
        while True:
            with self._transaction() as db:
                self.engine.lock_schema(db)
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = db.execute("SELECT version FROM schema_version").fetchone()
                current = row[0] if row else 0
                if row is None:
                    db.execute("INSERT INTO schema_version (version) VALUES (0)")
                if current > SCHEMA_VERSION:
                    raise ConfigError(
                        f"{self.engine.shown} is at schema version {current}, this server knows up to "
                        f"{SCHEMA_VERSION}: it was written by a newer OpenBWV; upgrade this server rather "
                        "than risk the records")
                if current == SCHEMA_VERSION:
                    return
                migration = steps[current + 1]
                if callable(migration):
                    migration(db)
                else:
                    _run_sql(db, migration)
                db.execute("UPDATE schema_version SET version = ?", (current + 1,))

    def hold_exclusive(self, key: int):
        """One holder at a time of `key` across every process on this database, or None if another holds
        it; the holder's close() releases it.  On PostgreSQL a session advisory lock on a connection of
        its own, which the server releases if this process dies; on SQLite, where every process on the
        file is on this machine, the callers' own lock files already do this, and a holder that holds
        nothing is returned."""
        if self.engine.name == SQLITE:
            return _NoLock()
        conn = self.engine.writer()
        try:
            (got,) = conn.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return None
        return conn

    @property
    def schema_version(self) -> int:
        return self._query("SELECT version FROM schema_version")[0][0]

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._db.close()

    # ------------------------------------------------------------------ docks
    def add_dock(self, dock_id: str, token_sha256: str, created_utc: str, *, replace: bool = False) -> None:
        """Record a dock's token digest; an existing dock keeps its token unless `replace`."""
        with self._transaction() as db:
            exists = db.execute("SELECT 1 FROM docks WHERE dock_id = ?", (dock_id,)).fetchone()
            if exists and not replace:
                raise Conflict(f"dock {dock_id!r} already has a token; use --rotate to replace it")
            db.execute(
                "INSERT INTO docks (dock_id, token_sha256, created_utc) VALUES (?, ?, ?) "
                "ON CONFLICT(dock_id) DO UPDATE SET token_sha256 = excluded.token_sha256, "
                "created_utc = excluded.created_utc",
                (dock_id, token_sha256, created_utc),
            )

    def dock_for_token(self, token_sha256: str) -> str | None:
        rows = self._query("SELECT dock_id FROM docks WHERE token_sha256 = ?", (token_sha256,))
        return rows[0][0] if rows else None

    def docks(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._query("SELECT dock_id, created_utc FROM docks ORDER BY dock_id")]

    # ------------------------------------------------------------------ uploads
    def create_upload(self, rec: UploadRecord) -> None:
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.id, rec.dock, json.dumps(rec.metadata, sort_keys=True), rec.device_id, rec.sequence,
                 rec.segment_hash, rec.length, rec.offset, rec.state, rec.created_utc, rec.updated_utc),
            )

    def upload(self, upload_id: str) -> UploadRecord | None:
        rows = self._query(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = ?", (upload_id,))
        return _upload(rows[0] if rows else None)

    def uploads(self) -> list[UploadRecord]:
        return [_upload(r) for r in self._query(f"SELECT {_UPLOAD_COLUMNS} FROM uploads ORDER BY created_utc, id")]

    def set_upload_offset(self, upload_id: str, offset: int, updated_utc: str, *,
                          expected: int | None = None) -> None:
        """Record how many bytes of an upload are durably written (call only after the fsync).

        With `expected`, only if the offset is still that (compare and set): on a fleet two nodes may
        be given PATCHes of one upload at once (a dock that failed over while its old connection was
        still streaming), and the second to commit must not move the offset over bytes it did not
        write.  It gets OffsetMismatch (409), and the dock HEADs for the offset."""
        with self._transaction() as db:
            sql = 'UPDATE uploads SET "offset" = ?, updated_utc = ? WHERE id = ? AND state = ?'
            args: tuple = (offset, updated_utc, upload_id, UPLOAD_RECEIVING)
            if expected is not None:
                sql, args = sql + ' AND "offset" = ?', (*args, expected)
            changed = db.execute(sql, args).rowcount
        if changed != 1:
            row = self.upload(upload_id) if expected is not None else None
            if row is not None and not row.complete and row.offset != expected:
                raise OffsetMismatch(
                    f"upload {upload_id} moved on to offset {row.offset} while this request wrote from "
                    f"{expected} (another request of the same upload, on another node?); HEAD the upload "
                    "for its offset and send from there")
            raise StoreError(f"upload {upload_id} vanished while its offset was being recorded")

    def delete_upload(self, upload_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    def stale_uploads(self, before_utc: str) -> list[UploadRecord]:
        """Unfinished uploads whose last committed byte (or creation) is older than `before_utc`."""
        return [_upload(r) for r in self._query(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE state = ? AND updated_utc < ? ORDER BY updated_utc, id",
            (UPLOAD_RECEIVING, before_utc))]

    def forget_completed_uploads(self, before_utc: str) -> int:
        """Drop the rows of uploads completed before `before_utc` (their segments stay held)."""
        with self._transaction() as db:
            return db.execute("DELETE FROM uploads WHERE state = ? AND updated_utc < ?",
                              (UPLOAD_COMPLETE, before_utc)).rowcount

    # ------------------------------------------------------------------ segments
    def segment(self, segment_hash: str) -> SegmentRecord | None:
        rows = self._query(f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE segment_hash = ?", (segment_hash,))
        return _segment(rows[0] if rows else None)

    def segment_at(self, device_id: str, sequence: int) -> SegmentRecord | None:
        rows = self._query(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE device_id = ? AND sequence = ?", (device_id, sequence)
        )
        return _segment(rows[0] if rows else None)

    def tombstone_at(self, device_id: str, sequence: int) -> tuple[str, str] | None:
        """(segment hash, deleted when) if the device's segment `sequence` was deleted by policy."""
        rows = self._query("SELECT segment_hash, deleted_utc FROM tombstones WHERE device_id = ? AND sequence = ?",
                           (device_id, sequence))
        return tuple(rows[0]) if rows else None

    def tombstone_receipt(self, segment_hash: str) -> tuple[str, int, str, str] | None:
        """(device, sequence, receipt, deleted when) of a segment deleted by policy, by its hash: the
        receipt the server issued when it took the segment in, which stays true of that moment."""
        rows = self._query("SELECT device_id, sequence, receipt, deleted_utc FROM tombstones WHERE segment_hash = ?",
                           (segment_hash,))
        return tuple(rows[0]) if rows else None

    def neighbours(self, device_id: str, sequence: int) -> tuple[SegmentRecord | None, SegmentRecord | None]:
        """The device's segments just before and just after `sequence`: held ones, or the
        tombstones of ones deleted by policy (a deleted segment still links its chain)."""
        before, after = self._held_neighbours(device_id, sequence)
        for row in self._query(
            "SELECT segment_hash, device_id, sequence, prev_hash, clip_id, segment_index, start_utc_us, end_utc_us, "
            "size, 0, 'deleted by policy', received_utc, '', '', receipt FROM tombstones WHERE device_id = ? AND "
            "sequence = (SELECT MAX(sequence) FROM tombstones WHERE device_id = ? AND sequence < ?) "
            "UNION ALL "
            "SELECT segment_hash, device_id, sequence, prev_hash, clip_id, segment_index, start_utc_us, end_utc_us, "
            "size, 0, 'deleted by policy', received_utc, '', '', receipt FROM tombstones WHERE device_id = ? AND "
            "sequence = (SELECT MIN(sequence) FROM tombstones WHERE device_id = ? AND sequence > ?)",
            (device_id, device_id, sequence, device_id, device_id, sequence),
        ):
            t = _segment(row)
            if t.sequence < sequence and (before is None or t.sequence > before.sequence):
                before = t
            elif t.sequence > sequence and (after is None or t.sequence < after.sequence):
                after = t
        return before, after

    def _held_neighbours(self, device_id: str, sequence: int) -> tuple[SegmentRecord | None, SegmentRecord | None]:
        before = self._query(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE device_id = ? AND sequence < ? "
            "ORDER BY sequence DESC LIMIT 1",
            (device_id, sequence),
        )
        after = self._query(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE device_id = ? AND sequence > ? "
            "ORDER BY sequence ASC LIMIT 1",
            (device_id, sequence),
        )
        return _segment(before[0] if before else None), _segment(after[0] if after else None)

    def add_segment(
        self,
        rec: SegmentRecord,
        *,
        upload_id: str | None = None,
        successor_status: tuple[str, str] | None = None,
        track: geoindex.SegmentTrack | None = None,
        wrapped_key_sha256: str | None = None,
    ) -> None:
        """Record a held segment in one transaction: the row, its clip's lifecycle record, its
        holds for the subject access requests not closed whose window it was recorded in, its
        indexed `track`, the re-evaluated status of the segment after it (`successor_status` =
        (its hash, new status)), the upload marked complete, and the audit record of the upload."""
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO segments ({_SEGMENT_COLUMNS}) VALUES ({', '.join('?' * 15)})",
                (rec.segment_hash, rec.device_id, rec.sequence, rec.prev_hash, rec.clip_id, rec.segment_index,
                 rec.start_utc_us, rec.end_utc_us, rec.size, int(rec.recovered), rec.chain_status,
                 rec.received_utc, rec.dock, rec.blob_key, rec.receipt),
            )
            if wrapped_key_sha256 is not None:
                db.execute("UPDATE segments SET wrapped_key_sha256 = ? WHERE segment_hash = ?",
                           (wrapped_key_sha256, rec.segment_hash))
            received_us = geoindex.to_utc_us(datetime.fromisoformat(rec.received_utc))
            lifecycle.record_segment(db, rec.clip_id, rec.device_id, rec.start_utc_us, rec.end_utc_us, received_us)
            audit.append(db, actor=f"dock:{rec.dock}", action="upload", target=f"segment:{rec.segment_hash}",
                         detail={"device": rec.device_id, "sequence": rec.sequence, "clip": rec.clip_id,
                                 "size": rec.size, "chain": rec.chain_status})
            if track is not None:
                geoindex.store_track(db, rec.segment_hash, rec.device_id, rec.clip_id, track)
                # Reading the sealed track unwrapped the segment key with the server's private key.
                audit.append(db, actor="system:ingest", action="key_use", target=f"segment:{rec.segment_hash}",
                             detail={"why": "index the sealed GNSS track", "track": track.status,
                                     "fixes": len(track.fixes)})
            # After the track: a request from the public that is not yet verified holds only clips placed
            # near where it says, or not placed at all (sar.py).
            sar.hold_for_open_requests(db, rec.clip_id, at=rec.received_utc)
            if successor_status is not None:
                db.execute("UPDATE segments SET chain_status = ? WHERE segment_hash = ?",
                           (successor_status[1], successor_status[0]))
            if upload_id is not None:
                self._complete(db, upload_id, rec.received_utc)

    def complete_upload(self, upload_id: str, updated_utc: str) -> None:
        """Mark an upload whose segment is (already) held as complete."""
        with self._transaction() as db:
            self._complete(db, upload_id, updated_utc)

    @staticmethod
    def _complete(db: sqlite3.Connection, upload_id: str, updated_utc: str) -> None:
        db.execute(
            'UPDATE uploads SET state = ?, "offset" = length, updated_utc = ? WHERE id = ?',
            (UPLOAD_COMPLETE, updated_utc, upload_id),
        )

    # ------------------------------------------------------------------ tracks (geoindex.py)
    def search_tracks(self, lat: float, lon: float, radius_m: float, from_utc_us: int,
                      to_utc_us: int) -> list[geoindex.ClipMatch]:
        """Clips with a fix within `radius_m` of (lat, lon) between the two times (both inclusive)."""
        try:
            return geoindex.search(self._reader(), lat, lon, radius_m, from_utc_us, to_utc_us)
        except sqlite3.Error as e:
            raise StoreError(f"evidence database {self.path}: {e}") from None

    def clip_track(self, clip_id: str) -> list[geoindex.TrackSegment]:
        """A clip's held segments in order, each with its fixes; empty if no segment of it is held."""
        try:
            return geoindex.clip_track(self._reader(), clip_id)
        except sqlite3.Error as e:
            raise StoreError(f"evidence database {self.path}: {e}") from None

    def track_status(self, segment_hash: str) -> tuple[str, int, str] | None:
        """(status, fixes indexed, note) of a held segment's track; None if not recorded."""
        rows = self._query("SELECT status, fixes, note FROM segment_tracks WHERE segment_hash = ?", (segment_hash,))
        return tuple(rows[0]) if rows else None

    def count_unindexed(self, *, retry_unreadable: bool = False) -> int:
        """Held segments the track index does not cover (with `retry_unreadable`: or whose track was unreadable)."""
        sql, args = _unindexed_sql(retry_unreadable)
        return self._query("SELECT COUNT(*) " + sql, args)[0][0]

    def unindexed_segments(self, *, retry_unreadable: bool = False, after_hash: str = "",
                           limit: int = 1_000_000_000) -> list[tuple[str, str, str, str]]:
        """(segment hash, device, clip, blob key) of held segments the index does not cover, in hash order
        after `after_hash`: a page at a time (keyset paging works alike on both engines, and a page stays
        correct while ingest and the sweep change the table beside it)."""
        sql, args = _unindexed_sql(retry_unreadable)
        return [tuple(r) for r in self._query(
            "SELECT s.segment_hash, s.device_id, s.clip_id, s.blob_key " + sql
            + " AND s.segment_hash > ? ORDER BY s.segment_hash LIMIT ?", (*args, after_hash, limit))]

    def device_summaries(self) -> list[DeviceSummary]:
        rows = self._query(
            "SELECT device_id, COUNT(*), MIN(sequence), MAX(sequence) FROM segments GROUP BY device_id ORDER BY device_id"
        )
        flagged: dict[str, list[tuple[int, str]]] = {}
        for device_id, sequence, status in self._query(
            "SELECT device_id, sequence, chain_status FROM segments WHERE chain_status != ? ORDER BY device_id, sequence",
            (CHAIN_LINKED,),
        ):
            flagged.setdefault(device_id, []).append((sequence, status))
        return [DeviceSummary(d, n, lo, hi, flagged.get(d, [])) for d, n, lo, hi in rows]


__all__ = [
    "CHAIN_LINKED",
    "DeviceSummary",
    "MetadataStore",
    "SCHEMA_VERSION",
    "SegmentRecord",
    "UPLOAD_COMPLETE",
    "UPLOAD_RECEIVING",
    "UploadRecord",
    "gap_status",
]
