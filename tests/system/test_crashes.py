"""Crashes of the dock and of the server, at random moments, lose no footage and free none without a receipt.

The rule the whole system exists to keep: a camera deletes a segment only
once the evidence server holds it.  Three cameras sit in the bays of a
`bwv dock` that uploads over a slow uplink to a `bwv server`; a seeded
random schedule SIGKILLs the dock or the server while uploads stream, and
starts it again (the server on the same port), up to a dozen times.  `Custody`
checks the rule at every receipt a camera accepts and every file that
leaves a camera.  Set BWV_SYSTEM_SEED to replay another schedule.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from .system_kit import DockStation, EvidenceServer, add_dock, assert_server_holds_exactly, eventually

SEED = int(os.environ.get("BWV_SYSTEM_SEED", "20261125"))
ROUNDS = 12
SEGMENTS = 4
MEDIA_BYTES = 5_000_000  # two PATCHes of the dock's 4 MiB chunk: a crash can fall between them too
UPLINK_BPS = 4_000_000  # per connection: about 1.3 s per segment, on any machine
BACK_AT_WORK_S = 90.0  # a restarted dock waits for the camera's link, a restarted server for the dock's backoff


@pytest.mark.slow
def test_random_kills_of_dock_and_server_lose_nothing_and_free_nothing_without_a_receipt(
        home, custody, launch, camera, slow_link, tmp_path):
    rng = random.Random(SEED)
    cams = [camera(f"cam-{n}", segments=SEGMENTS, media_bytes=MEDIA_BYTES) for n in (1, 2, 3)]
    bays = {f"bay-{n}": cam for n, cam in enumerate(cams, 1)}
    server = launch(EvidenceServer(home, tmp_path / "server", "--idle-timeout", "5"))
    uplink = slow_link(server.port, UPLINK_BPS)
    dock = launch(DockStation(tmp_path / "dock", "dock-1", add_dock(home, "dock-1"), uplink.url,
                              {bay: cam.directory for bay, cam in bays.items()}))
    for bay, cam in bays.items():
        cam.dock(dock.port_path(bay))
    custody.watch(cams)

    def cameras_empty() -> bool:
        return all(cam.empty for cam in cams)

    def at_work() -> bool:
        """The running dock has listed a camera's segments and the running server is receiving an upload."""
        health = server.health()
        return "event=segments_listed" in dock.stderr() and health is not None and health["uploads_in_progress"] > 0

    kills: list[str] = []
    for round_ in range(ROUNDS):
        eventually(lambda: at_work() or cameras_empty(), BACK_AT_WORK_S,
                   f"seed {SEED}, round {round_}: uploads streaming again after the kills {kills}")
        if cameras_empty():
            break
        time.sleep(rng.uniform(0.2, 1.5))
        victim = rng.choice((dock, server))
        victim.kill()
        kills.append(victim.name)
        assert custody.violations == [], f"seed {SEED}, after killing {kills}"
        victim.start()

    eventually(cameras_empty, 120, f"seed {SEED}: every camera emptied after the kills {kills}")
    eventually(lambda: {b.state for b in dock.bays().values()} == {"clear"}, 60,
               f"seed {SEED}: every bay reporting its camera clear")
    assert dock.stop() == 0
    assert server.stop() == 0

    custody.look(cams)
    assert custody.violations == [], f"seed {SEED}, kills {kills}"
    assert custody.freed == {(cam.device_id, info.path.name) for cam in cams for info in cam.sealed}
    assert_server_holds_exactly(home, custody, cams)
