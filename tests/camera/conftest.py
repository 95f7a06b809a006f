"""Fixtures for running the emulated camera in-process, as a user's `bwv camera --emulate` would."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from openbwv.enrol import create_server_keys, enrol_device
from openbwv.firmware.camera import Camera
from openbwv.firmware.config import load_config
from openbwv.home import Home
from openbwv.hw import open_hardware
from openbwv.hw.config import AudioConfig, BatteryConfig, CameraConfig as HwCamera, HardwareConfig

DEVICE = "cam-test"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home")
    create_server_keys(h)
    enrol_device(h, DEVICE)
    return h


class RunningCamera:
    """A Camera on emulated hardware, its capture loop in a thread."""

    def __init__(self, home: Home, trace: Path, *, width=320, height=240, fps=30.0,
                 audio: AudioConfig | None = None, flash_period_s: float | None = None,
                 battery: BatteryConfig | None = None, **overrides):
        from openbwv.enrol import device_storage

        self.home = home
        self.trace = trace
        overrides.setdefault("video.preset", "ultrafast")
        overrides.setdefault("video.bitrate", 500_000)
        self.config = load_config(None, **overrides)
        self.hw = open_hardware(HardwareConfig(
            backend="emulated", camera=HwCamera(source="synthetic", width=width, height=height, fps=fps,
                                                flash_period_s=flash_period_s),
            audio=audio or AudioConfig(), battery=battery or BatteryConfig(), sound="buzzer", trace_path=trace, triggers=("holster",)))
        self.storage = device_storage(home, DEVICE)
        self.camera = Camera(self.config, self.hw, self.storage)
        self.report = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.report = self.camera.run()
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def start(self) -> "RunningCamera":
        self._thread.start()
        return self

    def stop(self):
        self.camera.stop()
        self._thread.join(timeout=60)
        self.hw.close()
        if self.error:
            raise self.error
        assert not self._thread.is_alive(), "camera did not stop"
        return self.report


@pytest.fixture
def camera_factory(home: Home, tmp_path: Path):
    started: list[RunningCamera] = []

    def make(**kw) -> RunningCamera:
        cam = RunningCamera(home, tmp_path / f"trace-{len(started)}.jsonl", **kw)
        started.append(cam)
        return cam

    yield make
    for cam in started:
        if cam._thread.is_alive():
            cam.stop()
