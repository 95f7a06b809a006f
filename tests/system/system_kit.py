"""Tools for the system tests: the real programs as processes, real cameras in this process, and a witness.

`bwv server` and `bwv dock` run as child processes, exactly as installed,
talking HTTP on loopback; a test may SIGKILL either at any moment, as a
power cut or the OOM killer would, and start it again.  Each camera is an
enrolled device under BWV_HOME with sealed segments in its own storage; when
docked it serves the dock link on the bay's pty with the firmware's own
`DockPortService` and `DockLink`, so, like a camera sitting in a cradle, it
outlives every crash of the dock and answers the next one.

`Custody` is the one addition, and it only watches: whenever a camera
accepts a receipt (the last step before it deletes the file) it checks, at
that moment, that the server's database records the segment and that its
blob store holds that very file; and it notices every file that leaves a
camera's storage, by whatever means, and checks that a receipt for it had
been accepted first.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterable

from openbwv.dock.state import BayStatus, StateStore
from openbwv.enrol import device_storage, enrol_device, load_device
from openbwv.firmware.docklink import CameraStatus, DockLink, DockPortService
from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.sealed.layout import RECORD_INFO, RECORD_MEDIA
from openbwv.sealed.receipt import Receipt, ReceiptVerifier
from openbwv.sealed.writer import SealedInfo
from openbwv.server.auth import DockTokens
from openbwv.server.db import MetadataStore
from openbwv.server.service import open_metadata
from openbwv.verification import verify_paths
from kit import dies_with_parent  # tests/ is on the path (pytest's pythonpath, the bench's loader)

BWV = str(Path(sys.executable).with_name("bwv"))
START_TIMEOUT_S = 30.0  # a cold Python start on a busy two-core machine, with room to spare
STOP_TIMEOUT_S = 30.0


def eventually(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Wait for `predicate` to hold; fail saying `what` did not happen.  Timeouts here are generous
    bounds on waiting, never a measure of speed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(step)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_dock(home: Home, dock_id: str) -> str:
    """What `bwv server add-dock --id DOCK` does: a token for the dock, its digest in the server's database."""
    db = open_metadata(home)
    try:
        return DockTokens(db).add_dock(dock_id)
    finally:
        db.close()


# --------------------------------------------------------------------------- the programs
class BwvProcess:
    """One `bwv` program as a child process.  Every start logs to files of its own under `logs`."""

    name = "bwv"

    def __init__(self, home: Path, logs: Path):
        self.home = Path(home)
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """True once this start has done what its callers wait for."""
        return True

    def _log(self, start: int, stream: str) -> Path:
        return self.logs / f"{self.name}.{start}.{stream}"

    def start(self) -> "BwvProcess":
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        env = dict(os.environ, BWV_HOME=str(self.home), PYTHONUNBUFFERED="1")
        with open(self._log(self.starts, "out"), "wb") as out, open(self._log(self.starts, "err"), "wb") as err:
            self.proc = subprocess.Popen([BWV, *self.argv()], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=env, preexec_fn=dies_with_parent())
        eventually(lambda: self.ready() or self.proc.poll() is not None, START_TIMEOUT_S, f"{self.name} starting")
        if not self.ready():
            raise AssertionError(f"{self.name} did not start (exit {self.proc.poll()}):\n"
                                 f"{self.stdout()}{self.stderr()}")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> int:
        """SIGTERM, as systemd stops a service; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM") from None

    def stdout(self) -> str:
        """What the current (or last) start printed."""
        path = self._log(self.starts, "out")
        return path.read_text(errors="replace") if path.exists() else ""

    def stderr(self) -> str:
        path = self._log(self.starts, "err")
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        """The logs of every start, in order."""
        return "".join(self._log(i, "err").read_text(errors="replace") for i in range(1, self.starts + 1))


class EvidenceServer(BwvProcess):
    """`bwv server` on loopback.  The first start picks a free port; later starts take the same one."""

    name = "server"

    def __init__(self, home: Home, logs: Path, *options: str, port: int = 0):
        super().__init__(home.root, logs)
        self.options = options
        self.port = port

    @property
    def url(self) -> str:
        assert self.port, "the server has not been started yet"
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return ["server", "--listen", f"127.0.0.1:{self.port}", "--reserve-mb", "0", *self.options]

    def health(self) -> dict | None:
        """GET /api/v1/health (no token needed), or None while the server is not answering."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=5) as reply:
                return json.loads(reply.read())
        except (OSError, ValueError):
            return None

    def ready(self) -> bool:
        for line in self.stdout().splitlines():
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
                return True
        return False


