"""The audit trail's repository: every query on ``audit_log`` and ``audit_checkpoints``, on both engines.

server/audit.py decides what a record is, how it is hashed and what
verification finds; this module only stores and reads rows, in the caller's
transaction.  What differs between the engines is kept here:

- **One chain with concurrent writers.**  An append reads the head and
  inserts the next record; two transactions doing that at once would both
  link to the same head.  On SQLite the write transaction (BEGIN IMMEDIATE)
  already keeps every other writer out, of any process.  On PostgreSQL
  several server nodes write at once, so an append first takes a
  transaction-scoped advisory lock (`lock_chain`): the next appender, on any
  node, waits for this transaction to commit or roll back and then, reading
  committed data, sees the new head.  The lock is held to the end of the
  transaction, which is what makes the record and the action it records
  commit together in chain order.
- **A consistent read for verification.**  `begin_snapshot` opens a
  read transaction in which the checkpoints and the log are read from one
  snapshot (SQLite: any read transaction; PostgreSQL: REPEATABLE READ).
- **Records as bytes.**  Verification reads every text field as bytes so
  that text written behind the server's back that is not UTF-8 is a finding,
  not a crash (SQLite: CAST AS BLOB; PostgreSQL stores only valid UTF-8 in a
  UTF8 database and gives its bytes by convert_to).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from .sql import is_postgresql

COLUMNS = "seq, at_utc, actor, action, target, outcome, detail, prev_hash, record_hash"
_CHECKPOINT_COLUMNS = "size, head_hash, at_utc, key_id, signature"
_FIELDS = ("at_utc", "actor", "action", "target", "outcome", "detail", "prev_hash", "record_hash")

# The advisory lock every appender takes on PostgreSQL; any constant all nodes agree on ("bwva").
CHAIN_LOCK = 0x62777661


def lock_chain(db) -> None:
    """Keep every other appender out until this transaction ends (PostgreSQL; SQLite already does)."""
    if is_postgresql(db):
        db.execute("SELECT pg_advisory_xact_lock(?)", (CHAIN_LOCK,))


def head_link(db) -> tuple[int, str] | None:
    """(seq, record_hash) of the last record: one step down the primary key, whatever the log's length."""
    row = db.execute("SELECT seq, record_hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def head(db) -> tuple | None:
    return db.execute(f"SELECT {COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()


def insert(db, row: Sequence) -> None:
    """One record, its nine columns in COLUMNS order."""
    db.execute(f"INSERT INTO audit_log ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(row))


def insert_many(db, rows: Iterable[Sequence]) -> None:
    """Records in order, each its nine columns in COLUMNS order (one executemany: pipelined on PostgreSQL)."""
    db.executemany(f"INSERT INTO audit_log ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [tuple(row) for row in rows])


def link_at(db, seq: int) -> tuple[str, str] | None:
    """(record_hash, action) of record `seq`."""
    row = db.execute("SELECT record_hash, action FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return (row[0], row[1]) if row else None


def records_after(db, seq: int) -> Iterator[tuple]:
    """Every record after `seq`, in order."""
    return iter(db.execute(f"SELECT {COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq", (seq,)))


def records_as_bytes(db) -> Iterator[tuple]:
    """Every record in order, seq then each text field as bytes (None where a field is NULL)."""
    if is_postgresql(db):
        fields = ", ".join(f"convert_to({f}, 'UTF8')" for f in _FIELDS)
    else:
        fields = ", ".join(f"CAST({f} AS BLOB)" for f in _FIELDS)
    return iter(db.execute(f"SELECT seq, {fields} FROM audit_log ORDER BY seq"))


def matching(db, where: str, args: Iterable, limit: int | None = None) -> Iterator[tuple]:
    """Records matching `where` (built by audit._filters from fixed column names), in seq order."""
    if limit is None:
        return iter(db.execute(f"SELECT {COLUMNS} FROM audit_log WHERE {where} ORDER BY seq", tuple(args)))
    return iter(db.execute(f"SELECT {COLUMNS} FROM audit_log WHERE {where} ORDER BY seq LIMIT ?",
                           (*args, limit)))


def checkpoints(db) -> list[tuple]:
    return db.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY size").fetchall()


def latest_checkpoint(db) -> tuple | None:
    return db.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY size DESC LIMIT 1").fetchone()


def insert_checkpoint(db, row: Sequence) -> None:
    db.execute(f"INSERT INTO audit_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?)", tuple(row))


def begin_snapshot(db) -> None:
    """A read transaction whose every statement sees one snapshot of the database."""
    db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if is_postgresql(db) else "BEGIN")


__all__ = ["CHAIN_LOCK", "COLUMNS", "begin_snapshot", "checkpoints", "head", "head_link", "insert",
           "insert_checkpoint", "insert_many", "latest_checkpoint", "link_at", "lock_chain", "matching", "records_after",
           "records_as_bytes"]
