"""Nothing is deleted unless something runs the sweep: systemd runs it every hour, as the server's own user."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "hw" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str
    parsed.read(SYSTEMD / name)
    return parsed


def test_the_timer_runs_the_sweep_every_hour_and_catches_up_after_downtime():
    timer = unit("openbwv-retention.timer")["Timer"]
    assert timer["OnCalendar"] == "hourly" and timer["Persistent"] == "true"
    assert timer["Unit"] == "openbwv-retention.service"
    assert unit("openbwv-retention.timer")["Install"]["WantedBy"] == "timers.target"


def test_the_sweep_runs_as_the_servers_user_on_the_servers_home_without_the_network():
    service, server = unit("openbwv-retention.service")["Service"], unit("openbwv-server.service")["Service"]
    assert service["ExecStart"].split() == ["/opt/openbwv/venv/bin/bwv", "retention", "sweep"]
    assert service["Type"] == "oneshot"
    for key in ("User", "Group", "Environment", "StateDirectory", "UMask"):
        assert service[key] == server[key], key
    assert service["PrivateNetwork"] == "yes" and service["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_timer_and_its_service(tmp_path):
    for name in ("openbwv-retention.service", "openbwv-retention.timer"):
        shutil.copy(SYSTEMD / name, tmp_path / name)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "openbwv-retention.timer"),
                             str(tmp_path / "openbwv-retention.service")], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line.strip() and "is not executable" not in line]
    assert complaints == []
