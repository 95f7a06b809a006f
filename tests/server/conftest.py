"""Fixtures: a BWV_HOME with server keys, a dock token, and one real server shared by the protocol tests.

Starting a server costs about a second, so the protocol tests share one; each
test seals as its own enrolled camera (the server reads the registry as
devices appear), so their chains never meet.  Tests that need other settings
or a crash start their own server.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from openbwv.enrol import create_server_keys, enrol_device
from openbwv.home import Home
from openbwv.server.auth import DockTokens
from openbwv.server.service import open_metadata

from .server_kit import DeviceChain, ServerProcess, TusSession

DOCK = "dock-1"
_cameras = itertools.count(1)


def make_home(root: Path) -> Home:
    home = Home(root)
    create_server_keys(home)
    return home


def add_dock(home: Home, dock_id: str = DOCK) -> str:
    db = open_metadata(home)
    try:
        return DockTokens(db).add_dock(dock_id)
    finally:
        db.close()


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Home:
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
