"""Two `bwv server` nodes on one PostgreSQL and one Ceph RGW bucket: a tus upload begun on one node is
continued on the other, also after the first was SIGKILLed in the middle of a PATCH.

The nodes have homes of their own (fleet_kit.clone_node_home: the same keys, registry and
database setting, nothing else), so node B cannot see node A's disk: whatever it continues from
must be in the shared database and the shared bucket.
"""

from __future__ import annotations

import pytest

import kit as shared_kit
from kit import wait_for
from openbwv.enrol import create_server_keys, enrol_device
from openbwv.home import Home
from openbwv.server.auth import DockTokens
from openbwv.server.service import open_metadata
from system.fleet_kit import clone_node_home

sk = shared_kit.server_kit()


DEVICE = "cam-1"


@pytest.fixture
def fleet(tmp_path, rgw, bucket, pg, monkeypatch):
    """Two node homes on one fresh PostgreSQL database and one bucket, a dock token, and a camera."""
    for name, value in rgw.env().items():
        monkeypatch.setenv(name, value)
    a = Home(tmp_path / "node-a")
    create_server_keys(a)
    a.config_file.write_text(f'[server]\ndb = "{pg.new_database()}"\nblobs = "{rgw.blobs_url(bucket)}"\n')
    enrol_device(a, DEVICE)
    db = open_metadata(a)
    try:
        token = DockTokens(db).add_dock("dock-1")
    finally:
        db.close()
    b = clone_node_home(a, tmp_path / "node-b")
    camera = sk.DeviceChain(a, DEVICE, tmp_path / "camera")
    return a, b, token, camera


def node(home: Home) -> "sk.ServerProcess":
    return sk.ServerProcess(home.root, "--reserve-mb", "0", "--idle-timeout", "5")


def every_version(rgw, bucket: str, prefix: str) -> list[str]:
    page = rgw.client().list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted(v["Key"] for v in page.get("Versions", []) + page.get("DeleteMarkers", []))


def assert_held_exactly_once(home: Home, rgw, bucket: str, seg) -> None:
    """One row for the segment, one stored segment object (one version), no partial piece left anywhere."""
    db = open_metadata(home)
    try:
        assert [(s.device_id, s.segments) for s in db.device_summaries()] == [(DEVICE, 1)]
        assert db.segment(seg.segment_hash).sequence == seg.sequence
    finally:
        db.close()
    name = f"segments/{seg.segment_hash[:2]}/{seg.segment_hash[2:4]}/{seg.segment_hash}.bwv"
    assert every_version(rgw, bucket, "segments/") == [name]
    assert every_version(rgw, bucket, "keys/") == [f"keys/{seg.segment_hash}.key"]
    assert every_version(rgw, bucket, "partial/") == []


def test_an_upload_begun_on_node_a_is_finished_on_node_b_and_the_receipt_verifies(fleet, rgw, bucket):
    a, b, token, camera = fleet
    seg = camera.seal(payload_bytes=400_000)
    data = seg.data
    with node(a).start() as node_a, node(b).start() as node_b:
        on_a, on_b = sk.TusSession(node_a.url, token), sk.TusSession(node_b.url, token)
        created = on_a.create(seg)
        assert created.status == 201, created.body
        location = created.headers["Location"]
        first = on_a.patch(location, 0, data[:150_000])
        assert first.status == 204 and first.headers["Upload-Offset"] == "150000"

        assert on_b.offset(location) == 150_000  # node B knows the upload and where it stands
        wrong = on_b.patch(location, 0, data[:1000])  # bad input is still refused as before
        assert wrong.status == 409 and "does not match the 150000 bytes" in wrong.error
        last = on_b.patch(location, 150_000, data[150_000:])
        assert last.status == 204, last.body
        receipt = sk.check_receipt(a, last.receipt, seg)
        assert receipt.segment_hash == seg.segment_hash

        assert on_a.head(location).headers["Bwv-Receipt"] == last.headers["Bwv-Receipt"]  # either node says so
        again = on_a.create(seg)  # the dock asks again on node A: held, once
        assert again.status == 200 and again.json()["held"]
    assert_held_exactly_once(a, rgw, bucket, seg)


def test_node_a_killed_mid_patch_the_dock_continues_on_node_b_from_the_head_offset(fleet, rgw, bucket):
    a, b, token, camera = fleet
    seg = camera.seal(payload_bytes=10_000_000)  # the PATCH in flight reaches the bucket as a piece of 8 MiB
    data = seg.data
    with node(b).start() as node_b:
        node_a = node(a).start()
        on_a, on_b = sk.TusSession(node_a.url, token), sk.TusSession(node_b.url, token)
        created = on_a.create(seg)
        location = created.headers["Location"]
        upload_id = location.rsplit("/", 1)[1]
        assert on_a.patch(location, 0, data[:100_000]).status == 204

        rest = len(data) - 100_000
        sock = on_a.open_patch(location, 100_000, rest, data[100_000:100_000 + 9_000_000], headers={})
        try:
            # Node A has stored an 8 MiB piece of this PATCH in the bucket, never committed: then it dies.
            wait_for(lambda: len(every_version(rgw, bucket, f"partial/{upload_id}/")) == 2, timeout=60)
            node_a.kill()
        finally:
            sock.close()

        offset = on_b.offset(location)
        assert offset == 100_000  # the recorded offset, not what the dead PATCH had stored
        reply = on_b.send(location, data, start=offset, chunk=4 * 1024 * 1024)
        assert reply.status == 204, reply.body
        sk.check_receipt(a, reply.receipt, seg)
        assert on_b.head(location).headers["Upload-Offset"] == str(len(data))
    assert_held_exactly_once(a, rgw, bucket, seg)


def test_a_node_starting_removes_pieces_of_forgotten_uploads_and_keeps_those_in_progress(fleet, rgw, bucket):
    a, b, token, camera = fleet
    kept, dropped = camera.seal(payload_bytes=50_000), camera.seal(payload_bytes=50_000)
    with node(a).start() as node_a:
        on_a = sk.TusSession(node_a.url, token)
        locations = {}
        for seg in (kept, dropped):
            locations[seg] = on_a.create(seg).headers["Location"]
            assert on_a.patch(locations[seg], 0, seg.data[:20_000]).status == 204
    stray = "f" * 32
    rgw.client().put_object(Bucket=bucket, Key=f"partial/{stray}/{0:020d}", Body=b"of an upload nobody knows")
    db = open_metadata(a)
    try:
        db.delete_upload(locations[dropped].rsplit("/", 1)[1])  # as a node killed inside `discard` leaves it
    finally:
        db.close()

    with node(b).start() as node_b:
        on_b = sk.TusSession(node_b.url, token)
        kept_id = locations[kept].rsplit("/", 1)[1]
        assert every_version(rgw, bucket, "partial/") == [f"partial/{kept_id}/{0:020d}"]
        assert on_b.offset(locations[kept]) == 20_000
        assert on_b.send(locations[kept], kept.data, start=20_000).status == 204
        terminated = on_b.create(dropped)
        assert on_b.patch(terminated.headers["Location"], 0, dropped.data[:10_000]).status == 204
        assert on_b.request("DELETE", terminated.headers["Location"]).status == 204
    assert every_version(rgw, bucket, "partial/") == []
