"""A dock uploads through a real HAProxy to two `bwv server` nodes, and loses nothing when one is SIGKILLed mid-upload.

HAProxy (tests/lb_kit.py, the layout of docs/deployment.md) balances the
two nodes and checks them on `GET /api/v1/health`.  The nodes share keys but
not storage (tests/system/fleet_kit.py), so the balancer keeps each of the
dock's connections on the node that began its uploads (a cookie), and the
dock is given the balancer's one URL.  One node is killed while part of a
segment is on it, after it has already held one: HAProxy marks it DOWN,
sends the dock's next request to the other node, which does not know the
upload (404), and the dock sends the segment again from byte 0.  Both
cameras end empty, every segment held by exactly one node, and no file
left a camera before a node held it.
"""

from __future__ import annotations

import os
import subprocess

import lb_kit
import pytest

from .fleet_kit import FleetCustody, assert_fleet_holds_exactly_once, clone_node_home
from .system_kit import Camera, DockStation, EvidenceServer, add_dock, eventually

SEGMENTS = 3
MEDIA_BYTES = 2_500_000  # one PATCH each: the kill lands inside a chunk's body
UPLINK_BPS = 1_250_000  # per connection, dock to balancer: two seconds a segment
# Quick checks for a test (the field's are in docs/deployment.md): a dead node is DOWN within a second.
CHECKS = lb_kit.HealthCheck(interval_ms=300, fall=2, rise=1)

load_balancer = lb_kit.load_balancer_fixture()


def test_through_haproxy_a_node_killed_mid_upload_costs_a_resend_and_never_a_segment(
        home, launch, slow_link, load_balancer, tmp_path):
    cams: list[Camera] = []
    custody = None
    try:
        cams = [Camera(home, f"cam-{n}") for n in (1, 2)]
        token = add_dock(home, "dock-1")
        homes = [home, clone_node_home(home, tmp_path / "node-2")]
        custody = FleetCustody(homes)
        for cam in cams:
            cam.custody = custody
            cam.seal(SEGMENTS, MEDIA_BYTES)
        nodes = [launch(EvidenceServer(h, tmp_path / f"node-{i}-logs", "--idle-timeout", "5"))
                 for i, h in enumerate(homes, 1)]
        lb = load_balancer(tmp_path / "lb", [lb_kit.Backend(f"node-{i}", n.port) for i, n in enumerate(nodes, 1)],
                           sticky=True, health=CHECKS)
        lb.wait_for({"node-1": "UP", "node-2": "UP"})
        uplink = slow_link(lb.port, UPLINK_BPS)
        dock = launch(DockStation(tmp_path / "dock", "dock-1", token, uplink.url,
                                  {"bay-1": cams[0].directory, "bay-2": cams[1].directory}))
        for bay, cam in zip(("bay-1", "bay-2"), cams):
            cam.dock(dock.port_path(bay))
        custody.watch(cams)

        segment_size = min(info.path.stat().st_size for info in cams[0].sealed)

        def mid_upload_after_holding_one() -> int | None:
            """A node that holds a segment already and part of another one now, or None."""
            for i, h in enumerate(homes):
                part_way = any(0.05 * segment_size < p.stat().st_size < 0.6 * segment_size
                               for p in (h.server_dir / "uploads").glob("*.part"))
                if part_way and sum(s.segments for s in custody.nodes[i].records().device_summaries()) >= 1:
                    return i
            return None

        found: list[int] = []
        eventually(lambda: found.append(mid_upload_after_holding_one()) or found[-1] is not None, 60,
                   "a node part-way through a second segment")
        victim = found[-1]
        nodes[victim].kill()
        survivor = 1 - victim
        held_by_victim = {key for key in custody.originals if custody.nodes[victim].why_not_held(key) is None}
        lb.wait_for({f"node-{victim + 1}": "DOWN", f"node-{survivor + 1}": "UP"})

        eventually(lambda: all(cam.empty for cam in cams), 90, "both cameras emptied after a node was killed")
        custody.look(cams)
        assert custody.violations == []
        by_node = assert_fleet_holds_exactly_once(custody, cams)
        assert by_node[victim + 1] == held_by_victim and held_by_victim, "the killed node kept what it held"
        assert len(by_node[survivor + 1]) == 2 * SEGMENTS - len(held_by_victim)

        log = dock.log()
        assert "event=upload_retry" in log  # the cut-off PATCH: retried, nothing freed
        assert "event=upload_restart" in log and "reason=upload_unknown_here status=404" in log
        served = lb.requests_served()
        assert served["node-1"] > 0 and served["node-2"] > 0, f"HAProxy sent both nodes uploads: {served}"
        # The cameras are empty a moment before their bays write that they are clear.
        eventually(lambda: all(b.state == "clear" for b in dock.bays().values()), 30, "every bay reports clear")
        assert all(b.segments_freed == SEGMENTS for b in dock.bays().values())
        assert dock.stop() == 0
        assert nodes[survivor].stop() == 0
    finally:
        for cam in cams:
            cam.undock()
        if custody is not None:
            custody.close()


def test_the_load_balancer_config_checks_each_node_on_health_and_sizes_timeouts_for_upload_bodies(tmp_path):
    text = lb_kit.haproxy_config(8443, [lb_kit.Backend("node-1", 9001), lb_kit.Backend("node-2", 9002)],
                                 stats_port=8444)
    assert "http-check send meth GET uri /api/v1/health" in text and "http-check expect status 200" in text
    assert "    server node-1 127.0.0.1:9001\n    server node-2 127.0.0.1:9002" in text
    assert "timeout client 300000ms" in text and "timeout server 300000ms" in text  # idle, not whole-request
    assert "bind 127.0.0.1:8443" in text and "bind 127.0.0.1:8444" in text and "0.0.0.0" not in text
    sticky = lb_kit.haproxy_config(8443, [lb_kit.Backend("node-1", 9001)], stats_port=8444, sticky=True)
    assert "cookie BWVNODE insert indirect nocache" in sticky and "server node-1 127.0.0.1:9001 cookie node-1" in sticky
    if not os.access(lb_kit.HAPROXY, os.X_OK):
        pytest.skip(f"haproxy is not installed ({lb_kit.HAPROXY}); scripts/system-packages.sh installs it")
    for i, cfg in enumerate((text, sticky)):
        (tmp_path / f"{i}.cfg").write_text(cfg)
        check = subprocess.run([lb_kit.HAPROXY, "-c", "-f", str(tmp_path / f"{i}.cfg")], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "WARNING" not in check.stdout + check.stderr, check.stdout + check.stderr
