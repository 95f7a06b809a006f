"""A real Ceph RADOS Gateway on loopback, started in about a second, for tests and benchmarks.

One monitor, one `memstore` OSD (RAM only, nothing on disk but its small
state folder) and `radosgw` with the beast frontend, every daemon bound to
127.0.0.1 on ports picked free for this run.  No manager and no cephx: the
cluster lives in a temporary folder for the length of one test session and
is reachable from this machine only.  What made it start fast and at all on
this kind of machine (see ../shared/DESIGN.md): every ``ms * mode = crc``
(without them RGW never authenticates to the monitor), ``paxos propose
interval = 0.01`` (pool creation 11 s → 0.5 s), and pools of size one.

`RgwCluster.start()` returns once the gateway answers HTTP and an S3 user
exists; `stop()` ends every daemon it started (by pid, SIGTERM then SIGKILL)
and removes the folder, and is safe to call twice or after a failed start.
The kit imports nothing from OpenBWV, so scripts/bench.py and later
multi-node or migration tests load it by path as they load the other kits.

    with RgwCluster(tmp) as rgw:
        s3 = rgw.client()
        s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from kit import dies_with_parent  # tests/ is on the path (pytest's pythonpath, the bench's loader)

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
START_TIMEOUT_S = 60.0


class RgwUnavailable(RuntimeError):
    """The Ceph packages are not installed here (tests skip, saying which program is missing)."""


def missing_programs() -> list[str]:
    return [p for p in DAEMONS if shutil.which(p) is None]


def free_port() -> int:
    """A port nobody listens on now (the daemon binds it a moment later; loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class S3User:
    uid: str
    access_key: str
    secret_key: str


def _conf(root: Path, fsid: str, mon_port: int, rgw_port: int, osd_ports: tuple[int, int]) -> str:
    """ceph.conf for the one-node cluster: everything in `root`, everything on 127.0.0.1."""
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = {osd_ports[0]}
ms bind port max = {osd_ports[1]}
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
paxos propose interval = 0.01
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
run dir = {root}/run
admin socket = {root}/run/$name.asok
log file = {root}/log/$name.log
pid file = {root}/run/$name.pid
keyring = {root}/keyring
log to stderr = false
err to stderr = true
mon data = {root}/mon/$cluster-$id
osd data = {root}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = 4294967296
osd max object size = 4294967296
osd journal size = 0
osd op threads = 2
osd data size = 0
rgw frontends = beast endpoint=127.0.0.1:{rgw_port} tcp_nodelay=1
rgw data = {root}/rgw
rgw thread pool size = 32
rgw enable usage log = false
rgw keystone url =
rgw lc debug interval = -1
rgw crypt require ssl = false
rgw_dns_name = 127.0.0.1
"""


class RgwCluster:
    """One throwaway Ceph cluster with an S3 gateway (see the module docstring)."""

    def __init__(self, root: Path | None = None, *, user: str = "bwv"):
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="rgw-"))
        self.user_id = user
        self.procs: list[subprocess.Popen] = []
        self.endpoint = ""
        self.user: S3User | None = None
        self.seconds_to_start = 0.0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "RgwCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "RgwCluster":
        missing = missing_programs()
        if missing:
            raise RgwUnavailable(f"Ceph is not installed here (no {', '.join(missing)} on PATH); "
                                 "scripts/system-packages.sh installs ceph-mon ceph-osd radosgw ceph-common")
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.seconds_to_start = time.monotonic() - began
        return self

    def _start(self) -> None:
        for sub in ("run", "log", "mon", "osd/ceph-0", "rgw"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        mon_port, rgw_port = free_port(), free_port()
        base = 33000 + (os.getpid() * 37 + mon_port) % 25000  # a range of its own for the OSD's sockets
        self.conf = self.root / "ceph.conf"
        self.conf.write_text(_conf(self.root, str(uuid.uuid4()), mon_port, rgw_port, (base, base + 200)))
        self.endpoint = f"http://127.0.0.1:{rgw_port}"
        c = ["-c", str(self.conf)]

        self._run(["monmaptool", "--create", "--clobber", "--fsid", self._fsid(),
                   "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", str(self.root / "monmap")])
        self._run(["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", str(self.root / "monmap")])
        self._daemon("mon", ["ceph-mon", *c, "-f", "-i", "a"])
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid).strip()
        self._run(["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid])
        self._daemon("osd", ["ceph-osd", *c, "-f", "-i", osd_id])
        self._wait(self._osd_up, "the OSD to come up")
        self._daemon("rgw", ["radosgw", *c, "-f", "-n", "client.rgw"])
        self._wait(self._rgw_answers, f"the gateway at {self.endpoint} to answer")
        self.user = self._create_user(self.user_id)

    def stop(self) -> None:
        """End every daemon this cluster started (gateway first), then remove its folder."""
        for proc in reversed(self.procs):  # one at a time: a gateway whose OSD is gone hangs on exit
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        for f in getattr(self, "_logs", []):
            f.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart_gateway(self) -> None:
        """Stop and start radosgw alone (the data stays: it lives in the OSD), as an outage would."""
        rgw = self.procs.pop()
        rgw.send_signal(signal.SIGTERM)
        rgw.wait(10)
        self._daemon("rgw", ["radosgw", "-c", str(self.conf), "-f", "-n", "client.rgw"])
        self._wait(self._rgw_answers, f"the gateway at {self.endpoint} to answer again")

    # ------------------------------------------------------------------ S3
    def client(self, user: S3User | None = None):
        """A boto3 S3 client for this gateway (path-style; checksums only where S3 requires them,
        which is how Ceph 16 understands them)."""
        import boto3
        from botocore.config import Config

        u = user or self.user
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="default",
            aws_access_key_id=u.access_key, aws_secret_access_key=u.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def env(self, user: S3User | None = None) -> dict[str, str]:
        """The environment a `bwv server --blobs s3://...` child needs to sign in as `user`."""
        u = user or self.user
        return {"AWS_ACCESS_KEY_ID": u.access_key, "AWS_SECRET_ACCESS_KEY": u.secret_key}

    def blobs_url(self, bucket: str) -> str:
        return f"s3://{bucket}?endpoint={self.endpoint}"

    def _create_user(self, uid: str) -> S3User:
        access, secret = uuid.uuid4().hex[:20].upper(), uuid.uuid4().hex + uuid.uuid4().hex[:8]
        out = self._run(["radosgw-admin", "-c", str(self.conf), "-n", "client.rgw", "user", "create",
                         f"--uid={uid}", f"--display-name={uid}", f"--access-key={access}", f"--secret={secret}"])
        keys = json.loads(out)["keys"][0]
        return S3User(uid, keys["access_key"], keys["secret_key"])

    def add_user(self, uid: str) -> S3User:
        return self._create_user(uid)

    # ------------------------------------------------------------------ plumbing
    def _fsid(self) -> str:
        for line in self.conf.read_text().splitlines():
            if line.startswith("fsid = "):
                return line.split(" = ", 1)[1]
        raise AssertionError("no fsid in ceph.conf")

    def _run(self, argv: list[str], timeout: float = 30) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])}... exited {done.returncode}: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def _ceph(self, *args: str) -> str:
        return self._run(["ceph", "-c", str(self.conf), "--connect-timeout", "10", *args])

    def _daemon(self, name: str, argv: list[str]) -> None:
        if not hasattr(self, "_logs"):
            self._logs = []
        out = open(self.root / "log" / f"{name}.stderr", "ab")
        self._logs.append(out)
        self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                           start_new_session=True, preexec_fn=dies_with_parent()))

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited {proc.returncode} while waiting for {what}: "
                                       f"{self._tail(proc)}")
            if ready():
                return
            time.sleep(0.05)
        raise TimeoutError(f"waited {START_TIMEOUT_S:.0f} s for {what}; logs in {self.root / 'log'}")

    def _tail(self, proc: subprocess.Popen) -> str:
        logs = sorted((self.root / "log").glob("*"), key=lambda p: p.stat().st_mtime)
        return " | ".join(p.read_text(errors="replace")[-600:] for p in logs[-2:])

    def _osd_up(self) -> bool:
        try:
            return json.loads(self._ceph("osd", "stat", "-f", "json")).get("num_up_osds", 0) >= 1
        except (RuntimeError, subprocess.TimeoutExpired, ValueError):
            return False

    def _rgw_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint, timeout=1) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False




def session_fixture(name: str = "rgw"):
    """A session-scoped pytest fixture yielding a started `RgwCluster`, for any test folder's
    conftest (``rgw = rgw_kit.session_fixture()``).  It skips, naming the missing program, only
    when Ceph is not installed; a cluster that is installed but fails to start is an error."""
    import pytest

    @pytest.fixture(scope="session", name=name)
    def _rgw(tmp_path_factory: pytest.TempPathFactory):
        cluster = RgwCluster(tmp_path_factory.mktemp("rgw"))
        try:
            cluster.start()
        except RgwUnavailable as e:
            pytest.skip(str(e))
        try:
            yield cluster
        finally:
            cluster.stop()

    return _rgw


__all__ = ["RgwCluster", "RgwUnavailable", "S3User", "free_port", "missing_programs", "session_fixture"]
