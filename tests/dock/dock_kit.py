"""Tools for the dock tests: a camera with sealed footage, a cradle (pty pair) it sits in, flaky servers.

Real components throughout: segments sealed with openbwv.sealed, the
camera's DockLink serving over pyserial on one end of a real pty pair, the
dock talking on the other end.  Fakes only where the thing cannot exist yet
(an evidence server that fails on cue).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import serial

from openbwv.dock.channel import FrameChannel
from openbwv.dock.errors import UploadUnavailable
from openbwv.dock.ports import PtyPort
from openbwv.dock.upload import DirectoryUploader
from openbwv.firmware.docklink import CameraStatus, DockLink
from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import DeviceKey, ServerKeyPair
from openbwv.sealed.layout import RECORD_INFO, RECORD_MEDIA
from openbwv.sealed.storage import DeviceStorage
from openbwv.sealed.writer import SealedInfo

DEVICE_ID = "cam-0042"


def utc_us() -> int:
    return time.time_ns() // 1000


class CameraKit:
    """One enrolled camera: its key, its storage full of sealed segments, its clock file, under a BWV_HOME."""

    def __init__(self, root: Path, server: ServerKeyPair, device_id: str = DEVICE_ID):
        self.home = Home(root / "home")
        self.server = server
        self.device_id = device_id
        self.device = DeviceKey.generate(device_id)
        self.registry = DeviceRegistry(root / "registry")
        self.registry.enrol(self.device)
        self.storage = DeviceStorage(self.home.device_storage(device_id), self.device, server.public,
                                     state_dir=self.home.device_dir(device_id))
        self.clock_path = self.home.device_dir(device_id) / "clock.json"
        self.sealed: list[SealedInfo] = []

    def seal(self, count: int, media_bytes: int = 20_000) -> list[SealedInfo]:
        clip = uuid.uuid4()
        out = []
        for i in range(count):
            seg = self.storage.open_segment(clip_id=clip, segment_index=i, start_utc_us=utc_us())
            seg.append(RECORD_INFO, b'{"codec":"h264"}')
            seg.append(RECORD_MEDIA, os.urandom(media_bytes))
            out.append(seg.seal(utc_us()))
        self.sealed.extend(out)
        return out

    def files(self) -> dict[str, str]:
        """name -> SHA-256 of every sealed file on the camera: to prove nothing was touched."""
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.storage.sealed_paths()}

    def link(self, port, *, clock: Callable[[], int] = utc_us, battery_pct: int | None = 87, **kw) -> DockLink:
        return DockLink(port, self.storage, self.server.public, self.device_id, self.clock_path,
                        lambda: CameraStatus(firmware="openbwv-test", battery_pct=battery_pct), clock=clock, **kw)


@dataclass
class Cradle:
    """A camera in a bay: the dock's end of a pty pair, and the camera's DockLink serving the other end."""

    dock_port: PtyPort
    camera_port: serial.Serial
    link: DockLink
    extra: list = field(default_factory=list)

    @classmethod
    def open(cls, camera: CameraKit, tmp: Path, **link_kw) -> "Cradle":
        dock_port = PtyPort.create(tmp / f"{camera.device_id}.tty")
        camera_port = serial.Serial(str(tmp / f"{camera.device_id}.tty"), timeout=0.05)  # as the firmware opens it
        link = camera.link(camera_port, **link_kw).start()
        return cls(dock_port, camera_port, link)

    def channel(self) -> FrameChannel:
        return FrameChannel(self.dock_port, name="test dock")

    def close(self) -> None:
        self.link.close()
        self.link.join(5)
        self.camera_port.close()
        self.dock_port.close()


class FlakyUploader:
    """An evidence server that is down for the first `failures` attempts, then works.

    At every failed attempt it records the camera's files, so a test can show
    that nothing was touched while the server was away.
    """

    def __init__(self, inner: DirectoryUploader, failures: int, camera: CameraKit,
                 on_attempt: Callable[[int], None] | None = None):
        self.inner = inner
        self.failures = failures
        self.camera = camera
        self.on_attempt = on_attempt
        self.attempts = 0
        self.files_seen_while_down: list[dict[str, str]] = []
        self.times: list[float] = []

    def upload(self, path, device_id, sequence, segment_hash, progress) -> bytes:
        self.attempts += 1
        self.times.append(time.monotonic())
        if self.on_attempt is not None:
            self.on_attempt(self.attempts)
        if self.attempts <= self.failures:
            self.files_seen_while_down.append(self.camera.files())
            raise UploadUnavailable(f"server unreachable (attempt {self.attempts}): connection refused")
        return self.inner.upload(path, device_id, sequence, segment_hash, progress)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
