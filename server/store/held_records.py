"""Read-only access to what an evidence server's database says it holds and deleted, on either engine.

`bwv verify` reads the tombstones (and the audit records of the deletions) to
tell a gap left by the retention sweep from missing evidence, and with
``--held`` lists every held segment to verify it from the blob store.  It must
never change a record and must run beside live server nodes, so it does not
open `MetadataStore` (which brings the schema up to date, a write): SQLite is
opened with ``mode=ro`` and PostgreSQL with ``default_transaction_read_only``,
and a database from before a table existed simply has no rows of it.  Any
failure to read is one `RecordsUnreadable` naming the database, whichever
engine raised it, so the verifier reports it and goes on judging the files.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterator

from .engines import PostgresEngine
from .url import SQLITE, DatabaseUrl


class RecordsUnreadable(Exception):
    """The database could not be opened or read (the message names it and says why)."""


@dataclass(frozen=True)
class TombstoneRow:
    sequence: int
    segment_hash: str
    prev_hash: str
    deleted_utc: str
    sweep_id: str
    clip_id: str


@dataclass(frozen=True)
class HeldRow:
    segment_hash: str
    device_id: str
    sequence: int
    blob_key: str


class HeldRecords:
    """One read-only connection to the metadata database at `url`, opened at first use."""

    def __init__(self, url: DatabaseUrl):
        self.url = url
        self._db = None

    @property
    def shown(self) -> str:
        return self.url.shown

    def _connection(self):
        if self._db is None:
            try:
                if self.url.engine == SQLITE:
                    self._db = sqlite3.connect(f"{self.url.path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
                else:
                    self._db = PostgresEngine(self.url).reader()
            except Exception as e:  # noqa: BLE001 - sqlite3.Error, ConfigError from psycopg's refusal
                raise RecordsUnreadable(f"cannot open {self.shown} read-only: {e}") from None
        return self._db

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The rows of a query; none when its table does not exist yet (an older schema)."""
        db = self._connection()
        try:
            return [tuple(r) for r in db.execute(sql, args).fetchall()]
        except Exception as e:  # noqa: BLE001 - either engine's error class
            text = str(e)
            if "no such table" in text or type(e).__name__ == "UndefinedTable":
                return []
            raise RecordsUnreadable(f"cannot read {self.shown}: {text.strip()}") from None

    def tombstones_between(self, device_id: str, after: int, before: int) -> list[TombstoneRow]:
        """The device's tombstones with `after` < sequence < `before`, in sequence order."""
        return [TombstoneRow(int(seq), str(h).lower(), str(prev).lower(), str(deleted), str(sweep), str(clip))
                for seq, h, prev, deleted, sweep, clip in self._rows(
                    "SELECT sequence, segment_hash, prev_hash, deleted_utc, sweep_id, clip_id FROM tombstones "
                    "WHERE device_id = ? AND sequence > ? AND sequence < ? ORDER BY sequence",
                    (device_id, after, before))]

    def deletion_audit_records(self, clip_id: str) -> list[tuple]:
        """The `delete` audit records of a clip, as the columns `record_hash` takes, then the stored hash."""
        return self._rows(
            "SELECT seq, at_utc, actor, action, target, outcome, detail, prev_hash, record_hash FROM audit_log "
            "WHERE action = 'delete' AND target = ? AND outcome = 'ok' ORDER BY seq", (f"clip:{clip_id}",))

    def has_audit_trail(self) -> bool:
        """Whether the database has an audit trail at all (one from before it has no table of it)."""
        db = self._connection()
        try:
            db.execute("SELECT 1 FROM audit_log LIMIT 1").fetchall()
            return True
        except Exception:  # noqa: BLE001 - "no such table" / UndefinedTable, whichever engine
            return False

    def swept_hashes(self, clip_id: str, sweep_id: str) -> list[str]:
        """The hashes one sweep's tombstones of one clip record, in sequence order."""
        return [h for (h,) in self._rows(
            "SELECT segment_hash FROM tombstones WHERE clip_id = ? AND sweep_id = ? ORDER BY sequence",
            (clip_id, sweep_id))]

    def held_segments(self, page: int = 1000) -> Iterator[HeldRow]:
        """Every held segment, a page at a time in hash order (so a million never sit in memory at once
        as rows, and a segment the sweep deletes meanwhile is simply not listed any more)."""
        after = ""
        while rows := self._rows("SELECT segment_hash, device_id, sequence, blob_key FROM segments "
                                 "WHERE segment_hash > ? ORDER BY segment_hash LIMIT ?", (after, page)):
            for h, device, seq, key in rows:
                yield HeldRow(str(h), str(device), int(seq), str(key))
            after = rows[-1][0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


__all__ = ["HeldRecords", "HeldRow", "RecordsUnreadable", "TombstoneRow"]
