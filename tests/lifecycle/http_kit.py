"""The server tests' kit (a real server process, tus, sealed segments), reused by path, plus the set-up
the lifecycle tests share: a home with keys, a dock token, an enrolled camera."""

from __future__ import annotations

from pathlib import Path

import kit as shared_kit
from openbwv.enrol import create_server_keys, enrol_device
from openbwv.home import Home
from openbwv.server.auth import DockTokens
from openbwv.server.service import open_metadata


kit = shared_kit.server_kit()
ServerProcess, TusSession, DeviceChain, staff_token = kit.ServerProcess, kit.TusSession, kit.DeviceChain, kit.staff_token


def make_home(root: Path) -> Home:
    home = Home(root)
    create_server_keys(home)
    return home


def add_dock(home: Home, dock_id: str) -> str:
    db = open_metadata(home)
    try:
        return DockTokens(db).add_dock(dock_id)
    finally:
        db.close()


def enrol(home: Home, device_id: str) -> None:
    enrol_device(home, device_id)
