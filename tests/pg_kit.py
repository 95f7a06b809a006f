"""A real PostgreSQL 15 on loopback, started by the tests in about a second, and a fresh database per test.

Debian's server binaries live off PATH in /usr/lib/postgresql/15/bin and
refuse to run as root, so the cluster is made and run as the ``postgres``
user (``runuser -u postgres --``) in a folder of its own under /tmp (a
pytest tmp_path sits under a root-only folder postgres could not enter).  It
listens on 127.0.0.1 on a port picked free for this run, keeps its socket in
that folder (``-k``), trusts loopback connections (nobody else can reach it)
and runs with ``fsync=off``: durability is the engine's business, not what
these tests measure (../shared/DESIGN.md; a benchmark reporting durable
figures starts its cluster with ``PgCluster(fsync=True)``).

`PgCluster.start()` returns once the server accepts connections;
`new_database()` creates an empty database and returns its URL; `stop()`
ends the server (by pg_ctl, then by pid) and removes the folder, and is safe
to call twice or after a failed start.  The kit imports nothing from
OpenBWV, so benchmarks and later multi-node tests can load it by path.

    with PgCluster() as pg:
        url = pg.new_database()      # postgresql://postgres@127.0.0.1:PORT/bwv_1
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("BWV_PG_BIN", "/usr/lib/postgresql/15/bin"))
PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
RUN_AS = "postgres"
START_TIMEOUT_S = 60.0


class PgUnavailable(RuntimeError):
    """PostgreSQL 15 is not installed here (tests skip, saying what is missing and how to get it)."""


def missing() -> list[str]:
    """What this kit needs and cannot find (empty: it can start a cluster)."""
    out = [str(PG_BIN / p) for p in PROGRAMS if not (PG_BIN / p).is_file()]
    if shutil.which("runuser") is None:
        out.append("runuser (util-linux)")
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        out.append(f"the {RUN_AS!r} system user (made by the postgresql-15 package)")
    return out


def free_port() -> int:
    """A port nobody listens on now (the server binds it a moment later; loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One PostgreSQL 15 cluster in a temporary folder, reachable on 127.0.0.1 only."""

    def __init__(self, *, user: str = "postgres", durable_commits: bool = False, fsync: bool = False):
        self.user = user  # the cluster's superuser, who the tests connect as
        # Off (the default) a commit returns before its WAL is written: fast, and harmless while no test
        # kills the server.  A test that restarts PostgreSQL with `restart()` (an immediate stop, as a
        # crash) needs every acknowledged commit to survive it, as a force's PostgreSQL does.
        self.durable_commits = durable_commits
        # On, every commit waits for its WAL to reach the disk (fsync, full page writes, synchronous
        # commit), as a production server's does: for a benchmark whose figure is set beside SQLite's
        # synchronous=FULL, not for tests (the machine does not lose power in a test).
        self.fsync = fsync
        self.root: Path | None = None
        self.port = 0
        self.pid: int | None = None
        self._names = itertools.count(1)

    def __enter__(self) -> "PgCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _as_postgres(self, *argv: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", RUN_AS, "--", *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def start(self) -> "PgCluster":
        gaps = missing()
        if gaps:
            raise PgUnavailable("PostgreSQL 15 is not installed here (apt-get install postgresql-15, or "
                                f"`make setup` as root); missing: {', '.join(gaps)}")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bwv-pg-"))
        entry = pwd.getpwnam(RUN_AS)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        done = self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                                 "--encoding=UTF8", "--locale=C", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        self.port = free_port()
        done = self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                                 "-o", self._options(), "-w", "-t", str(int(START_TIMEOUT_S)), "start")
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start ({done.returncode}): {done.stderr.strip()}\n"
                               f"{self.log()}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self._wait_ready()

    def _options(self) -> str:
        """The server's settings: loopback only, and no fsync unless asked (the machine does not lose power
        in a test; a killed server's writes are in the kernel's cache and survive it)."""
        return " ".join([
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}", f"-k {self.root}",
            f"-c fsync={'on' if self.fsync else 'off'}",
            f"-c synchronous_commit={'on' if self.durable_commits or self.fsync else 'off'}",
            f"-c full_page_writes={'on' if self.fsync else 'off'}", "-c max_connections=400",
            "-c shared_buffers=64MB",
        ])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            done = self._as_postgres(str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                                     "-d", "postgres", "-Atc", "SELECT 1", timeout=10)
            if done.returncode == 0 and done.stdout.strip() == "1":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} never answered: {done.stderr.strip()}")
            time.sleep(0.05)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement as the superuser with psql; its output (unaligned, tuples only)."""
        done = self._as_postgres(str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                                 "-d", dbname, "-v", "ON_ERROR_STOP=1", "-Atc", statement, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {done.stderr.strip()}")
        return done.stdout

    def new_database(self, prefix: str = "bwv") -> str:
        """A new, empty database (template0: nothing any other test left behind); its URL."""
        import psycopg  # a client connection, not a psql process per database: tests make hundreds

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def log(self) -> str:
        try:
            return (self.root / "log").read_text(errors="replace")[-4000:]
        except (OSError, TypeError):
            return ""

    def restart(self) -> None:
        """Stop the server at once (as a crash would) and start it again on the same port and data."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        done = self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                                 "-o", self._options(), "-w", "start")
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not restart: {done.stderr.strip()}\n{self.log()}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self._wait_ready()

    def stop(self) -> None:
        """End the server at once (immediate: the cluster is thrown away, so no shutdown checkpoint of every
        database the tests made) and remove its folder."""
        if self.root is None:
            return
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "20", "stop",
                              timeout=30)
        if self.pid is not None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                pass
            else:
                os.kill(self.pid, signal.SIGKILL)  # pg_ctl could not stop it: this pid is ours, started above
        self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


def session_fixture(name: str = "pg"):
    """A session-scoped pytest fixture yielding a started `PgCluster`, for any test folder's conftest
    (``pg = pg_kit.session_fixture()``).  It skips, naming what is missing, only when PostgreSQL 15 is
    not installed; a cluster that is installed but fails to start is an error, never a skip."""
    import pytest

    @pytest.fixture(scope="session", name=name)
    def _pg():
        cluster = PgCluster()
        try:
            cluster.start()
        except PgUnavailable as e:
            pytest.skip(str(e))
        try:
            yield cluster
        finally:
            cluster.stop()

    return _pg


__all__ = ["PgCluster", "PgUnavailable", "free_port", "missing", "session_fixture"]
