"""The dock daemon: cameras noticed as their storage appears, several bays served at once, `bwv dock status`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from openbwv.cli import main as bwv
from openbwv.dock.backoff import Backoff
from openbwv.dock.config import load_config
from openbwv.dock.daemon import DockDaemon
from openbwv.dock.errors import DockConfigError
from openbwv.dock.upload import DirectoryUploader
from openbwv.dock.watch import MountWatcher
from openbwv.registry import DeviceRegistry
from openbwv.sealed.reader import verify_file

from .dock_kit import CameraKit, wait_for

FAST = dict(upload_backoff=Backoff(initial_s=0.05, maximum_s=0.2), session_backoff=Backoff(initial_s=0.1, maximum_s=0.5),
            reply_timeout=0.5, attempts=2, probes=3)


def write_bays(path: Path, names: list[str]) -> Path:
    text = '[dock]\nid = "test-dock"\nbays_root = "bays"\n' + "".join(
        f'[[bay]]\nname = "{n}"\nserial = "pty:ports/{n}.tty"\n' for n in names)
    path.write_text(text)
    return path


def test_a_bay_directory_appearing_and_going_is_noticed(tmp_path):
    root = tmp_path / "bays"
    (root / "bay-0").mkdir(parents=True)  # a camera already cradled when the dock starts
    seen: list[tuple[str, bool]] = []
    watcher = MountWatcher({n: root / n for n in ("bay-0", "bay-1", "bay-2")},
                           lambda bay, present: seen.append((bay, present)), poll_s=60).start()
    try:
        assert seen == [("bay-0", True)]
        seen.clear()
        storage = tmp_path / "camera-storage"
        storage.mkdir()
        (root / "bay-2").symlink_to(storage)  # emulation: the camera's storage "mounted" in bay 2
        assert wait_for(lambda: ("bay-2", True) in seen, 5)
        (root / "bay-1").mkdir()
        assert wait_for(lambda: ("bay-1", True) in seen, 5)
        (root / "bay-2").unlink()
        assert wait_for(lambda: ("bay-2", False) in seen, 5)
        (root / "unrelated").mkdir()
        time.sleep(0.2)
        assert seen == [("bay-2", True), ("bay-1", True), ("bay-2", False)]
    finally:
        watcher.stop()


def test_the_bays_file_is_checked_key_by_key(tmp_path):
    cfg = load_config(write_bays(tmp_path / "bays.toml", ["bay-1", "bay-2"]))
    assert cfg.dock_id == "test-dock"
    assert [b.mount for b in cfg.bays] == [tmp_path / "bays" / "bay-1", tmp_path / "bays" / "bay-2"]
    assert cfg.bays[0].serial == f"pty:{tmp_path / 'ports' / 'bay-1.tty'}"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[bay]]\nname = "bay-1"\nserail = "/dev/ttyACM0"\nmount = "/m"\n')
    with pytest.raises(DockConfigError, match="unknown \\['serail'\\]; missing \\['serial'\\]"):
        load_config(bad)
    bad.write_text('[[bay]]\nname = "a"\nserial = "/dev/x"\nmount = "/m"\n[[bay]]\nname = "b"\nserial = "/dev/x"\n'
                   'mount = "/n"\n')
    with pytest.raises(DockConfigError, match="two bays share the serial /dev/x"):
        load_config(bad)


class MeetingUploader:
    """Lets each upload through only once both bays are uploading: proof that they run at the same time."""

    def __init__(self, inner: DirectoryUploader):
        self.inner = inner
        self.barrier = threading.Barrier(2, timeout=10)
        self.met: set[str] = set()

    def upload(self, path, device_id, sequence, segment_hash, progress):
        if device_id not in self.met:
            self.met.add(device_id)
            self.barrier.wait()
        return self.inner.upload(path, device_id, sequence, segment_hash, progress)


def test_one_daemon_serves_two_bays_at_once_and_reports_both_cameras_clear(tmp_path, server_keys, capsys):
    cams = [CameraKit(tmp_path / f"cam{i}", server_keys, device_id=f"cam-{i:04d}") for i in (1, 2)]
    for i, cam in enumerate(cams):
        cam.seal(2 + i)
    config = load_config(write_bays(tmp_path / "bays.toml", ["bay-1", "bay-2"]))
    uploader = MeetingUploader(DirectoryUploader(tmp_path / "evidence", server_keys))
    daemon = DockDaemon(config.bays, uploader, state_dir=tmp_path / "state", dock_id=config.dock_id, **FAST)
    links = []
    with daemon:
        for cam, bay in zip(cams, config.bays):  # each camera opens its bay's port, as `bwv camera --dock-port`
            port = serial.Serial(bay.serial[len("pty:"):], timeout=0.05)
            links.append((cam.link(port).start(), port))
        assert daemon.present_bays() == []
        for cam, bay in zip(cams, config.bays):
            bay.mount.symlink_to(cam.storage.directory)  # cradled: its storage appears in the bay
        assert daemon.wait_for_sessions({"bay-1": 1, "bay-2": 1}, timeout=20)
    for link, port in links:
        link.close()
        link.join(2)
        port.close()

    assert uploader.met == {"cam-0001", "cam-0002"}
    for cam in cams:
        assert cam.files() == {}
        held = sorted((tmp_path / "evidence" / cam.device_id).iterdir())
        assert len(held) == len(cam.sealed)
        for path in held:
            verify_file(path, cam.registry)
    assert [r.clear for b in ("bay-1", "bay-2") for r in daemon.reports[b]] == [True, True]

    assert bwv(["dock", "status", "--state-dir", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["BAY", "STATE", "CAMERA"]
    assert out[1].split()[:3] == ["bay-1", "clear", "cam-0001"] and "2/2" in out[1]
    assert out[2].split()[:3] == ["bay-2", "clear", "cam-0002"] and "3/3" in out[2]


def test_a_camera_that_does_not_answer_yet_is_retried_and_a_leaving_camera_empties_the_bay(tmp_path, server_keys):
    cam = CameraKit(tmp_path / "cam", server_keys)
    cam.seal(1)
    config = load_config(write_bays(tmp_path / "bays.toml", ["bay-1"]))
    daemon = DockDaemon(config.bays, DirectoryUploader(tmp_path / "evidence", server_keys),
                        state_dir=tmp_path / "state", **FAST)
    bay = config.bays[0]
    with daemon:
        bay.mount.symlink_to(cam.storage.directory)
        assert wait_for(lambda: daemon.errors["bay-1"], 10)  # storage there, but no camera on the serial port
        assert cam.files()  # and nothing happened to its footage
        port = serial.Serial(bay.serial[len("pty:"):], timeout=0.05)
        link = cam.link(port).start()
        assert daemon.wait_for_sessions({"bay-1": 1}, timeout=20)
        assert daemon.store.read_bays()[0].state == "clear"
        bay.mount.unlink()
        assert wait_for(lambda: daemon.store.read_bays()[0].state == "empty", 5)
        link.close()
        link.join(2)
        port.close()


def test_bwv_dock_once_uploads_the_cradled_camera_and_exits_zero(tmp_path, server_keys):
    home = tmp_path / "home"
    server_keys.save(home / "server" / "keys")
    cam = CameraKit(tmp_path / "cam", server_keys)
    DeviceRegistry(home / "server" / "devices").enrol(cam.device)
    cam.seal(2)
    bays = write_bays(tmp_path / "bays.toml", ["bay-1"])
    (tmp_path / "bays").mkdir()
    (tmp_path / "bays" / "bay-1").symlink_to(cam.storage.directory)
    tty = tmp_path / "ports" / "bay-1.tty"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from openbwv.cli import main; sys.exit(main())", "--home", str(home), "dock", "--bays-config", str(bays),
         "--upload-dir", str(tmp_path / "evidence"), "--once", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        if not wait_for(lambda: tty.exists() or proc.poll() is not None, 20) or not tty.exists():
            proc.kill()
            pytest.fail(f"the dock did not make the bay's emulated port: {proc.communicate()}")
        port = serial.Serial(str(tty), timeout=0.05)
        link = cam.link(port).start()
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    link.close()
    link.join(2)
    port.close()
    assert proc.returncode == 0, err
    assert "CLEAR: 2 segment(s) uploaded and freed" in out
    assert "event=camera_clear bay=bay-1 device=cam-0042" in err
    assert cam.files() == {} and len(list((tmp_path / "evidence" / "cam-0042").iterdir())) == 2
    assert not tty.exists()  # the emulated port is taken down with the daemon
