"""The dock's own uploader (dock/tus_upload.py) against the real server over loopback."""

from __future__ import annotations

import pytest

from openbwv.dock.errors import UploadRejected, UploadUnavailable
from openbwv.dock.tus_upload import TusUploader

from .server_kit import blob_path, check_receipt


class Interrupt(Exception):
    pass


def test_a_segment_is_uploaded_and_receipted(server, token, camera, shared_home):
    seg = camera().seal()
    seen = []
    up = TusUploader(server.url, token, chunk_size=64 * 1024)
    receipt = up.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, seen.append)
    check_receipt(shared_home, receipt, seg)
    assert blob_path(shared_home, seg.segment_hash).read_bytes() == seg.data
    assert seen[-1] == seg.size and seen == sorted(seen)


def test_a_segment_already_held_is_not_sent_again(server, token, camera, shared_home):
    seg = camera().seal()
    up = TusUploader(server.url, token)
    up.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)
    sent = up.bytes_sent
    receipt = TusUploader(server.url, token).upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash,
                                                    lambda n: None)
    check_receipt(shared_home, receipt, seg)
    assert up.bytes_sent == sent


def test_an_interrupted_upload_resumes_from_the_servers_offset_after_a_dock_restart(
    server, token, camera, shared_home, tmp_path
):
    seg = camera().seal(payload_bytes=600_000)
    chunk = 64 * 1024
    state = tmp_path / "uploads.json"
    first = TusUploader(server.url, token, chunk_size=chunk, state_path=state)

    def cut(n: int) -> None:
        if n >= 3 * chunk:
            raise Interrupt  # the dock dies mid-segment

    with pytest.raises(Interrupt):
        first.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, cut)
    second = TusUploader(server.url, token, chunk_size=chunk, state_path=state)  # a new process
    receipt = second.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)

    check_receipt(shared_home, receipt, seg)
    resent = first.bytes_sent + second.bytes_sent - seg.size
    assert resent <= chunk


def test_an_upload_whose_bytes_all_arrived_but_whose_ingest_failed_is_completed_on_resume(
    server, token, camera, shared_home, tmp_path
):
    """The last PATCH brought every byte, then storing the segment failed (a database outage in the
    fleet test; here the store's fan-out directory is a file).  The server keeps the upload at its
    full offset, so the dock that comes back finds nothing left to send: it must ask the server to
    finish (an empty PATCH at the end), not ask for a receipt that was never issued."""
    seg = camera().seal()
    state = tmp_path / "uploads.json"
    fan_out = blob_path(shared_home, seg.segment_hash).parent
    if fan_out.exists():
        pytest.skip(f"another segment already uses the store directory {fan_out}")
    fan_out.parent.mkdir(parents=True, exist_ok=True)
    fan_out.write_bytes(b"")  # the blob cannot be written under it
    try:
        with pytest.raises(UploadUnavailable):
            TusUploader(server.url, token, state_path=state).upload(
                seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)
    finally:
        fan_out.unlink()
    again = TusUploader(server.url, token, state_path=state)  # the dock's next attempt
    receipt = again.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)

    check_receipt(shared_home, receipt, seg)
    assert blob_path(shared_home, seg.segment_hash).read_bytes() == seg.data
    assert again.bytes_sent == 0  # nothing was sent twice


def test_a_server_that_is_down_means_try_later(token, camera, tmp_path):
    seg = camera().seal()
    up = TusUploader("http://127.0.0.1:9", token, connect_timeout=1)
    with pytest.raises(UploadUnavailable, match="unreachable"):
        up.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)


def test_an_altered_segment_is_refused_for_good(server, token, camera):
    seg = camera().seal()
    data = bytearray(seg.data)
    data[len(data) // 2] ^= 1
    seg.path.write_bytes(bytes(data))
    up = TusUploader(server.url, token)
    with pytest.raises(UploadRejected, match="422"):
        up.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)


def test_a_wrong_token_is_refused(server, camera):
    seg = camera().seal()
    with pytest.raises(UploadRejected, match="401"):
        TusUploader(server.url, "bwvd_wrong").upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash,
                                                     lambda n: None)
