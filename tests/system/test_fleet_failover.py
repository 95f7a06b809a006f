"""A dock given two evidence servers spreads its bays over them and, when one is SIGKILLed mid-upload, goes on with the other.

Two `bwv server` nodes with the same server keys and separate homes
(tests/system/fleet_kit.py says why), one `bwv dock` with `--server A
--server B` and two bays: bay-1's home is node A, bay-2's node B.  Node A
is reached over a slow uplink, so it can be killed while a segment is
half-way there, after it has already held (and the camera freed) an
earlier one.  The dock must switch bay-1 to node B, say so in its log and
status, start the interrupted segment again there (node B does not know the
upload: 404), and every camera must end empty, each segment held by exactly
one node, no file freed before a node held it.
"""

from __future__ import annotations

from pathlib import Path

from .fleet_kit import FleetCustody, FleetDock, assert_fleet_holds_exactly_once, clone_node_home
from .system_kit import Camera, EvidenceServer, add_dock, assert_server_holds_exactly, eventually

SEGMENTS = 3
MEDIA_BYTES = 2_500_000  # one PATCH each: the kill lands inside a chunk's body
UPLINK_BPS = 1_250_000  # to node A: two seconds a segment, a wide window for the kill


def test_killing_one_of_two_servers_mid_upload_moves_its_bays_to_the_other_and_frees_only_held_footage(
        home, launch, slow_link, tmp_path):
    cams = []
    custody = None
    try:
        cams = [Camera(home, f"cam-{n}") for n in (1, 2)]
        token = add_dock(home, "dock-1")
        node_b_home = clone_node_home(home, tmp_path / "node-b")  # same keys, registry and dock token
        custody = FleetCustody([home, node_b_home])
        for cam in cams:
            cam.custody = custody
            cam.seal(SEGMENTS, MEDIA_BYTES)

        node_a = launch(EvidenceServer(home, tmp_path / "node-a-logs", "--idle-timeout", "5"))
        node_b = launch(EvidenceServer(node_b_home, tmp_path / "node-b-logs", "--idle-timeout", "5"))
        uplink_a = slow_link(node_a.port, UPLINK_BPS)
        a_label, b_label = uplink_a.url.removeprefix("http://"), node_b.url.removeprefix("http://")
        dock = launch(FleetDock(tmp_path / "dock", "dock-1", token, [uplink_a.url, node_b.url],
                                {"bay-1": cams[0].directory, "bay-2": cams[1].directory}))
        for bay, cam in zip(("bay-1", "bay-2"), cams):
            cam.dock(dock.port_path(bay))
        custody.watch(cams)

        segment_size = min(info.path.stat().st_size for info in cams[0].sealed)
        partials = home.server_dir / "uploads"

        def mid_upload_after_a_freed_one() -> bool:
            """Node A has held a segment the camera freed, and holds part of the next one."""
            if len(cams[0].files()) > SEGMENTS - 1:
                return False
            return any(0.05 * segment_size < p.stat().st_size < 0.6 * segment_size for p in partials.glob("*.part"))

        eventually(mid_upload_after_a_freed_one, 60, "node A part-way through bay-1's second or third segment")
        node_a.kill()
        held_on_a_before = {key for key in custody.originals if custody.nodes[0].why_not_held(key) is None}

        eventually(lambda: all(cam.empty for cam in cams), 90, "both cameras emptied after node A was killed")
        custody.look(cams)
        assert custody.violations == []

        log = dock.log()
        assert f"event=upload_server bay=bay-1 server={a_label} reason=home" in log
        assert f"event=upload_server bay=bay-2 server={b_label} reason=home" in log
        assert f"event=server_unavailable bay=bay-1 server={a_label}" in log
        assert f"event=upload_server bay=bay-1 server={b_label} reason=failover previous={a_label}" in log
        assert "event=upload_restart" in log and "reason=upload_unknown_here status=404" in log
        assert f"bay=bay-2 server={a_label}" not in log, "bay-2's home never failed: it never left it"
        # The camera is empty a moment before the bay writes that it is clear: wait for the bay's word.
        eventually(lambda: dock.bays()["bay-1"].state == "clear", 30, "bay-1 reports clear")
        bays = dock.bays()
        assert bays["bay-1"].server == b_label and bays["bay-2"].server == b_label
        assert bays["bay-1"].segments_freed == SEGMENTS
        assert f"to {b_label}" in dock.stdout()  # the progress lines name the node

        by_node = assert_fleet_holds_exactly_once(custody, cams)
        cam1 = {info.segment_hash.hex() for info in cams[0].sealed}
        cam2 = {info.segment_hash.hex() for info in cams[1].sealed}
        assert cam2 <= by_node[2], "bay-2 uploaded only to its home, node B"
        assert by_node[1] == held_on_a_before and 1 <= len(by_node[1]) < SEGMENTS and by_node[1] <= cam1
        assert cam1 - by_node[1] <= by_node[2], "what node A did not hold went to node B"
        assert dock.stop() == 0
        assert node_b.stop() == 0
    finally:
        for cam in cams:
            cam.undock()
        if custody is not None:
            custody.close()


