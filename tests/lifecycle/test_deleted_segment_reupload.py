"""A camera that still holds a segment the server has since deleted by policy can free it."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

from lifecycle.http_kit import ServerProcess, TusSession, add_dock, kit
from lifecycle.lifecycle_kit import UTC, Evidence
from openbwv.server.retention import RetentionPolicy
from openbwv.server.sweep import Sweeper


def test_a_deleted_segment_offered_again_gets_its_original_receipt_and_is_not_taken_back(tmp_path):
    now = datetime.now(UTC)
    ev = Evidence(tmp_path / "home")
    path, claim, clip = ev.seal("cam-1", now - timedelta(days=40))
    kept_copy = path.read_bytes()  # the camera never got to free it (a crash after the receipt, say)
    ev.ingest(path, claim, clip, now - timedelta(days=39))
    assert Sweeper(ev.db, ev.blobs, RetentionPolicy()).run(now=now).deleted_clips == [clip]
    ev.close()
    (tmp_path / "camera.bwv").write_bytes(kept_copy)

    token = add_dock(ev.home, "dock-1")
    with ServerProcess(ev.home.root, "--reserve-mb", "0") as server:
        tus = TusSession(server.url, token)
        meta = {"filename": "camera.bwv", "device_id": "cam-1", "sequence": str(claim.sequence),
                "segment_hash": claim.segment_hash}
        reply = tus.create(metadata=meta, length=len(kept_copy))
        assert reply.status == 200, reply.headers.get("Bwv-Error")
        assert "Location" not in reply.headers  # no upload: the bytes are not taken back
        receipt = kit.verifier(ev.home).check_for(base64.b64decode(reply.headers["Bwv-Receipt"]),
                                                 device_id="cam-1", sequence=claim.sequence,
                                                 segment_hash=bytes.fromhex(claim.segment_hash))
        assert receipt.size == len(kept_copy)
        assert reply.json()["deleted_by_policy"] and reply.json()["held"] is False
        # The receipt can also be fetched again, as a dock that lost it would.
        again = tus.get(f"/api/v1/receipts/cam-1/{claim.sequence}")
        assert again.status == 200 and again.headers["Bwv-Deleted-By-Policy"]
        assert kit.verifier(ev.home).check_for(again.body, device_id="cam-1", sequence=claim.sequence,
                                               segment_hash=bytes.fromhex(claim.segment_hash)).size == len(kept_copy)
    assert not ev.blobs.path(claim.segment_hash).exists()


def test_another_segment_offered_for_a_deleted_sequence_is_refused_before_its_bytes_are_sent(tmp_path):
    now = datetime.now(UTC)
    ev = Evidence(tmp_path / "home")
    path, claim, clip = ev.seal("cam-1", now - timedelta(days=40))
    ev.ingest(path, claim, clip, now - timedelta(days=39))
    assert Sweeper(ev.db, ev.blobs, RetentionPolicy()).run(now=now).deleted_clips == [clip]
    ev.close()
    token = add_dock(ev.home, "dock-1")
    with ServerProcess(ev.home.root, "--reserve-mb", "0") as server:
        forged = {"filename": "x.bwv", "device_id": "cam-1", "sequence": str(claim.sequence), "segment_hash": "ab" * 32}
        reply = TusSession(server.url, token).create(metadata=forged, length=1000)
        assert reply.status == 409 and "deleted by the retention policy" in reply.headers["Bwv-Error"]
        assert "Location" not in reply.headers
