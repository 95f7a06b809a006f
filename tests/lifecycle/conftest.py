"""Fixtures: a real PostgreSQL 15 for the session (tests/pg_kit.py, the `pg` fixture of tests/conftest.py), and `db_engine`, which the modules
that test the lifecycle's records (marks, requests and holds, release notices, deadlines, the sweep)
take through ``pytestmark = pytest.mark.usefixtures("db_engine")``: each of their tests runs once on
SQLite and once on PostgreSQL, every Evidence home made meanwhile naming a fresh database of its own."""

from __future__ import annotations

import pytest


from lifecycle import lifecycle_kit  # the module the tests import (pythonpath "tests")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_engine(request: pytest.FixtureRequest):
    if request.param == "postgresql":
        lifecycle_kit.new_database = request.getfixturevalue("pg").new_database
    yield request.param
    lifecycle_kit.new_database = lambda: None
