"""The running firmware serves the dock link when it is docked, as `bwv camera --dock-port PATH` wires it."""

from __future__ import annotations

import logging
import time

import pytest

from openbwv.dock.bay import Bay
from openbwv.dock.config import BayConfig
from openbwv.dock.ports import PtyPort
from openbwv.dock.upload import DirectoryUploader
from openbwv.firmware.camera import Camera, load_clock_state
from openbwv.firmware.command import _dock_service
from openbwv.firmware.config import load_config
from openbwv.firmware.state import Mode, StealthRequest
from openbwv.hw import open_hardware
from openbwv.hw.config import CameraConfig as HwCamera, HardwareConfig

from .dock_kit import wait_for


@pytest.fixture
def hw(tmp_path):
    h = open_hardware(HardwareConfig(backend="emulated", camera=HwCamera(source="none"),
                                     trace_path=tmp_path / "trace.jsonl"))
    yield h
    h.close()


def test_docking_the_camera_opens_the_link_and_the_dock_clears_it(camera, hw, tmp_path, server_keys, caplog):
    camera.seal(2)
    tty = tmp_path / "bay-1.tty"
    dock_port = PtyPort.create(tty)
    service = _dock_service(str(tty), camera.storage, server_keys.public, camera.device_id, camera.clock_path,
                            lambda state: setattr(firmware, "clock", state), lambda: firmware.status())
    firmware = Camera(load_config(None, **{"indicators.stealth_allowed": True}), hw, camera.storage,
                      on_mode=service.mode_changed)
    firmware.post(StealthRequest(time.monotonic(), True))  # this shift went covert (policy allows it)
    caplog.set_level(logging.INFO)
    try:
        assert service.sessions == []  # out of the dock: the port is left alone
        hw.emulator.set_docked(True)  # the dock-detect contact closes
        assert firmware.machine.mode is Mode.DOCKED
        bay = Bay(BayConfig("bay-1", "unused", camera.storage.directory),
                  DirectoryUploader(tmp_path / "evidence", server_keys), reply_timeout=1.0, attempts=5)
        report = bay.run_session(dock_port)
        assert report.clear and camera.files() == {}
        # The emulated 12-hour battery, as the dock heard it: full, with about 12 hours to go.
        assert report.hello.battery_pct == 100 and 715 <= report.hello.battery_minutes_left <= 720
        # Every stealth change of the shift reaches the dock's log: on by request, off by docking.
        assert [(c["on"], c["cause"]) for c in report.hello.stealth_changes] == [(True, "request"), (False, "docked")]
        logged = [r.getMessage() for r in caplog.records if "camera_stealth" in r.getMessage()]
        assert len(logged) == 2 and "on=true" in logged[0].lower() and "cause=docked" in logged[1]
        assert firmware.clock == load_clock_state(camera.clock_path) and firmware.clock.sync_utc_us > 0
        assert wait_for(lambda: len(service.sessions) == 2, 5)  # after BYE it listens again while docked

        hw.emulator.set_docked(False)
        assert firmware.machine.mode is Mode.STANDBY
        assert wait_for(lambda: service.sessions[-1].ended == "closed", 5)
    finally:
        service.close()
        dock_port.close()
    assert not service._thread.is_alive()
