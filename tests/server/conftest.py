"""Fixtures: a BWV_HOME with server keys, a dock token, and one real server shared by the protocol tests.

Every test here runs twice, once per metadata engine (`db_engine`: SQLite, the
embedded default, then a real PostgreSQL 15 started for the session by
tests/pg_kit.py, the `pg` fixture of tests/conftest.py).  On PostgreSQL each home made by `make_home` gets a fresh
database of its own, named in its config.toml, so the server, `bwv` commands
and the tests' own reads all find it the way an operator's would.

Starting a server costs about a second, so the protocol tests share one; each
test seals as its own enrolled camera (the server reads the registry as
devices appear), so their chains never meet.  Tests that need other settings
or a crash start their own server.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Callable

import pytest


from openbwv.enrol import create_server_keys, enrol_device
from openbwv.home import Home
from openbwv.server.auth import DockTokens
from openbwv.server.config import load_db
from openbwv.server.service import open_metadata

from .server_kit import DeviceChain, ServerProcess, TusSession

DOCK = "dock-1"
_cameras = itertools.count(1)

_new_database: Callable[[], str | None] = lambda: None  # the engine under test's fresh database, or None


@pytest.fixture(scope="session", params=["sqlite", "postgresql"], autouse=True)
def db_engine(request: pytest.FixtureRequest):
    """The metadata engine every test in this folder runs on, in turn."""
    global _new_database
    _new_database = request.getfixturevalue("pg").new_database if request.param == "postgresql" else lambda: None
    yield request.param
    _new_database = lambda: None


@pytest.fixture
def metadata_url(db_engine: str, tmp_path: Path) -> str:
    """A fresh, empty metadata database on the engine under test."""
    return _new_database() or f"sqlite:///{tmp_path / 'evidence.db'}"


def make_home(root: Path) -> Home:
    home = Home(root)
    create_server_keys(home)
    write_server_config(home)
    return home


def write_server_config(home: Home, settings: str = "") -> None:
    """BWV_HOME/config.toml with these ``[server]`` lines, keeping the home's database (PostgreSQL runs)."""
    url = load_db(home.config_file) if home.config_file.is_file() else _new_database()
    if url is None and not settings:
        return
    lines = f'db = "{url}"\n' if url else ""
    home.config_file.write_text("[server]\n" + lines + settings)


def add_dock(home: Home, dock_id: str = DOCK) -> str:
    db = open_metadata(home)
    try:
        return DockTokens(db).add_dock(dock_id)
    finally:
        db.close()


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory, db_engine: str) -> Home:
    return make_home(tmp_path_factory.mktemp("server-home"))


@pytest.fixture(scope="session")
def token(shared_home: Home) -> str:
    return add_dock(shared_home)


@pytest.fixture(scope="session")
def server(shared_home: Home, token: str):
    """The shared server: defaults, except no free-space reserve (a test machine's disk is not a store)."""
    proc = ServerProcess(shared_home.root, "--reserve-mb", "0", "--idle-timeout", "5").start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()
    assert proc.stdout_lines[-1] == "server stopped"


@pytest.fixture
def tus(server: ServerProcess, token: str) -> TusSession:
    return TusSession(server.url, token)


@pytest.fixture
def camera(shared_home: Home, tmp_path: Path, request: pytest.FixtureRequest):
    """A freshly enrolled camera of its own for this test: make(…) returns a DeviceChain."""

    def make(suffix: str = "") -> DeviceChain:
        name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")
        device_id = f"cam-{next(_cameras)}-{name}{suffix}"[:64]
        enrol_device(shared_home, device_id)
        return DeviceChain(shared_home, device_id, tmp_path / device_id)

    return make
