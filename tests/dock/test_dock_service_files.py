"""The dock's systemd unit and udev rule say what the daemon needs, and systemd accepts the unit."""

from __future__ import annotations

from kit import systemd_verify_complaints

import configparser
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "hw" / "systemd" / "openbwv-dock.service"
RULES = ROOT / "hw" / "udev" / "99-openbwv-dock.rules"


def unit() -> configparser.ConfigParser:
    u = configparser.ConfigParser(strict=False, interpolation=None)
    u.optionxform = str
    u.read(UNIT, encoding="utf-8")
    return u


def test_the_dock_service_runs_bwv_dock_after_ntp_as_its_own_user_and_always_restarts():
    u = unit()
    assert " dock --bays-config " in u["Service"]["ExecStart"]
    assert u["Service"]["User"] == "openbwv-dock"
    assert u["Service"]["Restart"] == "always" and u["Unit"]["StartLimitIntervalSec"] == "0"
    assert "time-sync.target" in u["Unit"]["After"]  # it sets cameras' clocks from its own


def test_the_dock_service_cannot_write_to_camera_storage_and_reaches_only_serial_devices():
    s = unit()["Service"]
    assert s["ReadOnlyPaths"].lstrip("-") == "/media/bwv"
    assert (s["DevicePolicy"], s["DeviceAllow"]) == ("closed", "char-ttyACM rw")
    assert s["NoNewPrivileges"] == "yes" and s["CapabilityBoundingSet"] == ""


def test_the_udev_rule_names_cameras_by_usb_path_not_by_arrival_order():
    text = RULES.read_text(encoding="utf-8")
    rules = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    named = [r for r in rules if "SYMLINK+=" in r]
    assert [re.search(r'SYMLINK\+="([^"]+)"', r)[1] for r in named] == [f"bwv-bay-{n}" for n in (1, 2, 3, 4)]
    assert all(r.startswith('ENV{ID_PATH}=="') for r in named)
    assert 'KERNEL!="ttyACM[0-9]*"' in text and 'IMPORT{builtin}="path_id"' in text
    labels = re.findall(r'GOTO="(\w+)"', text)
    assert set(labels) == set(re.findall(r'LABEL="(\w+)"', text))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_dock_unit(tmp_path):
    assert systemd_verify_complaints(UNIT, tmp_path) == []
