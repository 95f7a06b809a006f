"""What the system tests share: a BWV_HOME with the server's keys, cameras, the witness, and the programs.

Every process a test starts and every camera it docks is taken down after
the test, however it ended: a failing test must not leave a server, a dock
or a camera thread behind for the next one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from openbwv.enrol import create_server_keys
from openbwv.home import Home

from .system_kit import BwvProcess, Camera, Custody, SlowLink


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """The evidence server's BWV_HOME (keys, registry, database, store); cameras are enrolled here too."""
    h = Home(tmp_path / "home")
    create_server_keys(h)
    return h


@pytest.fixture
def custody(home: Home) -> Iterator[Custody]:
    c = Custody(home)
    yield c
    c.close()


@pytest.fixture
def launch() -> Iterator[Callable[[BwvProcess], BwvProcess]]:
    """`launch(process)` starts a `bwv` program; whatever is still running at the end is killed."""
    started: list[BwvProcess] = []

    def start(process: BwvProcess) -> BwvProcess:
        started.append(process)
        return process.start()

    yield start
    for process in started:
        if process.running:
            process.kill()


@pytest.fixture
def camera(home: Home, custody: Custody) -> Iterator[Callable[..., Camera]]:
    """`camera(device_id, segments=N, media_bytes=B)`: an enrolled camera holding N freshly sealed segments."""
    made: list[Camera] = []

    def make(device_id: str, *, segments: int, media_bytes: int) -> Camera:
        cam = Camera(home, device_id, custody)
        cam.seal(segments, media_bytes)
        made.append(cam)
        return cam

    yield make
    for cam in made:
        cam.undock()


@pytest.fixture
def slow_link() -> Iterator[Callable[[int, float], SlowLink]]:
    """`slow_link(server_port, bytes_per_s)`: a throttled uplink to the server, taken down after the test."""
    links: list[SlowLink] = []

    def make(port: int, rate: float) -> SlowLink:
        links.append(SlowLink(port, rate))
        return links[-1]

    yield make
    for link in links:
        link.close()
