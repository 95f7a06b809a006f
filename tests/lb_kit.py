"""A real HAProxy in front of N evidence-server nodes on loopback, for the fleet tests and the benchmarks.

`haproxy_config()` is the configuration as text (pure: ports and options in),
the same layout docs/deployment.md describes for a force: one HTTP frontend,
one backend of ingest nodes health-checked on `GET /api/v1/health`, timeouts
sized for tus PATCH bodies (inactivity timeouts, not whole-request ones, so
a long upload on a slow uplink passes as long as bytes keep moving), and a
statistics page on a second loopback port from which a test reads what
HAProxy thinks of each node (UP, DOWN, MAINT).

`LoadBalancer` runs Debian's `haproxy` in the foreground (`-db`) as a child
of the test, checks the configuration first (`haproxy -c`), and stops it at
the end, on failure too (use it as a context manager or through
`load_balancer_fixture()`).  Only 127.0.0.1 on ephemeral ports is bound.

Balancing: `roundrobin` per request by default, right for nodes that share
their database and upload store (any node can continue any upload).  For
nodes that do not share storage, `sticky=True` adds a cookie that keeps a
client's connection on the node that began its uploads while that node is
up (`requests.Session` keeps cookies), and `option redispatch` sends it to
another one when it is down.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence
from kit import dies_with_parent  # tests/ is on the path (pytest's pythonpath, the bench's loader)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class LbUnavailable(RuntimeError):
    """HAProxy is not installed on this machine."""


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Backend:
    """One ingest node: a `bwv server` listening on 127.0.0.1:port."""

    name: str
    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Timeouts:
    """HAProxy's timeouts, in seconds.  Why these values (see docs/deployment.md):

    * connect: a node that does not accept within this is down; the request is
      retried on another node (`retries`, `option redispatch`).
    * client / server: *inactivity* while a request or response is in flight.
      A tus PATCH of 4 MiB on a 1 Mbit/s uplink takes half a minute but never
      sits idle; a node's reply to the last chunk waits for fsync and the
      segment's verification.  Five minutes covers both with room, and is
      longer than the dock's own read timeout (120 s), so the dock, not the
      balancer, decides when a node is too slow.
    * http_request: the request line and headers only (the body is streamed,
      not buffered), so a client that opens a connection and sends nothing
      is dropped soon.
    * check: how long a health check may take before it counts as failed.
    """

    connect_s: float = 5
    client_s: float = 300
    server_s: float = 300
    http_request_s: float = 30
    http_keep_alive_s: float = 60
    queue_s: float = 30
    check_s: float = 2


@dataclass(frozen=True)
class HealthCheck:
    """`GET path` must answer 200; `fall` failures in a row mark a node DOWN, `rise` successes UP again."""

    path: str = "/api/v1/health"
    interval_ms: int = 2000
    fall: int = 3
    rise: int = 2


def _ms(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


def haproxy_config(listen_port: int, backends: Sequence[Backend], *, stats_port: int,
                   balance: str = "roundrobin", sticky: bool = False, health: HealthCheck = HealthCheck(),
                   timeouts: Timeouts = Timeouts(), maxconn: int = 4096, retries: int = 2) -> str:
    """The haproxy.cfg text for `backends` behind 127.0.0.1:listen_port."""
    if not backends:
        raise ValueError("a load balancer needs at least one backend")
    if balance not in ("roundrobin", "leastconn", "source", "first"):
        raise ValueError(f"balance {balance!r}: use roundrobin, leastconn, source or first")
    t = timeouts
    lines = [
        "global",
        f"    maxconn {maxconn}",
        "    log stderr format raw local0 info",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option redispatch",  # a request whose node is down goes to another one
        f"    retries {retries}",
        f"    timeout connect {_ms(t.connect_s)}",
        f"    timeout client {_ms(t.client_s)}",
        f"    timeout server {_ms(t.server_s)}",
        f"    timeout http-request {_ms(t.http_request_s)}",
        f"    timeout http-keep-alive {_ms(t.http_keep_alive_s)}",
        f"    timeout queue {_ms(t.queue_s)}",
        f"    timeout check {_ms(t.check_s)}",
        "",
        "frontend ingest",
        f"    bind 127.0.0.1:{listen_port}",
        "    default_backend nodes",
        "",
        "backend nodes",
        f"    balance {balance}",
        "    option httpchk",
        f"    http-check send meth GET uri {health.path}",
        "    http-check expect status 200",
        f"    default-server check inter {health.interval_ms}ms fall {health.fall} rise {health.rise}",
    ]
    if sticky:
        lines.append("    cookie BWVNODE insert indirect nocache")
    for b in backends:
        lines.append(f"    server {b.name} {b.host}:{b.port}" + (f" cookie {b.name}" if sticky else ""))
    lines += [
        "",
        "frontend stats",
    "    http-request set-log-level silent",  # the tests poll it; keep the log for the traffic
        f"    bind 127.0.0.1:{stats_port}",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
        "",
    ]
    return "\n".join(lines)


@dataclass
class LoadBalancer:
    """HAProxy as a child process: `start()`, `url`, `states()`, `wait_for()`, `stop()`."""

    workdir: Path
    backends: Sequence[Backend]
    balance: str = "roundrobin"
    sticky: bool = False
    health: HealthCheck = HealthCheck()
    timeouts: Timeouts = Timeouts()
    port: int = 0
    stats_port: int = 0
    proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return Path(self.workdir) / "haproxy.cfg"

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "haproxy.log"

    def start(self) -> "LoadBalancer":
        if not os.access(HAPROXY, os.X_OK):
            raise LbUnavailable(f"haproxy is not installed ({HAPROXY}); scripts/system-packages.sh installs it")
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.stats_port = self.stats_port or free_port()
        self.config_path.write_text(haproxy_config(self.port, self.backends, stats_port=self.stats_port,
                                                   balance=self.balance, sticky=self.sticky, health=self.health,
                                                   timeouts=self.timeouts))
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.config_path)], capture_output=True, text=True,
                               timeout=START_TIMEOUT_S)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses {self.config_path}:\n{check.stdout}{check.stderr}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True,
                                         preexec_fn=dies_with_parent())
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._stats_answer():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not start (exit {self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM (haproxy's hard stop: connections cut, as a balancer failing would), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "LoadBalancer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _stats_answer(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=1):
                return True
        except (OSError, urllib.error.URLError):
            return False

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's statistics CSV, a dict per row (frontend, backend, each server)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5) as reply:
            text = reply.read().decode()
        return list(csv.DictReader(io.StringIO(text.lstrip("# "))))

    def states(self) -> dict[str, str]:
        """Backend server name -> HAProxy's view of it: "UP", "DOWN", "UP 1/2" (rising)..."""
        return {row["svname"]: row["status"] for row in self.stats()
                if row["pxname"] == "nodes" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def requests_served(self) -> dict[str, int]:
        """Backend server name -> HTTP requests HAProxy has sent it (health checks not counted)."""
        return {row["svname"]: int(row["stot"] or 0) for row in self.stats()
                if row["pxname"] == "nodes" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_for(self, wanted: dict[str, str], timeout: float = 30.0) -> None:
        """Wait until each named node has the given status (e.g. {"node-1": "DOWN"})."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.states()
            if all(now.get(name) == status for name, status in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy's view of the nodes is {now}, not {wanted}, after {timeout:g} s")
            time.sleep(0.1)


def load_balancer_fixture(name: str = "load_balancer"):
    """A pytest fixture `load_balancer(workdir, backends, **options)` that starts HAProxy and stops every
    one it started at the end of the test, however it ended.  Skips, naming the program, only when
    haproxy is not installed."""
    import pytest

    @pytest.fixture(name=name)
    def _fixture() -> Iterator:
        started: list[LoadBalancer] = []

        def make(workdir: Path, backends: Sequence[Backend], **options) -> LoadBalancer:
            lb = LoadBalancer(workdir, backends, **options)
            started.append(lb)
            try:
                return lb.start()
            except LbUnavailable as e:
                pytest.skip(str(e))

        yield make
        for lb in started:
            lb.stop()

    return _fixture


__all__ = ["Backend", "HealthCheck", "LbUnavailable", "LoadBalancer", "Timeouts", "free_port", "haproxy_config",
           "load_balancer_fixture"]
