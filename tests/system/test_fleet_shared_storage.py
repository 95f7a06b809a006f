"""Three ingest nodes sharing one PostgreSQL database and one Ceph RGW bucket, as a force runs them.

The nodes are `bwv server` processes with homes of their own (keys, registry)
that name the same `db` and `blobs` in config.toml: what one node ingests,
every node sees.  Two docks reach them through HAProxy.  While the cameras
empty, PostgreSQL is restarted (an immediate stop, as a crash) and then the
RGW gateway: every segment must end held exactly once — one row in the shared
database, one object in the bucket with the camera's very bytes — no camera
may let go of a file before the fleet held it, and the audit trail stays one
chain although three nodes wrote it.  Then the retention sweep is started on
all three nodes at once, again and again, and the one that runs is SIGKILLed
mid-batch: each due clip is deleted exactly once, nothing early.

PostgreSQL and RGW here are the test's own (not the session's shared ones), so
that restarting them disturbs no other test; PostgreSQL acknowledges a commit
only once its WAL is written (`durable_commits`), as a force's does, since an
immediate stop would otherwise lose the last receipts' rows.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import lb_kit
import pg_kit
import pytest
import rgw_kit

from lifecycle import lifecycle_kit
from openbwv.server import audit, lifecycle
from openbwv.server.errors import ConfigError, StoreError
from openbwv.server.s3store import S3BlobStore
from openbwv.server.service import open_metadata

from .fleet_kit import clone_node_home
from .system_kit import Camera, Custody, DockStation, EvidenceServer, add_dock, eventually

CAMERAS, SEGMENTS = 4, 4
MEDIA_BYTES = 1_000_000
UPLINK_BPS = 1_000_000  # per connection: each camera takes some seconds, so the restarts land mid-upload
# A node whose database or store is briefly gone answers 503 and stays UP for the balancer: a restart of a
# second or two is over before five failed checks a second apart, so no dock is sent to another node.
CHECKS = lb_kit.HealthCheck(interval_ms=1000, fall=5, rise=1)

load_balancer = lb_kit.load_balancer_fixture()


@pytest.fixture(scope="module")
def own_pg():
    cluster = pg_kit.PgCluster(durable_commits=True)
    try:
        cluster.start()
    except pg_kit.PgUnavailable as e:
        pytest.skip(str(e))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def own_rgw(tmp_path_factory):
    cluster = rgw_kit.RgwCluster(tmp_path_factory.mktemp("fleet-rgw"))
    try:
        cluster.start()
    except rgw_kit.RgwUnavailable as e:
        pytest.skip(str(e))
    yield cluster
    cluster.stop()


@pytest.fixture
def fleet_settings(own_pg, own_rgw, monkeypatch) -> tuple[str, str]:
    """(db URL, blobs URL): a fresh database and Object Lock bucket; the S3 credentials in the environment,
    which every node and command started by the test inherits."""
    for name, value in own_rgw.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"fleet-{uuid.uuid4().hex[:16]}"
    own_rgw.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return own_pg.new_database("fleet"), own_rgw.blobs_url(bucket)


class SharedCustody(Custody):
    """Custody over the fleet's shared storage: held = a row in the shared database and an object in the
    bucket whose bytes (as the store gives them back) are the camera's file."""

    def __init__(self, home, blobs_url: str):
        super().__init__(home)
        self.blobs = S3BlobStore.from_url(blobs_url)

    def why_not_held(self, segment_hash: str) -> str | None:
        """As Custody's, asked again while PostgreSQL or the gateway is being restarted (for up to 20 s):
        a receipt accepted just before a restart must be checked against what survives it."""
        for _ in range(80):
            try:
                return self._why_not_held(segment_hash)
            except (StoreError, ConfigError):
                time.sleep(0.25)
        return "neither the shared database nor the bucket could be read for 20 s"

    def _why_not_held(self, segment_hash: str) -> str | None:
        if self.records().segment(segment_hash) is None:
            return "the shared database has no row for it"
        try:
            with self.blobs.open(segment_hash) as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            return f"the bucket has no object for {segment_hash[:16]}"
        if digest != self.originals[segment_hash]:
            return f"the bucket's object for {segment_hash[:16]} is not the camera's file"
        return None


