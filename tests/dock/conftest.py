"""What the dock tests share: the server's keys, a camera with footage, and a cradle to put it in."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from openbwv.sealed.keys import ServerKeyPair

from .dock_kit import CameraKit, Cradle


@pytest.fixture(scope="session")
def server_keys() -> ServerKeyPair:
    return ServerKeyPair.generate()


@pytest.fixture
def camera(tmp_path: Path, server_keys: ServerKeyPair) -> CameraKit:
    return CameraKit(tmp_path / "camera", server_keys)


@pytest.fixture
def cradle_factory(tmp_path: Path) -> Iterator[Callable[..., Cradle]]:
    """`cradle_factory(camera, **link_options)` cradles a camera; every cradle is closed after the test."""
    opened: list[Cradle] = []

    def make(camera: CameraKit, **link_kw) -> Cradle:
        c = Cradle.open(camera, tmp_path / "ports", **link_kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def cradle(camera: CameraKit, cradle_factory) -> Cradle:
    return cradle_factory(camera)
