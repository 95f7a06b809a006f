"""Fixtures: one real PostgreSQL 15 for the session (tests/pg_kit.py, the `pg` fixture of tests/conftest.py), and `db_url`, which runs a test
once on each engine: a fresh SQLite file, then a fresh PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg").new_database()
