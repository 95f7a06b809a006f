"""The migration's data access: an embedded installation's SQLite read-only, the fleet database written.

`bwv server migrate` (server/migrator.py) copies every record of an embedded
installation into a PostgreSQL database that a fleet will share.  The SQL it
needs is here, on the two connections it holds:

- **The source**, opened read-only and ``immutable`` (`open_source`): nothing
  the migration does can change, delete or even add a file beside it.  Tables are read
  a page at a time in primary-key order (keyset paging), so a million rows
  never sit in memory and a resumed run starts after the last page copied.
- **The destination**, a `MetadataStore` (which creates the schema as any
  node would) written through its transactions.  Every insert is ``ON
  CONFLICT DO NOTHING`` (``clip_stats``, whose single row the schema already
  holds, is an upsert), and each page commits together with the migration's
  progress, in ``migration_progress``: a run killed at any point leaves the
  destination at the end of a page, and no row is ever inserted twice.
- **The migration's own record.**  ``migration_progress`` (one row per step:
  which source, how far each table and the blobs got, when it finished) and
  ``migration_blobs`` (each blob's digest at the source and as re-read from
  the destination store) are created by the migration on the destination,
  not by the server's numbered schema: a server never reads them, and they
  stay as the record of what was moved and checked.

Identity columns (``evidence_marks``, ``device_assignments``,
``sar_exports``) get explicit ids from the source; PostgreSQL's sequences
behind them are moved past the largest (`advance_identity`), or the next
mark on the fleet would collide with a migrated one.  ``track_spans`` ids
are allocated as MAX(id)+1 (geoindex.py), so they need nothing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .sql import is_postgresql


class SourceUnreadable(Exception):
    """The source database could not be opened or read (the message names it and says why)."""


@dataclass(frozen=True)
class TableCopy:
    """One table as the migration copies it: its primary key (the paging order) and which rows."""

    name: str
    key: tuple[str, ...]
    where: str = ""  # rows left out (uploads still receiving: their bytes are this node's, see migrator.py)
    identity: bool = False  # an identity column on PostgreSQL whose sequence must follow the ids copied
    upsert: bool = False  # a row the destination's schema already holds (clip_stats)

    @property
    def filtered(self) -> str:
        return f" WHERE {self.where}" if self.where else ""


# In an order that satisfies every foreign key on the destination; the audit trail last, so that
# the chain arrives after everything it records.
TABLES: tuple[TableCopy, ...] = (
    TableCopy("docks", ("dock_id",)),
    TableCopy("uploads", ("id",), where="state = 'complete'"),
    TableCopy("segments", ("segment_hash",)),
    TableCopy("segment_tracks", ("segment_hash",)),
    TableCopy("track_spans", ("id",)),
    TableCopy("track_span_rtree", ("id",)),
    TableCopy("clips", ("clip_id",)),
    TableCopy("clip_stats", ("id",), upsert=True),
    TableCopy("evidence_marks", ("id",), identity=True),
    TableCopy("tombstones", ("segment_hash",)),
    TableCopy("device_assignments", ("id",), identity=True),
    TableCopy("subject_requests", ("id",)),
    TableCopy("sar_holds", ("sar_id", "clip_id")),
    TableCopy("sar_exports", ("id",), identity=True),
    TableCopy("users", ("username",)),
    TableCopy("user_tokens", ("token_sha256",)),
    TableCopy("audit_checkpoints", ("size",)),
    TableCopy("audit_log", ("seq",)),
)

SEGMENTS = next(t for t in TABLES if t.name == "segments")

# Tables whose rows on a destination mean it already holds an installation (clip_stats always has its row).
_OCCUPANCY = tuple(t.name for t in TABLES if t.name != "clip_stats")

PROGRESS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS migration_progress (step TEXT PRIMARY KEY, value TEXT NOT NULL, "
    "updated_utc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS migration_blobs (segment_hash TEXT PRIMARY KEY, source_sha256 TEXT NOT NULL, "
    "arrived_sha256 TEXT NOT NULL, size BIGINT NOT NULL, verified_utc TEXT NOT NULL)",
)


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


# ---------------------------------------------------------------------------- the source (read-only)
def open_source(path: Path) -> sqlite3.Connection:
    """The embedded database at `path`, read as a still file: nothing, not even SQLite's shared-memory
    index, is created beside it, and a missing file is an error, never a new database.

    A database nobody writes has no write-ahead log (its last connection folded the log in and removed
    it), and is opened ``immutable``, which reads the file alone and writes nothing.  A log with commits
    in it means a server is running on it, or was killed: refused, because a migration must copy a
    database that stands still (one written meanwhile would not reconcile)."""
    path = Path(path)
    if not path.is_file():
        raise SourceUnreadable(f"{path}: no such database file (an embedded installation keeps it at "
                               "BWV_HOME/server/evidence.db)")
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise SourceUnreadable(
            f"{path}: its write-ahead log {wal.name} holds {wal.stat().st_size} bytes of commits not yet folded "
            "into the database: a server (or a bwv command) is writing to it, or was killed. Stop every "
            "`bwv server` on it; after a kill run `bwv server status` once, which folds the log in; then migrate")
    try:
        # check_same_thread off: each worker thread reads on a connection of its own, closed by the owner
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True, timeout=10,
                               check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise SourceUnreadable(f"cannot open {path} read-only: {e}") from None
    return conn


def schema_version(conn) -> int | None:
    """The schema version a database records (None: no schema_version table, not an OpenBWV database)."""
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except Exception:  # noqa: BLE001 - either engine's "no such table"
        return None
    return int(row[0]) if row else 0


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The table's columns at the source, in its order (the destination has the same, by schema version)."""
    cur = conn.execute(f"SELECT * FROM {table} LIMIT 0")
    return [d[0] for d in cur.description]


