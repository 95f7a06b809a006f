"""The wiring table people read, and the systemd unit that runs the camera, agree with the code."""

from __future__ import annotations

from kit import systemd_verify_complaints

import configparser
import re
import shutil
from pathlib import Path

import pytest

from openbwv.hw.board import load_board

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "hardware.md"
UNIT = ROOT / "hw" / "systemd" / "openbwv-camera.service"


def wiring_table() -> dict[str, tuple[int, int, str]]:
    """``name -> (header, bcm, active)`` from the rows of the wiring table in docs/hardware.md."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*`(\w+)`\s*\|(.*)\|\s*(high|low)\b[^|]*\|\s*$", line)
        if match:
            rows[match[3]] = (int(match[1]), int(match[2]), match[5])
    return rows


@pytest.mark.parametrize("name", ["pi4", "pi5"])
def test_wiring_table_in_the_docs_matches_the_board_files(name):
    board = load_board(name)
    expected = {p.name: (p.header, p.bcm, "high" if p.active_high else "low") for p in board.all_pins()}
    assert wiring_table() == expected


def read_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read(UNIT, encoding="utf-8")
    return unit


def test_the_camera_service_runs_bwv_camera_as_a_dedicated_user_and_always_restarts():
    service = read_unit()["Service"]
    assert service["ExecStart"].endswith("/bwv camera")
    assert service["User"] == "openbwv" and service["User"] != "root"
    assert service["Restart"] == "always"
    assert read_unit()["Unit"]["StartLimitIntervalSec"] == "0"
    assert service["Environment"] is not None


def test_the_camera_service_is_sandboxed_but_keeps_its_devices():
    service = read_unit()["Service"]
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", "")]:
        assert service[key] == value, key
    # These would hide /dev/gpiochip*, the camera and the sound card.
    for key in ("PrivateDevices", "DevicePolicy", "ProtectClock", "DeviceAllow"):
        assert key not in service, key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_camera_unit(tmp_path):
    # The only complaint allowed off a Pi: the installed bwv executable is not here.
    assert systemd_verify_complaints(UNIT, tmp_path) == []
