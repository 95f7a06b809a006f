"""The camera fixtures of tests/camera, shared: the sealed-track tests run the same emulated camera."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "camera" / "conftest.py"
_spec = importlib.util.spec_from_file_location("openbwv_tests_camera_fixtures", _path)
assert _spec is not None and _spec.loader is not None
camera_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(camera_fixtures)

DEVICE = camera_fixtures.DEVICE
RunningCamera = camera_fixtures.RunningCamera
home = camera_fixtures.home  # the fixture: a BWV_HOME with server keys and DEVICE enrolled
