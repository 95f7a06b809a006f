"""The two metadata engines behind one small connection interface.

The server's modules take a connection and run SQL on it with ``?``
placeholders, the DB-API style SQLite uses (``execute``, ``executemany``,
``fetchone``, ``fetchall``, iteration, ``rowcount``, ``in_transaction``).
On PostgreSQL the same calls go through `PgConnection`, which gives a psycopg 3
connection that face: it numbers the placeholders (``$1``, ``$2`` ...: psycopg's
raw cursor, so a ``%`` in a LIKE pattern means what it says) and passes values
as they are, so a query written once runs on both engines wherever its SQL is
common to both (most of it: the repositories keep what differs side by side).

Each engine opens a writer connection (used behind the store's lock, one
transaction at a time) and read connections (one per thread, autocommit, so
each read sees the latest commit and never holds a snapshot open).
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..errors import ConfigError, StoreError
from .url import POSTGRESQL, SQLITE, DatabaseUrl


@lru_cache(maxsize=4096)
def numbered_placeholders(sql: str) -> str:
    """`sql` with each ``?`` outside quotes and comments as ``$1``, ``$2``, ... in order."""
    out: list[str] = []
    n = 0
    i = 0
    length = len(sql)
    while i < length:
        c = sql[i]
        if c in "'\"":
            end = i + 1
            while end < length:
                if sql[end] == c:
                    if end + 1 < length and sql[end + 1] == c:  # '' or "" inside: an escaped quote
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i:end + 1])
            i = end + 1
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = length if end < 0 else end
            out.append(sql[i:end])
            i = end
        elif c == "?":
            n += 1
            out.append(f"${n}")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


_SQLITE_BEGIN = {"BEGIN IMMEDIATE", "BEGIN EXCLUSIVE", "BEGIN DEFERRED"}


def _value(v: Any) -> Any:
    # SQLite keeps booleans as 0/1 in INTEGER columns; PostgreSQL would refuse a boolean there.
    return int(v) if isinstance(v, bool) else v


class PgCursor:
    """The results of one statement, shaped like sqlite3's cursor."""

    def __init__(self, cursor):
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> None:
        raise StoreError("lastrowid is SQLite's: use INSERT ... RETURNING id, which both engines answer")

    @property
    def description(self):
        return self._cursor.description

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone() if self._cursor.description is not None else None

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def fetchmany(self, size: int = 1) -> list[tuple]:
        return self._cursor.fetchmany(size) if self._cursor.description is not None else []

    def __iter__(self) -> Iterator[tuple]:
        if self._cursor.description is None:
            return iter(())
        return iter(self._cursor)


class PgConnection:
    """A psycopg 3 connection with the calls the server's modules make on a sqlite3 one."""

    engine = POSTGRESQL

    def __init__(self, conn):
        self._conn = conn

    @property
    def raw(self):
        """The psycopg connection itself, for what only PostgreSQL has (COPY, advisory locks)."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    @property
    def closed(self) -> bool:
        return self._conn.closed or self._conn.broken

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        if sql in _SQLITE_BEGIN:
            sql = "BEGIN"  # SQLite's spelling of "a transaction that will write"; PostgreSQL takes locks as it goes
        cur = self._conn.cursor()
        cur.execute(numbered_placeholders(sql), [_value(v) for v in params] if params else None)
        return PgCursor(cur)

    def executemany(self, sql: str, seq_of_params: Iterable[Sequence[Any]]) -> PgCursor:
        cur = self._conn.cursor()
        cur.executemany(numbered_placeholders(sql), ([_value(v) for v in p] for p in seq_of_params))
        return PgCursor(cur)

    def close(self) -> None:
        self._conn.close()


class SqliteEngine:
    """The embedded default: one file, WAL mode, synchronous=FULL."""

    name = SQLITE
    Error = sqlite3.Error

    def __init__(self, url: DatabaseUrl):
        self.url = url
        self.path: Path = url.path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def shown(self) -> str:
        return str(self.path)

    def writer(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ConfigError(f"{self.path}: SQLite would not switch to WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise ConfigError(f"cannot open the evidence database {self.path}: {e}") from None
        return db

    def reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA query_only=ON")
        return conn

    @staticmethod
    def begin(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")

    @staticmethod
    def is_full(e: BaseException) -> bool:
        return isinstance(e, sqlite3.OperationalError) and "full" in str(e)

    @staticmethod
    def usable(conn) -> bool:
        return True

    def lock_schema(self, db) -> None:
        """Nothing to do: BEGIN IMMEDIATE already keeps every other writer out."""


class PostgresEngine:
    """PostgreSQL 15 through psycopg 3: the engine several server nodes share."""

    name = POSTGRESQL

    # Taken (per transaction) while the schema is brought up to date, so two nodes starting at
    # once do not both run a migration.  Any constant both agree on; this one spells "bwvs".
    SCHEMA_LOCK = 0x62777673

    def __init__(self, url: DatabaseUrl):
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a pinned dependency
            raise ConfigError("the PostgreSQL engine needs psycopg 3 (pip install 'psycopg[binary]')") from None
        self._psycopg = psycopg
        self.Error = psycopg.Error
        self.url = url
        self.path = None

    @property
    def shown(self) -> str:
        return self.url.shown

    def _connect(self, *, read_only: bool) -> PgConnection:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self.url.conninfo, autocommit=True, cursor_factory=psycopg.RawCursor,
                                   connect_timeout=10)
            if read_only:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as e:
            raise ConfigError(f"cannot open the evidence database {self.shown}: {str(e).strip()}") from None
        return PgConnection(conn)

    def writer(self) -> PgConnection:
        return self._connect(read_only=False)

    def reader(self) -> PgConnection:
        return self._connect(read_only=True)

    @staticmethod
    def begin(db: PgConnection) -> None:
        db.execute("BEGIN")

    def is_full(self, e: BaseException) -> bool:
        return isinstance(e, self._psycopg.errors.DiskFull)

    @staticmethod
    def usable(conn: PgConnection) -> bool:
        return not conn.closed

    def lock_schema(self, db: PgConnection) -> None:
        db.execute("SELECT pg_advisory_xact_lock(?)", (self.SCHEMA_LOCK,))


Engine = SqliteEngine | PostgresEngine


def open_engine(url: DatabaseUrl) -> Engine:
    if url.engine == SQLITE:
        return SqliteEngine(url)
    if url.engine == POSTGRESQL:
        return PostgresEngine(url)
    raise ConfigError(f"database engine {url.engine!r} is not supported")  # parse_database_url lets none through


__all__ = ["Engine", "PgConnection", "PostgresEngine", "SqliteEngine", "numbered_placeholders", "open_engine"]