def count(conn, t: TableCopy, *, upto_seq: int | None = None) -> int:
    where, args = _where(t, upto_seq)
    return int(conn.execute(f"SELECT COUNT(*) FROM {t.name}{where}", args).fetchone()[0])


def _where(t: TableCopy, upto_seq: int | None) -> tuple[str, tuple]:
    clauses = [t.where] if t.where else []
    args: tuple = ()
    if upto_seq is not None and t.name == "audit_log":
        clauses.append("seq <= ?")
        args = (upto_seq,)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def page(conn: sqlite3.Connection, t: TableCopy, cols: Sequence[str], after: Sequence | None,
         limit: int) -> list[tuple]:
    """The next `limit` rows of `t` after primary key `after` (None: from the first), in key order."""
    clauses = [t.where] if t.where else []
    args: list = []
    if after is not None:
        if len(t.key) == 1:
            clauses.append(f"{_q(t.key[0])} > ?")
        else:
            clauses.append(f"({', '.join(map(_q, t.key))}) > ({', '.join('?' * len(t.key))})")
        args += list(after)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    order = ", ".join(map(_q, t.key))
    return [tuple(r) for r in conn.execute(
        f"SELECT {', '.join(map(_q, cols))} FROM {t.name}{where} ORDER BY {order} LIMIT ?", (*args, limit))]


def rows(conn, t: TableCopy, cols: Sequence[str], *, upto_seq: int | None = None) -> Iterator[tuple]:
    """Every row of `t` in no particular order (the reconciliation's digest does not depend on it), with the
    given columns; the audit log only up to `upto_seq` when given (what the source held)."""
    where, args = _where(t, upto_seq)
    return iter(conn.execute(f"SELECT {', '.join(map(_q, cols))} FROM {t.name}{where}", args))


def held_blobs(conn: sqlite3.Connection, after: str, limit: int) -> list[tuple[str, str, str]]:
    """(segment hash, blob key, clip id) of held segments after `after`, in hash order."""
    return [tuple(r) for r in conn.execute(
        "SELECT segment_hash, blob_key, clip_id FROM segments WHERE segment_hash > ? ORDER BY segment_hash LIMIT ?",
        (after, limit))]