def bwv(home, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("bwv")
    return subprocess.run([str(exe), *argv], env=dict(os.environ, BWV_HOME=str(home.root)), capture_output=True,
                          text=True, timeout=timeout)


def test_three_nodes_hold_every_segment_once_through_a_postgresql_crash_and_a_gateway_restart(
        home, fleet_settings, own_pg, own_rgw, launch, slow_link, load_balancer, tmp_path):
    db_url, blobs_url = fleet_settings
    home.config_file.write_text(f'[server]\ndb = "{db_url}"\nblobs = "{blobs_url}"\n')
    cams: list[Camera] = []
    custody = None
    try:
        custody = SharedCustody(home, blobs_url)
        cams = [Camera(home, f"cam-{n}", custody) for n in range(1, CAMERAS + 1)]
        for cam in cams:
            cam.seal(SEGMENTS, MEDIA_BYTES)
        tokens = [add_dock(home, f"dock-{d}") for d in (1, 2)]  # into the shared database
        homes = [home] + [clone_node_home(home, tmp_path / f"node-{n}") for n in (2, 3)]
        nodes = [launch(EvidenceServer(h, tmp_path / f"node-{i}-logs", "--reserve-mb", "0", "--idle-timeout", "5"))
                 for i, h in enumerate(homes, 1)]
        lb = load_balancer(tmp_path / "lb", [lb_kit.Backend(f"node-{i}", n.port) for i, n in enumerate(nodes, 1)],
                           sticky=True, health=CHECKS)
        lb.wait_for({f"node-{i}": "UP" for i in (1, 2, 3)})
        docks = []
        for d, token in enumerate(tokens):
            uplink = slow_link(lb.port, UPLINK_BPS)
            pair = cams[2 * d:2 * d + 2]
            dock = launch(DockStation(tmp_path / f"dock-{d + 1}", f"dock-{d + 1}", token, uplink.url,
                                      {"bay-1": pair[0].directory, "bay-2": pair[1].directory}))
            for bay, cam in zip(("bay-1", "bay-2"), pair):
                cam.dock(dock.port_path(bay))
            docks.append(dock)
        custody.watch(cams)

        def held() -> int:
            try:
                return sum(s.segments for s in custody.records().device_summaries())
            except (StoreError, ConfigError):
                return -1  # PostgreSQL is restarting

        total = CAMERAS * SEGMENTS
        eventually(lambda: held() >= 3, 90, "three segments held by the fleet")
        own_pg.restart()  # an immediate stop: every node's connections break mid-upload
        eventually(lambda: held() >= total // 2, 120, "half the segments held after PostgreSQL came back")
        own_rgw.restart_gateway()
        eventually(lambda: all(cam.empty for cam in cams), 180, "every camera emptied after both restarts")
        custody.look(cams)
        assert custody.violations == []

        # Held exactly once: one row per (device, sequence), no chain flagged, one object per segment.
        sealed = {info.segment_hash.hex(): (cam.device_id, info.sequence) for cam in cams for info in cam.sealed}
        db = custody.records()
        assert {k: (r.device_id, r.sequence) for k in sealed if (r := db.segment(k))} == sealed
        assert {s.device_id: (s.segments, s.lowest, s.highest, s.flagged) for s in db.device_summaries()} == {
            cam.device_id: (SEGMENTS, 1, SEGMENTS, []) for cam in cams}
        s3 = custody.blobs
        listed = s3.s3.list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}segments/").get("Contents", [])
        assert sorted(o["Key"] for o in listed) == sorted(s3.data_name(k) for k in sealed)
        assert {k: custody.why_not_held(k) for k in sealed} == {k: None for k in sealed}

        served = lb.requests_served()
        assert sum(1 for n in served.values() if n > 0) >= 2, f"HAProxy spread the docks over the nodes: {served}"
        eventually(lambda: all(b.state == "clear" for d in docks for b in d.bays().values()), 30,
                   "every bay reports clear")
        for dock in docks:
            assert dock.stop() == 0
        for node in nodes:
            assert node.stop() == 0

        checked = bwv(home, "verify", "--held")  # public keys only, every object read back from the bucket
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"{total} segment(s) from {CAMERAS} device(s) verified; 0 problem(s)" in checked.stdout
        trail = bwv(home, "audit", "verify")  # one hash chain, written by three nodes
        assert trail.returncode == 0, trail.stdout + trail.stderr
    finally:
        for cam in cams:
            cam.undock()
        if custody is not None:
            custody.close()


DUE, KEPT = 80, 6  # enough due clips that every killed round still finds some left
KILL_ROUNDS = 8


def test_the_sweep_started_on_every_node_at_once_and_killed_mid_batch_deletes_each_due_clip_once(
        fleet_settings, tmp_path, monkeypatch):
    db_url, blobs_url = fleet_settings
    rng = random.Random(20261206)
    monkeypatch.setattr(lifecycle_kit, "new_database", lambda: db_url)
    now = datetime.now(lifecycle_kit.UTC)
    store = S3BlobStore.from_url(blobs_url + "&initial_lock_s=2")
    ev = lifecycle_kit.Evidence(tmp_path / "node-1", blobs=store)
    ev.home.config_file.write_text(f'[server]\ndb = "{db_url}"\nblobs = "{blobs_url}&initial_lock_s=2"\n')
    due = [ev.record(f"cam-{i % 3}", now - timedelta(days=40 + i % 10)) for i in range(DUE)]
    kept = [ev.record(f"cam-{i % 3}", now - timedelta(days=2 + i)) for i in range(KEPT)]
    ev.close()
    homes = [ev.home] + [clone_node_home(ev.home, tmp_path / f"node-{n}") for n in (2, 3)]

    exe = str(Path(sys.executable).with_name("bwv"))
    kills = 0
    for round_ in range(40):
        procs = [subprocess.Popen([exe, "retention", "sweep", "--batch", "1"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=dict(os.environ, BWV_HOME=str(h.root)))
                 for h in homes]
        errs = {p: b"" for p in procs}
        if round_ < KILL_ROUNDS:
            # The node whose sweep prints progress holds the shared lock (the others are refused, or
            # take it over once it dies): kill each that holds it a random number of batches in, at a
            # random instant inside the next one.
            for p in procs:
                os.set_blocking(p.stderr.fileno(), False)
            wanted = {p: rng.randint(1, 4) for p in procs}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                # Woken by the progress line itself: a batch takes milliseconds, so polling would be late.
                select.select([p.stderr for p in procs if p.poll() is None], [], [], 0.05)
                for p in procs:
                    errs[p] += p.stderr.read() or b""
                    if p.poll() is None and errs[p].count(b"clip(s) deleted") >= wanted[p]:
                        time.sleep(rng.uniform(0.0, 0.005))
                        p.send_signal(signal.SIGKILL)
                        p.wait()
                        kills += 1
            for p in procs:
                os.set_blocking(p.stderr.fileno(), True)
        outcomes = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            outcomes.append((p.returncode, out.decode(), (errs[p] + err).decode()))
        refused = [o for o in outcomes if o[0] == 1]
        assert all("another retention sweep is running" in err for _, _, err in refused), refused
        assert all(code in (0, 1, -signal.SIGKILL) for code, _, _ in outcomes), outcomes
        if round_ >= KILL_ROUNDS and any(code == 0 and " deleted 0 clip(s)" in out for code, out, _ in outcomes):
            break  # a sweep ran to its end and found nothing more to do
    else:
        pytest.fail("the sweeps never settled")
    assert kills >= KILL_ROUNDS // 2, f"only {kills} sweeps were killed: the test did not exercise the crash paths"

    db = open_metadata(homes[2])
    try:
        reader = db.reader()
        for h in due:
            assert lifecycle.clip(reader, h.clip_id).state == "deleted"
            assert len(audit.query(reader, action="delete", target=f"clip:{h.clip_id}")) == 1
            [stone] = lifecycle.tombstones_of(reader, h.clip_id)
            assert stone["segment_hash"] == h.segment_hash
            assert not store.exists(h.segment_hash)  # its key is destroyed, whatever the lock still keeps
        for h in kept:
            assert lifecycle.clip(reader, h.clip_id).state == "held"
            assert store.exists(h.segment_hash)
        assert lifecycle.counts_by_state(reader) == {"deleted": DUE, "held": KEPT}
        assert len(audit.query(reader, action="delete", limit=10_000)) == DUE
    finally:
        db.close()
    trail = bwv(homes[1], "audit", "verify")
    assert trail.returncode == 0, trail.stdout + trail.stderr
