"""While the evidence server is away the dock keeps trying and the camera keeps every file; once back, all goes up.

The dock is started against a port where nothing listens yet (a server not
started, a network down): it greets the camera, lists its segments, and
backs off and tries again, saying so in `bwv dock status`, while the
camera's files stay exactly as they were.  Then `bwv server` starts on that
port and the dock uploads everything and the camera frees it all.
"""

from __future__ import annotations

import json

from .system_kit import (
    DockStation,
    EvidenceServer,
    add_dock,
    assert_server_holds_exactly,
    eventually,
    free_port,
)


def test_a_dock_with_the_server_down_keeps_the_camera_files_untouched_and_uploads_when_it_returns(
        home, custody, launch, camera, tmp_path):
    cam = camera("cam-1", segments=3, media_bytes=1_000_000)
    before = cam.files()
    port = free_port()
    dock = launch(DockStation(tmp_path / "dock", "dock-1", add_dock(home, "dock-1"), f"http://127.0.0.1:{port}",
                              {"bay-1": cam.directory}))
    cam.dock(dock.port_path("bay-1"))
    custody.watch([cam])

    def bay() -> dict:
        statuses = json.loads(dock.status_json())
        return statuses[0] if statuses else {}

    seen: list[dict] = []

    def waiting_after_two_tries() -> bool:
        assert cam.files() == before, "a camera file changed while the server was down"
        seen.append(bay())
        return seen[-1].get("state") == "waiting_for_server" and seen[-1]["attempts"] >= 2

    eventually(waiting_after_two_tries, 60, "`bwv dock status` showing the bay waiting, after two failed tries")
    waiting = seen[-1]
    assert waiting["device_id"] == "cam-1" and waiting["segments_listed"] == 3 and waiting["segments_freed"] == 0
    assert f"127.0.0.1:{port}" in waiting["last_error"] and "unreachable" in waiting["last_error"]
    assert waiting["retry_at_utc"]
    assert cam.files() == before
    assert custody.accepted == set() and custody.freed == set()
    assert "event=segment_freed" not in dock.log()

    server = launch(EvidenceServer(home, tmp_path / "server", port=port))
    eventually(lambda: cam.empty, 60, "the camera emptied once the server is back")
    eventually(lambda: bay().get("state") == "clear", 30, "the bay reporting its camera clear")
    assert bay()["segments_freed"] == 3
    assert dock.stop() == 0
    assert server.stop() == 0

    custody.look([cam])
    assert custody.violations == []
    assert custody.freed == {("cam-1", name) for name in before}
    assert_server_holds_exactly(home, custody, [cam])
