"""A log to attack: a fresh database with the audit schema, filled by the real `append`, and the edits
someone with write access to the database (but not the server key) could make behind the server's back.

The attacker's edits are raw SQL, as they would be with the sqlite3 shell.
`rehash_from` is the careful attacker: after an edit it recomputes every
hash and link from there on, which anyone can do, since the hash has no
secret in it; only a signed checkpoint stands in their way.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from openbwv.sealed.keys import ServerKeyPair
from openbwv.server import audit
from openbwv.server.store import PostgresEngine, parse_database_url
from openbwv.server.store.pg_schema import PG_MIGRATIONS

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)
ACTORS = ("user:alice", "user:bob", "dock:dock-1", "user:carol")
COLUMNS = "seq, at_utc, actor, action, target, outcome, detail, prev_hash, record_hash"
ACTIONS = (audit.Action.UPLOAD, audit.Action.VIEW, audit.Action.DECRYPT, audit.Action.EXPORT, audit.Action.SEARCH)


def new_log(path: Path | str = ":memory:") -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit, as in MetadataStore) with SCHEMA applied."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    for statement in audit.SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    return db


def new_pg_log(url: str):
    """A PostgreSQL database (empty, at `url`) with the audit schema, through the server's own connection
    (server/store/engines.py: autocommit, transactions explicit, ``?`` placeholders)."""
    db = PostgresEngine(parse_database_url(url)).writer()
    for statement in PG_MIGRATIONS[4].split(";"):
        if statement.strip():
            db.execute(statement)
    return db


def fill(db: sqlite3.Connection, n: int, *, keys: ServerKeyPair | None = None, checkpoint_every: int = 0,
         start: datetime = T0) -> list[audit.Checkpoint]:
    """Append `n` ordinary records (one a second from `start`), signing a checkpoint every `checkpoint_every`
    records when `keys` are given; return the checkpoints signed."""
    signed = []
    last = audit.head(db)
    first = last.seq if last else 0
    db.execute("BEGIN IMMEDIATE")
    for i in range(n):
        k = first + i
        audit.append(db, actor=ACTORS[k % len(ACTORS)], action=ACTIONS[k % len(ACTIONS)],
                     target=f"{k % 37:064x}", detail={"clip": f"clip-{k % 11}", "n": k},
                     at=start + timedelta(seconds=k))
        if keys is not None and checkpoint_every and (i + 1) % checkpoint_every == 0:
            signed.append(sign(db, keys, at=start + timedelta(seconds=k)))
    db.execute("COMMIT")
    return signed


def sign(db: sqlite3.Connection, keys: ServerKeyPair, *, at: datetime | None = None) -> audit.Checkpoint:
    """A checkpoint now (inside the open transaction, or one of its own)."""
    own = not db.in_transaction
    if own:
        db.execute("BEGIN IMMEDIATE")
    cp = audit.checkpoint(db, keys.sign, keys.public.key_id, at=at)
    if own:
        db.execute("COMMIT")
    assert cp is not None
    return cp


def checkpoint_now(db: sqlite3.Connection, keys: ServerKeyPair) -> audit.Checkpoint | None:
    db.execute("BEGIN IMMEDIATE")
    try:
        return audit.checkpoint(db, keys.sign, keys.public.key_id)
    finally:
        db.execute("COMMIT")


def row(db: sqlite3.Connection, seq: int) -> audit.AuditRecord:
    return audit.AuditRecord(*db.execute(f"SELECT {COLUMNS} FROM audit_log WHERE seq = ?",
                                         (seq,)).fetchone())


# --------------------------------------------------------------------------- the attacker
def set_field(db: sqlite3.Connection, seq: int, column: str, value: object) -> None:
    db.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = ?", (value, seq))


def delete(db: sqlite3.Connection, *seqs: int) -> None:
    db.executemany("DELETE FROM audit_log WHERE seq = ?", [(s,) for s in seqs])


def truncate(db: sqlite3.Connection, after: int, *, checkpoints_too: bool = False) -> None:
    db.execute("DELETE FROM audit_log WHERE seq > ?", (after,))
    if checkpoints_too:
        db.execute("DELETE FROM audit_checkpoints WHERE size > ?", (after,))


def renumber(db: sqlite3.Connection, from_seq: int, by: int) -> None:
    """Shift every seq >= from_seq by `by` (through a far offset, so the primary key never collides)."""
    far = 1_000_000_000
    db.execute("UPDATE audit_log SET seq = seq + ? WHERE seq >= ?", (far, from_seq))
    db.execute("UPDATE audit_log SET seq = seq - ? + ? WHERE seq >= ?", (far, by, far))


def swap_seqs(db: sqlite3.Connection, a: int, b: int) -> None:
    """Exchange two records' places: the row that was `a` becomes `b` and the other way round."""
    far = 1_000_000_000
    db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (far, a))
    db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (a, b))
    db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (b, far))


def insert_raw(db: sqlite3.Connection, rec: audit.AuditRecord) -> None:
    db.execute(f"INSERT INTO audit_log ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (rec.seq, rec.at_utc, rec.actor, rec.action, rec.target, rec.outcome, rec.detail, rec.prev_hash,
                rec.record_hash))


def rehash_from(db: sqlite3.Connection, seq: int) -> None:
    """Make the chain self-consistent again from `seq` on: relink and rehash every later record."""
    prev_row = db.execute("SELECT record_hash FROM audit_log WHERE seq < ? ORDER BY seq DESC LIMIT 1",
                          (seq,)).fetchone()
    prev = prev_row[0] if prev_row else audit.GENESIS_HASH
    for rec in [audit.AuditRecord(*r) for r in
                db.execute(f"SELECT {COLUMNS} FROM audit_log WHERE seq >= ? ORDER BY seq", (seq,))]:
        h = audit.record_hash(rec.seq, rec.at_utc, rec.actor, rec.action, rec.target, rec.outcome, rec.detail, prev)
        db.execute("UPDATE audit_log SET prev_hash = ?, record_hash = ? WHERE seq = ?", (prev, h, rec.seq))
        prev = h


def kinds(report: audit.VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


def at(report: audit.VerifyReport, seq: int) -> list[str]:
    """The kinds of problem reported against record `seq`."""
    return [p.kind for p in report.problems if p.seq == seq]


def messages(report: audit.VerifyReport) -> str:
    return "\n".join(p.message for p in report.problems)

