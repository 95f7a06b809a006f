"""A simulated end of shift into a fleet: docks -> HAProxy -> 1 or 2 `bwv server` nodes -> PostgreSQL + Ceph RGW.

A plugin of bench.py (see `load_plugins` there).  Everything is started here
on loopback, as the tests start it: PostgreSQL 15 (tests/pg_kit.py; fsync off,
as in the tests), Ceph RGW with one memstore OSD (tests/rgw_kit.py: objects in
RAM, so the object store costs less than a disk-backed cluster would), HAProxy
from Debian (tests/lb_kit.py; `leastconn`, since an upload is a long series of
PATCHes), and the nodes, which share the database, the bucket and the server
keys, as a force's nodes would.

The same sealed segments (random media, sealed once, not timed) are uploaded
twice, first to one node and then to two, each time into a fresh database and
bucket, so neither run finds anything already held.  Docks are threads of
this process (the dock's own `TusUploader`, a state file each); each brings
several cameras, one after the other.

On this machine the two runs share 2 cores among the docks, HAProxy, the
nodes, PostgreSQL and the gateway, so a second node adds no processor: the
scaling figure measures what a second node costs or gains when the machine is
the limit, not what a second machine would add.  docs/deployment.md turns the
per-node figures into a capacity model.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from bench import (MB, MiB, Figure, Figures, _p99, _receipt_clock_uploader, _run_docks, _seal_segments,
                   _environment, _server_kit, _tests_module, benchmark, progress)

FLEET_DOCKS = int(os.environ.get("BWV_BENCH_FLEET_DOCKS", "32"))
FLEET_CAMERAS_PER_DOCK = 2
FLEET_SEGMENTS = int(os.environ.get("BWV_BENCH_FLEET_SEGMENTS", "2"))  # per camera
FLEET_SEGMENT_MIB = 4  # 32 docks x 2 cameras x 2 x 4 MiB: 512 MiB of media a run


def _reference(nodes: int):
    def text(f: Figures) -> str:
        return (f"{FLEET_DOCKS} docks at once ({FLEET_CAMERAS_PER_DOCK} cameras each, {FLEET_SEGMENTS} x "
                f"{FLEET_SEGMENT_MIB} MiB sealed segments per camera) -> HAProxy (leastconn) -> {nodes} `bwv server` "
                f"node(s) -> PostgreSQL 15 + Ceph RGW (memstore, Object Lock), all on this machine's 2 cores; "
                "all bytes / (start to last receipt)")
    return text


@benchmark(
    "fleet",
    fleet_ingest_mb_s_1_node=Figure("MB/s", _reference(1)),
    fleet_ingest_mb_s_2_nodes=Figure("MB/s", _reference(2)),
    fleet_scaling_2_nodes=Figure(
        "ratio", "fleet_ingest_mb_s_2_nodes / (2 x fleet_ingest_mb_s_1_node), same run; on one 2-core machine "
                 "the limit is the machine, not the node (1.0 would be perfect scaling onto a second machine)"),
    fleet_p99_receipt_ms=Figure(
        "ms", lambda f: "p99 (nearest rank) over every segment of the 2-node run: last body byte of the final "
                        "PATCH handed to the socket -> its 204 with the receipt back in the dock; 1-node run "
                        f"{f['fleet_p99_receipt_ms_1_node']:.0f} ms, medians {f['fleet_median_receipt_ms']:.0f} ms "
                        "(2 nodes)"),
    fleet_p99_receipt_ms_1_node=Figure("ms", "the same, in the 1-node run"),
    fleet_median_receipt_ms=Figure("ms", "the median of the 2-node run's receipt waits"),
    fleet_cpu_s_per_gb_nodes=Figure("s/GB", "processor seconds (user + system, from /proc) the ingest nodes spent per "
                                            "GB ingested, 2-node run: the capacity model's node cost"),
    fleet_cpu_s_per_gb_postgresql=Figure("s/GB", "the same for PostgreSQL (postmaster and its backends)"),
    fleet_cpu_s_per_gb_rgw=Figure("s/GB", "the same for Ceph (monitor, memstore OSD, radosgw)"),
    fleet_cpu_s_per_gb_lb=Figure("s/GB", "the same for HAProxy"),
    fleet_cpu_s_per_gb_docks=Figure("s/GB", "the same for the docks (this process: read, hash, send)"),
)
def bench_fleet() -> Figures:
    from openbwv.enrol import create_server_keys, enrol_device, load_device
    from openbwv.home import Home
    from openbwv.sealed.storage import DeviceStorage
    from openbwv.server.auth import DockTokens
    from openbwv.server.service import open_metadata

    pg_kit = _tests_module("tests/pg_kit.py")
    rgw_kit = _tests_module("tests/rgw_kit.py")
    lb_kit = _tests_module("tests/lb_kit.py")
    server_kit = _server_kit()
    ReceiptClock = _receipt_clock_uploader()
    figures: Figures = {}
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-fleet-") as tmp:
        root = Path(tmp)
        home = Home(root / "home")
        create_server_keys(home)
        cameras = FLEET_DOCKS * FLEET_CAMERAS_PER_DOCK
        progress(f"fleet: sealing {cameras} cameras x {FLEET_SEGMENTS} segments of {FLEET_SEGMENT_MIB} MiB "
                 "(not timed)")
        sealed: list[list[tuple[str, object]]] = []
        for d in range(FLEET_DOCKS):
            dock_segments = []
            for c in range(FLEET_CAMERAS_PER_DOCK):
                device_id = f"bench-cam-{d + 1}-{c + 1}"
                enrol_device(home, device_id)
                key, server_public = load_device(home, device_id)
                storage = DeviceStorage(root / "cameras" / device_id, key, server_public)
                dock_segments += [(device_id, info)
                                  for info in _seal_segments(storage, FLEET_SEGMENTS, FLEET_SEGMENT_MIB * MiB)]
            sealed.append(dock_segments)
        total = sum(info.path.stat().st_size for dock in sealed for _, info in dock)
        verifier = server_kit.verifier(home)

        with pg_kit.PgCluster() as pg, rgw_kit.RgwCluster(root / "rgw") as rgw:
            progress(f"fleet: PostgreSQL on port {pg.port}, Ceph RGW at {rgw.endpoint}")
            with _environment(rgw.env()):  # the nodes inherit the credentials, as under systemd
                for nodes in (1, 2):
                    database = pg.new_database(f"fleet_{nodes}")
                    bucket = f"bench-fleet-{nodes}"
                    rgw.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
                    home.config_file.write_text(
                        f'[server]\ndb = "{database}"\nblobs = "{rgw.blobs_url(bucket)}"\n')
                    db = open_metadata(home)
                    try:
                        tokens = [DockTokens(db).add_dock(f"bench-dock-{d + 1}") for d in range(FLEET_DOCKS)]
                    finally:
                        db.close()
                    homes = [home] + [_node_home(home, root / f"run-{nodes}" / f"node-{n}") for n in range(2, nodes + 1)]
                    servers = [server_kit.ServerProcess(h.root, "--reserve-mb", "0", "--max-concurrent",
                                                        str(FLEET_DOCKS), log=root / f"run-{nodes}-node-{n}.log")
                               for n, h in enumerate(homes, 1)]
                    for server in servers:
                        server.start()
                    try:
                        lb = lb_kit.LoadBalancer(root / f"run-{nodes}" / "lb",
                                                 [lb_kit.Backend(f"node-{n}", urlsplit(s.url).port)
                                                  for n, s in enumerate(servers, 1)],
                                                 balance="leastconn")
                        with lb:
                            lb.wait_for({f"node-{n}": "UP" for n in range(1, nodes + 1)})
                            uploaders = [ReceiptClock(lb.url, token, state_path=root / f"run-{nodes}" / "docks" /
                                                      str(d) / "uploads.json") for d, token in enumerate(tokens)]
                            progress(f"fleet: {FLEET_DOCKS} docks uploading {total / MB:.0f} MB to {nodes} node(s)")
                            parts = {"nodes": [s.proc.pid for s in servers], "postgresql": [pg.pid],
                                     "rgw": [p.pid for p in rgw.procs], "lb": [lb.proc.pid]}
                            before = {k: sum(_cpu_s(p) for p in pids) for k, pids in parts.items()}
                            docks_before = sum(os.times()[:2])
                            elapsed, dock_s, receipts = _run_docks(uploaders, sealed)
                            spent = {k: sum(_cpu_s(p) for p in pids) - before[k] for k, pids in parts.items()}
                            spent["docks"] = sum(os.times()[:2]) - docks_before
                            served = lb.requests_served()
                    finally:
                        for server in servers:
                            code = server.stop()
                            if code != 0:
                                raise SystemExit(f"bench: a fleet node exited {code} on SIGTERM; its log:\n"
                                                 f"{server.log()[-3000:]}")
                    for dock, got in zip(sealed, receipts, strict=True):
                        for (device_id, info), receipt in zip(dock, got, strict=True):
                            checked = verifier.check_for(receipt, device_id=device_id, sequence=info.sequence,
                                                         segment_hash=info.segment_hash)
                            if checked.size != info.path.stat().st_size:
                                raise SystemExit(f"bench: the receipt for {device_id} #{info.sequence} names "
                                                 f"{checked.size} bytes")
                    waits = [s * 1000 for u in uploaders for s in u.receipt_s]
                    if len(waits) != total_segments(sealed):
                        raise SystemExit(f"bench: timed {len(waits)} receipts, expected {total_segments(sealed)}: "
                                         "a final PATCH was retried or not seen")
                    rate = total / MB / elapsed
                    progress(f"fleet: {nodes} node(s): {rate:.0f} MB/s in {elapsed:.1f} s (docks done after "
                             f"{dock_s[0]:.1f}-{dock_s[-1]:.1f} s); requests per node {served}; receipt wait "
                             f"median {statistics.median(waits):.0f} ms, p99 {_p99(waits):.0f} ms")
                    gb = total / 1e9
                    progress(f"fleet: {nodes} node(s): processor seconds per GB: " +
                             ", ".join(f"{k} {v / gb:.1f}" for k, v in spent.items()) +
                             f"; the machine's 2 cores offered {2 * elapsed / gb:.1f}")
                    if nodes == 2:
                        figures.update({f"fleet_cpu_s_per_gb_{k}": v / gb for k, v in spent.items()})
                    if nodes == 1:
                        figures.update(fleet_ingest_mb_s_1_node=rate, fleet_p99_receipt_ms_1_node=_p99(waits))
                    else:
                        figures.update(fleet_ingest_mb_s_2_nodes=rate, fleet_p99_receipt_ms=_p99(waits),
                                       fleet_median_receipt_ms=statistics.median(waits))
    figures["fleet_scaling_2_nodes"] = figures["fleet_ingest_mb_s_2_nodes"] / (2 * figures["fleet_ingest_mb_s_1_node"])
    return figures


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """Processor seconds (user + system) of process `pid`, its reaped children, and its live children:
    PostgreSQL's backends are children of its postmaster, counted there once they exit."""
    def stat(p: int) -> list[str]:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()

    fields = stat(pid)
    total = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                child = stat(int(entry))
            except OSError:
                continue  # gone meanwhile
            if int(child[1]) == pid:
                total += int(child[11]) + int(child[12])
    return total / _TICK


def total_segments(sealed: list[list]) -> int:
    return sum(len(dock) for dock in sealed)


def _node_home(first, root: Path):
    """Another node's BWV_HOME: the first node's config, keys and device registry (what a fleet's nodes
    share as files), none of its local state."""
    from openbwv.home import Home

    node = Home(root)
    node.root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(first.server_dir, node.server_dir, ignore=shutil.ignore_patterns("store", "uploads", "views"))
    shutil.copy2(first.config_file, node.config_file)
    return node
