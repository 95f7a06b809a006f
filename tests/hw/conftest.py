"""Shared set-up for the hardware-layer tests: emulated cameras that always get closed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from openbwv.hw import CameraConfig, Hardware, HardwareConfig, open_hardware

# Small frames keep the tests that do not look at pictures fast.
SMALL_CAMERA = CameraConfig(width=320, height=240, paced=False)


@pytest.fixture
def emulated(tmp_path: Path) -> Iterator[Callable[..., Hardware]]:
    """``emulated(**config)`` opens an emulated camera tracing to ``tmp_path/hw.jsonl``; all are closed after the test."""
    opened: list[Hardware] = []

    def open_one(**overrides: object) -> Hardware:
        values: dict[str, object] = {"trace_path": tmp_path / "hw.jsonl", "camera": SMALL_CAMERA}
        values.update(overrides)
        hw = open_hardware(HardwareConfig(**values))  # type: ignore[arg-type]
        opened.append(hw)
        return hw

    yield open_one
    for hw in opened:
        hw.close()