class DockStation(BwvProcess):
    """`bwv dock` serving some bays against an evidence server, all its files under `root`.

    Each bay's storage mount is a camera's storage directory (cradled from the
    start) and its serial port an emulated one, `pty:ports/<bay>.tty`, that
    the dock creates and the camera opens.  The dock has its own BWV_HOME
    (where it keeps the upload URLs it resumes from) and its own state
    directory (what `bwv dock status` reads).
    """

    name = "dock"

    def __init__(self, root: Path, dock_id: str, token: str, server_url: str, mounts: dict[str, Path]):
        self.root = Path(root)
        super().__init__(self.root / "home", self.root / "logs")
        self.name = dock_id
        self.dock_id = dock_id
        self.server_url = server_url
        self.mounts = mounts
        self.state_dir = self.root / "state"
        self.token_file = self.root / "token"
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)
        self.bays_file = self.root / "bays.toml"
        self.bays_file.write_text(f'[dock]\nid = "{dock_id}"\n' + "".join(
            f'\n[[bay]]\nname = "{bay}"\nserial = "pty:ports/{bay}.tty"\nmount = {json.dumps(str(mount))}\n'
            for bay, mount in mounts.items()))

    def port_path(self, bay: str) -> Path:
        return self.root / "ports" / f"{bay}.tty"

    def argv(self) -> list[str]:
        # --retry-max 2: the test waits out server outages in seconds, not the field's minutes.
        return ["dock", "--bays-config", str(self.bays_file), "--server", self.server_url,
                "--token-file", str(self.token_file), "--state-dir", str(self.state_dir), "--retry-max", "2"]

    def ready(self) -> bool:
        """Every bay announced: its emulated port exists for the camera to open."""
        printed = self.stdout()
        return all(f"{bay}: camera port " in printed for bay in self.mounts)

    def bays(self) -> dict[str, BayStatus]:
        """What each bay reports (the files `bwv dock status` reads)."""
        return {b.bay: b for b in StateStore(self.state_dir).read_bays()}

    def status_json(self) -> str:
        """`bwv dock status --json`, run as an operator would."""
        done = subprocess.run([BWV, "dock", "status", "--json", "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, timeout=START_TIMEOUT_S,
                              env=dict(os.environ, BWV_HOME=str(self.home)))
        assert done.returncode == 0, done.stderr
        return done.stdout


# --------------------------------------------------------------------------- the network
class SlowLink:
    """A TCP relay from a dock to the server that carries the dock's bytes at `rate` bytes/s per connection.

    An uplink slow enough that a segment takes about a second to send on any
    machine, so a crash can land mid-upload wherever the test runs.  Either
    side closing (a process killed) closes the other at once, as a real
    connection through a router would break.
    """

    PIECE = 64 * 1024

    def __init__(self, target_port: int, rate: float):
        self.target_port = target_port
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="slow-link", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()  # the server is down: the dock sees its connection drop
            return
        upstream.settimeout(None)
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._sockets |= {client, upstream}
        threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
        self._pump(client, upstream, self.rate)

    def _pump(self, src: socket.socket, dst: socket.socket, rate: float | None) -> None:
        free_at = time.monotonic()  # when the line can take more: an idle line saves up no burst
        try:
            while True:
                data = src.recv(self.PIECE)
                if not data:
                    break
                dst.sendall(data)
                if rate is not None:
                    free_at = max(free_at, time.monotonic()) + len(data) / rate
                    time.sleep(max(0.0, free_at - time.monotonic()))
        except OSError:
            pass
        for s in (src, dst):
            self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()
        for s in sockets:
            self._drop(s)


# --------------------------------------------------------------------------- the witness
class Custody:
    """Watches every camera let go of footage and checks that the server held it first.

    Knows each sealed file by the SHA-256 of its bytes, recorded when it was
    sealed; "held" means the server's database has the segment's row and its
    blob store a file with those very bytes.  Problems are collected in
    `violations` (a test asserts it is empty), never raised inside a camera.
    """

    def __init__(self, server_home: Home):
        self.home = server_home
        self.store = server_home.server_dir / "store"
        self.originals: dict[str, str] = {}  # segment hash -> SHA-256 of the sealed file
        self.names: dict[tuple[str, str], str] = {}  # (device, file name) -> segment hash
        self.accepted: set[str] = set()  # segment hashes whose receipt a camera accepted
        self.freed: set[tuple[str, str]] = set()  # (device, file name) seen leaving a camera
        self.violations: list[str] = []
        self._db: MetadataStore | None = None
        self._db_lock = threading.Lock()
        self._look_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def register(self, device_id: str, info: SealedInfo) -> None:
        key = info.segment_hash.hex()
        self.originals[key] = sha256_of(info.path)
        self.names[(device_id, info.path.name)] = key

    def blob_path(self, segment_hash: str) -> Path:
        return self.store / segment_hash[:2] / segment_hash[2:4] / f"{segment_hash}.bwv"

    def records(self) -> MetadataStore:
        with self._db_lock:
            if self._db is None:
                self._db = open_metadata(self.home)
            return self._db

    def why_not_held(self, segment_hash: str) -> str | None:
        """None if the server holds exactly this sealed file; else what is missing."""
        if self.records().segment(segment_hash) is None:
            return "the server's database has no row for it"
        blob = self.blob_path(segment_hash)
        if not blob.is_file():
            return f"the server's store has no blob {blob.name}"
        if sha256_of(blob) != self.originals[segment_hash]:
            return f"the server's blob {blob.name} is not the camera's file"
        return None

    # -- at the moment of freeing --------------------------------------------------
    def witness(self, verifier: ReceiptVerifier) -> "WitnessedVerifier":
        return WitnessedVerifier(self, verifier)

    def receipt_accepted(self, device_id: str, sequence: int, segment_hash: str) -> None:
        self.accepted.add(segment_hash)
        problem = self.why_not_held(segment_hash)
        if problem is not None:
            self.violations.append(f"{device_id} #{sequence} accepted a receipt while {problem}")

    # -- files leaving a camera, by whatever means ---------------------------------------
    def watch(self, cameras: Iterable["Camera"], every_s: float = 0.02) -> None:
        cameras = list(cameras)
        self._watcher = threading.Thread(target=self._watch, args=(cameras, every_s), name="custody", daemon=True)
        self._watcher.start()

    def _watch(self, cameras: list["Camera"], every_s: float) -> None:
        while not self._stop.is_set():
            self.look(cameras)
            self._stop.wait(every_s)

    def look(self, cameras: Iterable["Camera"]) -> None:
        with self._look_lock:
            for cam in cameras:
                self._look_at(cam)

    def _look_at(self, cam: "Camera") -> None:
        present = {p.name for p in cam.directory.glob("*.bwv")}
        for (device_id, name), key in self.names.items():
            if device_id != cam.device_id or name in present or (device_id, name) in self.freed:
                continue
            self.freed.add((device_id, name))
            if key not in self.accepted:
                self.violations.append(f"{device_id} lost {name} without accepting a receipt for it")
            problem = self.why_not_held(key)
            if problem is not None:
                self.violations.append(f"{device_id} lost {name} while {problem}")

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(10)
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class WitnessedVerifier:
    """A camera's ReceiptVerifier, with Custody looking over its shoulder.

    `free_with_receipt` deletes the file right after `check_for` passes, so a
    receipt that passes here is a file about to go: the server must hold it now.
    """

    def __init__(self, custody: Custody, inner: ReceiptVerifier):
        self.custody = custody
        self.inner = inner

    def parse(self, data) -> Receipt:
        return self.inner.parse(data)

    def check_for(self, data, *, device_id: str, sequence: int, segment_hash: bytes) -> Receipt:
        receipt = self.inner.check_for(data, device_id=device_id, sequence=sequence, segment_hash=segment_hash)
        self.custody.receipt_accepted(device_id, sequence, segment_hash.hex())
        return receipt


def assert_server_holds_exactly(home: Home, custody: Custody, cameras: Iterable["Camera"]) -> None:
    """Every segment the cameras sealed is held exactly once, and nothing else is.

    Once: one database row under its device and sequence, one blob with the
    camera's very bytes, no other file in the store, every chain unbroken;
    and the whole store verifies as `bwv verify` checks it, with public keys only.
    """
    cameras = list(cameras)
    sealed = {info.segment_hash.hex(): (cam.device_id, info.sequence) for cam in cameras for info in cam.sealed}
    db = custody.records()
    rows = {key: db.segment(key) for key in sealed}
    assert [sealed[k] for k, row in rows.items() if row is None] == [], "sealed segments the server does not hold"
    assert {k: (row.device_id, row.sequence) for k, row in rows.items()} == sealed
    assert {s.device_id: (s.segments, s.lowest, s.highest, s.flagged) for s in db.device_summaries()} == {
        cam.device_id: (len(cam.sealed), 1, len(cam.sealed), []) for cam in cameras}
    assert sorted(p for p in custody.store.rglob("*") if p.is_file()) == sorted(custody.blob_path(k) for k in sealed)
    assert {k: custody.why_not_held(k) for k in sealed} == {k: None for k in sealed}
    report = verify_paths([custody.store], DeviceRegistry(home.registry_dir))
    assert [p.line() for p in report.problems] == []
    assert sorted((s.device_id, s.sequence) for s in report.segments) == sorted(sealed.values())


# --------------------------------------------------------------------------- cameras
class Camera:
    """An enrolled camera: its key and storage under BWV_HOME/devices/<id>, its dock link once docked."""

    def __init__(self, home: Home, device_id: str, custody: Custody | None = None):
        self.home = home
        self.device_id = device_id
        self.custody = custody
        enrol_device(home, device_id)
        _, self.server_pub = load_device(home, device_id)
        self.storage = device_storage(home, device_id)
        self.clock_path = home.device_dir(device_id) / "clock.json"
        self.sealed: list[SealedInfo] = []
        self.service: DockPortService | None = None

    @property
    def directory(self) -> Path:
        return self.storage.directory

    def seal(self, count: int, media_bytes: int) -> list[SealedInfo]:
        """`count` segments of one clip, each `media_bytes` of (incompressible) footage."""
        clip = uuid.uuid4()
        out = []
        for i in range(count):
            seg = self.storage.open_segment(clip_id=clip, segment_index=i, start_utc_us=time.time_ns() // 1000)
            seg.append(RECORD_INFO, b'{"codec":"h264"}')
            seg.append(RECORD_MEDIA, os.urandom(media_bytes))
            info = seg.seal(time.time_ns() // 1000)
            if self.custody is not None:
                self.custody.register(self.device_id, info)
            out.append(info)
        self.sealed.extend(out)
        return out

    def files(self) -> dict[str, str]:
        """name -> SHA-256 of every sealed file on the camera."""
        return {p.name: sha256_of(p) for p in self.storage.sealed_paths()}

    @property
    def empty(self) -> bool:
        """The camera holds no sealed segment (what the dock calls clear)."""
        return not self.storage.sealed_paths()

    def dock(self, port_path: Path) -> None:
        """Sit in a bay: serve the dock link on its port for as long as docked, a new session after each one ends."""
        self.service = DockPortService(str(port_path), self._link)
        self.service.set_docked(True)

    def _link(self, port) -> DockLink:
        link = DockLink(port, self.storage, self.server_pub, self.device_id, self.clock_path,
                        lambda: CameraStatus(firmware="openbwv-system-test", battery_pct=90))
        if self.custody is not None:
            link.verifier = self.custody.witness(link.verifier)
        return link

    def freed_by_links(self) -> list[str]:
        """Every file this camera's dock link freed, over all sessions."""
        return [name for link in (self.service.sessions if self.service else []) for name in link.freed]

    def undock(self) -> None:
        if self.service is not None:
            self.service.close()