SHARED_MEDIA_BYTES = 9_000_000  # three PATCHes of the dock's 4 MiB: the first is durable when the kill comes
SHARED_UPLINK_BPS = 4_000_000
MiB = 1024 * 1024


def test_nodes_sharing_their_storage_continue_an_upload_killed_on_one_from_its_durable_offset_on_the_other(
        home, custody, launch, slow_link, tmp_path):
    """Two `bwv server` processes on one BWV_HOME (one SQLite database in WAL mode, one upload area, one
    store) stand in for nodes sharing PostgreSQL and an object store: node B answers HEAD for the upload
    node A began, and the dock sends only what A had not made durable."""
    cams = []
    try:
        cams = [Camera(home, "cam-1", custody), Camera(home, "cam-2", custody)]
        cams[0].seal(2, SHARED_MEDIA_BYTES)
        cams[1].seal(1, 100_000)
        token = add_dock(home, "dock-1")
        node_a = launch(EvidenceServer(home, tmp_path / "node-a-logs", "--idle-timeout", "5"))
        node_b = launch(EvidenceServer(home, tmp_path / "node-b-logs", "--idle-timeout", "5"))
        uplink_a = slow_link(node_a.port, SHARED_UPLINK_BPS)
        b_label = node_b.url.removeprefix("http://")
        dock = launch(FleetDock(tmp_path / "dock", "dock-1", token, [uplink_a.url, node_b.url],
                                {"bay-1": cams[0].directory, "bay-2": cams[1].directory}))
        for bay, cam in zip(("bay-1", "bay-2"), cams):
            cam.dock(dock.port_path(bay))
        custody.watch(cams)

        partials = home.server_dir / "uploads"

        def second_chunk_on_its_way() -> bool:
            return any(4 * MiB + 200_000 < p.stat().st_size < 7 * MiB for p in partials.glob("*.part"))

        eventually(second_chunk_on_its_way, 60, "node A past the first chunk of a segment of bay-1")
        node_a.kill()

        eventually(lambda: all(cam.empty for cam in cams), 90, "both cameras emptied after node A was killed")
        custody.look(cams)
        assert custody.violations == []
        assert_server_holds_exactly(home, custody, cams)
        log = dock.log()
        assert f"event=upload_server bay=bay-1 server={b_label} reason=failover" in log
        assert "event=upload_resume_elsewhere" in log
        assert f"offset={4 * MiB} " in log, "node B continued from the offset node A had made durable"
        assert "reason=upload_unknown_here" not in log
        assert dock.stop() == 0
        assert node_b.stop() == 0
    finally:
        for cam in cams:
            cam.undock()