def receiving_uploads(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM uploads WHERE state != 'complete'").fetchone()[0])


def audit_head(conn) -> tuple[int, str] | None:
    """(seq, record_hash) of the last audit record."""
    row = conn.execute("SELECT seq, record_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else None


def audit_hash_at(conn, seq: int) -> str | None:
    row = conn.execute("SELECT record_hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return str(row[0]) if row else None


def receipts(conn) -> Iterator[tuple[str, str, int, str, str]]:
    """("held" or "deleted", device, sequence, segment hash, receipt document) of every segment held
    and every tombstone: each keeps the receipt the server signed when it took the segment in."""
    yield from (("held", *r) for r in conn.execute(
        "SELECT device_id, sequence, segment_hash, receipt FROM segments"))
    yield from (("deleted", *r) for r in conn.execute(
        "SELECT device_id, sequence, segment_hash, receipt FROM tombstones"))


# ---------------------------------------------------------------------------- the destination
def ensure_progress_tables(db) -> None:
    """The migration's own tables on the destination (in the caller's transaction)."""
    for statement in PROGRESS_SCHEMA:
        db.execute(statement)


def occupied_tables(db) -> list[str]:
    """The server tables that hold rows on this database: an installation is already there."""
    return [name for name in _OCCUPANCY if db.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone()]


def progress(db) -> dict[str, str]:
    """Every step recorded so far (none: the table does not exist yet).  Ask on a read connection
    (autocommit): on PostgreSQL a failed statement would end the caller's transaction."""
    try:
        return {str(s): str(v) for s, v in db.execute("SELECT step, value FROM migration_progress").fetchall()}
    except Exception:  # noqa: BLE001 - "no such table" / UndefinedTable: no migration began here
        return {}


def set_progress(db, step: str, value: str, at: str) -> None:
    db.execute("INSERT INTO migration_progress (step, value, updated_utc) VALUES (?, ?, ?) "
               "ON CONFLICT (step) DO UPDATE SET value = excluded.value, updated_utc = excluded.updated_utc",
               (step, value, at))


def insert_rows(db, t: TableCopy, cols: Sequence[str], batch: Sequence[Sequence]) -> None:
    """Insert a page of source rows: one that is already there (a page re-copied after a kill) is left."""
    names = ", ".join(map(_q, cols))
    marks = ", ".join("?" * len(cols))
    if t.upsert:
        updates = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in cols if c not in t.key)
        tail = f" ON CONFLICT ({', '.join(map(_q, t.key))}) DO UPDATE SET {updates}"
    else:
        tail = " ON CONFLICT DO NOTHING"
    db.executemany(f"INSERT INTO {t.name} ({names}) VALUES ({marks}){tail}", [tuple(r) for r in batch])


def advance_identity(db, t: TableCopy) -> None:
    """Move the identity sequence of `t` past the largest id copied (PostgreSQL; SQLite's rowid follows)."""
    if t.identity and is_postgresql(db):
        db.execute(f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
                   f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {t.name}), false)")


def record_blob(db, segment_hash: str, source_sha256: str, arrived_sha256: str, size: int, at: str) -> None:
    db.execute("INSERT INTO migration_blobs (segment_hash, source_sha256, arrived_sha256, size, verified_utc) "
               "VALUES (?, ?, ?, ?, ?) ON CONFLICT (segment_hash) DO UPDATE SET "
               "source_sha256 = excluded.source_sha256, arrived_sha256 = excluded.arrived_sha256, "
               "size = excluded.size, verified_utc = excluded.verified_utc",
               (segment_hash, source_sha256, arrived_sha256, size, at))


def arrived_blobs(db) -> Iterator[tuple[str, str]]:
    """(segment hash, digest as re-read from the destination store) of every blob checked on arrival."""
    return iter(db.execute("SELECT segment_hash, arrived_sha256 FROM migration_blobs"))


__all__ = ["PROGRESS_SCHEMA", "SEGMENTS", "SourceUnreadable", "TABLES", "TableCopy", "advance_identity",
           "arrived_blobs", "audit_hash_at", "audit_head", "columns", "count", "ensure_progress_tables", "held_blobs",
           "insert_rows", "occupied_tables", "open_source", "page", "progress", "receipts", "receiving_uploads",
           "record_blob", "rows", "schema_version", "set_progress"]
