"""Fixtures: the server key (generated once), a fresh audit database per test, and `check` to verify
it with that key."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pytest

from openbwv.sealed.keys import ServerKeyPair
from openbwv.server import audit

from .audit_kit import new_log


@pytest.fixture(scope="session")
def keys() -> ServerKeyPair:
    return ServerKeyPair.generate()


@pytest.fixture(scope="session")
def other_keys() -> ServerKeyPair:
    return ServerKeyPair.generate()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = new_log(tmp_path / "audit.db")
    yield conn
    conn.close()


@pytest.fixture
def check(db: sqlite3.Connection, keys: ServerKeyPair) -> Callable[..., audit.VerifyReport]:
    def run(external: Iterable[audit.Checkpoint] = ()) -> audit.VerifyReport:
        return audit.verify(db, keys.public.receipt_verifier(), external=external)

    return run
