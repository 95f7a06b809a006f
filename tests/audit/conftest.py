"""Fixtures: the server key (generated once), a fresh audit database per test, and `check` to verify
it with that key.

`db` is a connection to a fresh database holding the audit schema, once on each engine: SQLite,
then a real PostgreSQL 15 (tests/pg_kit.py, the `pg` fixture of tests/conftest.py) through the store's connection (server/store), so every
test taking it checks the same recording, checkpoints and verification on both.  The property tests
that make hundreds of logs each use SQLite in memory (audit_kit.new_log): what they check is
audit.py's logic, which reads rows through the same repository functions on both engines."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pytest

from openbwv.sealed.keys import ServerKeyPair
from openbwv.server import audit


from .audit_kit import new_log, new_pg_log


@pytest.fixture(scope="session")
def keys() -> ServerKeyPair:
    return ServerKeyPair.generate()


@pytest.fixture(scope="session")
def other_keys() -> ServerKeyPair:
    return ServerKeyPair.generate()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    if request.param == "sqlite":
        conn = new_log(tmp_path / "audit.db")
    else:
        conn = new_pg_log(request.getfixturevalue("pg").new_database())
    yield conn
    conn.close()


@pytest.fixture
def check(db: sqlite3.Connection, keys: ServerKeyPair) -> Callable[..., audit.VerifyReport]:
    def run(external: Iterable[audit.Checkpoint] = ()) -> audit.VerifyReport:
        return audit.verify(db, keys.public.receipt_verifier(), external=external)

    return run
