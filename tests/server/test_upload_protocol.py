"""The upload protocol as a dock, or any tus 1.0 client, meets it: over real HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import subprocess
import time

import pytest

from openbwv.home import Home
from openbwv.sealed.reader import verify_file

from .conftest import DOCK, add_dock
from .server_kit import (
    BWV,
    TusSession,
    blob_path,
    check_receipt,
    partial_files,
    tus_metadata,
    wait_for_streaming,
)

CHUNK = 64 * 1024


# --------------------------------------------------------------------------- discovery
def test_options_announces_tus_its_extensions_checksums_and_the_upload_cap(tus):
    reply = tus.request("OPTIONS", "/tus/", headers={})
    assert reply.status == 204
    h = reply.headers
    assert h["Tus-Version"] == "1.0.0" and h["Tus-Resumable"] == "1.0.0"
    assert set(h["Tus-Extension"].split(",")) == {"creation", "checksum", "termination", "expiration"}
    assert set(h["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256"}
    assert int(h["Tus-Max-Size"]) == 4 * 1024**3
    assert int(h["Bwv-Max-Concurrent-Uploads"]) == 16


def test_health_needs_no_token_and_names_the_server_key(tus, shared_home):
    reply = TusSession(tus.url, None).get("/api/v1/health")
    assert reply.status == 200
    assert reply.json()["status"] == "ok"
    assert reply.json()["server_key_id"] == check_key_id(shared_home)


def check_key_id(home: Home) -> str:
    from openbwv.sealed.keys import ServerPublicKey

    return ServerPublicKey.load(home.server_public_key).key_id.hex()


# --------------------------------------------------------------------------- a whole upload
def test_a_segment_sent_in_checksummed_chunks_is_verified_stored_and_receipted(tus, camera, shared_home):
    cam = camera()
    seg = cam.seal(payload_bytes=300_000)
    created = tus.create(seg)
    assert created.status == 201
    location = created.headers["Location"]
    assert location.startswith("/tus/") and len(location) == len("/tus/") + 32

    reply = tus.send(location, seg.data, chunk=CHUNK)
    assert reply.status == 204
    assert int(reply.headers["Upload-Offset"]) == seg.size
    receipt = check_receipt(shared_home, reply.receipt, seg)
    assert receipt.received_utc

    # The receipt can be fetched again later, unchanged.
    again = tus.get(f"/api/v1/receipts/{seg.device_id}/{seg.sequence}")
    assert again.status == 200 and again.body == reply.receipt

    # What the server holds verifies on its own, as `bwv verify` would check it.
    stored = blob_path(shared_home, seg.segment_hash)
    assert stored.read_bytes() == seg.data
    assert verify_file(stored, None).segment_hash.hex() == seg.segment_hash
    meta = tus.get(f"/api/v1/segments/{seg.segment_hash}").json()
    assert (meta["device_id"], meta["sequence"], meta["size"]) == (seg.device_id, seg.sequence, seg.size)
    assert meta["chain_status"] == "linked" and meta["dock"] == DOCK and meta["recovered"] is False

    # The finished upload still answers HEAD, with its receipt: a client that lost the last reply is not stuck.
    head = tus.head(location)
    assert head.status == 200 and int(head.headers["Upload-Offset"]) == seg.size
    assert head.receipt == reply.receipt
    assert not any(p.name.startswith(location.rsplit("/", 1)[1]) for p in partial_files(shared_home))


def test_tuspy_an_independent_client_uploads_a_segment_sealed_from_real_footage(
    server, token, shared_home, tmp_path
):
    from tusclient.client import TusClient

    from openbwv.enrol import enrol_device
    from openbwv.footage import make_synthetic_video
    from openbwv.sealed.reader import verify_file as verify

    enrol_device(shared_home, "cam-footage")
    clip = make_synthetic_video(tmp_path / "clip.mp4", seconds=2, width=160, height=120)
    out = tmp_path / "sealed"
    sealed = subprocess.run([BWV, "seal", "--device", "cam-footage", "--out", str(out), str(clip)],
                            env={"BWV_HOME": str(shared_home.root), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert sealed.returncode == 0, sealed.stderr
    path = sorted(out.glob("*.bwv"))[0]
    seg = verify(path, None)

    client = TusClient(server.url + "/tus/", headers={"Authorization": f"Bearer {token}"})
    uploader = client.uploader(
        file_path=str(path), chunk_size=32 * 1024, upload_checksum=True,
        metadata={"filename": path.name, "device_id": seg.device_id, "sequence": str(seg.sequence),
                  "segment_hash": seg.segment_hash.hex()},
    )
    uploader.upload()

    assert uploader.offset == path.stat().st_size
    receipt = base64.b64decode(uploader.request.response_headers["bwv-receipt"])
    from .server_kit import Segment

    check_receipt(shared_home, receipt, Segment(path, seg.device_id, seg.sequence, seg.segment_hash.hex(), ""))
    assert blob_path(shared_home, seg.segment_hash.hex()).read_bytes() == path.read_bytes()


# --------------------------------------------------------------------------- resuming
def test_a_connection_cut_mid_chunk_resumes_from_the_durable_offset(tus, camera, shared_home):
    seg = camera().seal(payload_bytes=400_000)
    data = seg.data
    location = tus.create(seg).headers["Location"]
    tus.send(location, data, chunk=CHUNK, stop_at=2 * CHUNK)  # two chunks acknowledged
    before = tus.bytes_sent

    # The third chunk: half of it goes out, then the link drops.
    sock = tus.open_patch(location, 2 * CHUNK, CHUNK, data[2 * CHUNK : 2 * CHUNK + CHUNK // 2])
    wait_for_streaming(tus.url, 1)
    sock.close()
    wait_for_streaming(tus.url, 0)  # the server has noticed, and recorded what it keeps

    offset = tus.offset(location)
    assert 2 * CHUNK <= offset <= 2 * CHUNK + CHUNK // 2  # what arrived without a checksum may be kept
    reply = tus.send(location, data, start=offset, chunk=CHUNK)
    check_receipt(shared_home, reply.receipt, seg)
    resent = (tus.bytes_sent - before) - (len(data) - 2 * CHUNK)
    assert 0 <= resent <= CHUNK


def test_a_cut_chunk_that_carried_a_checksum_is_dropped_whole(tus, camera):
    seg = camera().seal()
    data = seg.data
    location = tus.create(seg).headers["Location"]
    tus.send(location, data, chunk=CHUNK, stop_at=CHUNK)
    piece = data[CHUNK : 2 * CHUNK]
    digest = base64.b64encode(hashlib.sha1(piece).digest()).decode()
    sock = tus.open_patch(location, CHUNK, len(piece), piece[:1000], {"Upload-Checksum": f"sha1 {digest}"})
    wait_for_streaming(tus.url, 1)
    sock.close()
    wait_for_streaming(tus.url, 0)  # the server has noticed, and recorded what it keeps
    assert tus.offset(location) == CHUNK  # nothing of an unverifiable chunk is kept


def test_a_chunk_whose_checksum_fails_is_discarded_with_460_and_the_offset_stays(tus, camera, shared_home):
    seg = camera().seal()
    data = seg.data
    location = tus.create(seg).headers["Location"]
    tus.send(location, data, chunk=CHUNK, stop_at=CHUNK)

    bad = tus.patch(location, CHUNK, data[CHUNK : 2 * CHUNK], checksum="sha1", wrong_checksum=True)
    assert bad.status == 460
    assert "checksum" in bad.error.lower()
    assert tus.offset(location) == CHUNK

    reply = tus.send(location, data, start=CHUNK, chunk=CHUNK)
    check_receipt(shared_home, reply.receipt, seg)


def test_a_patch_at_the_wrong_offset_is_409_and_says_where_the_upload_is(tus, camera):
    seg = camera().seal()
    location = tus.create(seg).headers["Location"]
    tus.send(location, seg.data, chunk=CHUNK, stop_at=CHUNK)
    reply = tus.patch(location, 0, seg.data[:CHUNK])
    assert reply.status == 409
    assert "HEAD" in reply.error and str(CHUNK) in reply.error
    assert tus.offset(location) == CHUNK


def test_a_patch_needs_the_offset_octet_stream_body_type(tus, camera):
    seg = camera().seal()
    location = tus.create(seg).headers["Location"]
    h = tus.headers(Upload_Offset="0", Content_Type="application/json")
    reply = tus.request("PATCH", location, h, b"{}")
    assert reply.status == 415 and "offset+octet-stream" in reply.error


# --------------------------------------------------------------------------- dedupe
def test_a_segment_already_held_is_not_sent_again(tus, camera, shared_home):
    seg = camera().seal()
    first = tus.upload(seg, chunk=CHUNK)
    sent = tus.bytes_sent

    again = tus.create(seg)
    assert again.status == 200
    assert "Location" not in again.headers
    assert again.receipt == first.receipt
    check_receipt(shared_home, again.receipt, seg)
    assert tus.bytes_sent == sent  # no body bytes went out the second time


def test_a_dock_cannot_claim_a_held_hash_for_another_segment(tus, camera):
    seg = camera().seal()
    tus.upload(seg, chunk=CHUNK)
    reply = tus.create(seg, metadata=seg.metadata(sequence=str(seg.sequence + 5)))
    assert reply.status == 409 and "held as" in reply.error


# --------------------------------------------------------------------------- what is refused
def nothing_kept(home: Home, seg) -> bool:
    return not blob_path(home, seg.segment_hash).exists() and not partial_files_of(home)


def partial_files_of(home: Home) -> list:
    # Only uploads still in progress have a partial file; a refused upload leaves none.
    from openbwv.server.service import open_metadata

    db = open_metadata(home)
    try:
        receiving = {r[0] for r in db.reader().execute("SELECT id FROM uploads WHERE state = 'receiving'")}
    finally:
        db.close()
    return [p for p in partial_files(home) if p.name.removesuffix(".part") not in receiving]


def test_a_device_that_is_not_enrolled_is_refused_before_any_byte_is_sent(tus, camera, shared_home):
    seg = camera().seal()
    reply = tus.create(seg, metadata=seg.metadata(device_id="cam-never-enrolled"))
    assert reply.status == 422
    assert "not enrolled" in reply.error and "cam-never-enrolled" in reply.error


def test_a_segment_signed_by_a_foreign_key_is_refused_with_422_and_nothing_kept(tus, camera, shared_home, tmp_path):
    from openbwv.sealed.keys import DeviceKey

    from .server_kit import DeviceChain

    enrolled = camera()
    impostor = DeviceChain(shared_home, enrolled.key.device_id, tmp_path / "impostor",
                           key=DeviceKey.generate(enrolled.key.device_id))
    seg = impostor.seal()
    created = tus.create(seg)
    assert created.status == 201
    location = created.headers["Location"]
    reply = tus.patch(location, 0, seg.data)
    assert reply.status == 422
    assert "bad signature" in reply.error
    assert nothing_kept(shared_home, seg)
    assert tus.head(location).status == 404  # the upload is gone with its bytes


def test_a_flipped_bit_is_refused_with_422_and_nothing_kept(tus, camera, shared_home):
    seg = camera().seal()
    data = bytearray(seg.data)
    data[len(data) // 2] ^= 0x01
    location = tus.create(seg).headers["Location"]
    reply = tus.patch(location, 0, bytes(data))
    assert reply.status == 422
    assert "altered or damaged" in reply.error
    assert nothing_kept(shared_home, seg)


def test_a_truncated_file_is_refused_with_422_and_nothing_kept(tus, camera, shared_home):
    seg = camera().seal()
    data = seg.data[:-100]
    location = tus.create(seg, length=len(data)).headers["Location"]
    reply = tus.patch(location, 0, data)
    assert reply.status == 422
    assert "truncated" in reply.error
    assert nothing_kept(shared_home, seg)


def test_metadata_that_does_not_describe_the_file_is_refused_with_422(tus, camera, shared_home):
    cam = camera()
    first, second = cam.seal(), cam.seal()
    location = tus.create(first, metadata=first.metadata(segment_hash=second.segment_hash)).headers["Location"]
    reply = tus.patch(location, 0, first.data)
    assert reply.status == 422
    assert "segment_hash" in reply.error
    assert nothing_kept(shared_home, first)


def test_a_different_segment_in_a_held_place_is_a_fork_and_refused_with_409(tus, camera, shared_home, tmp_path):
    from .server_kit import DeviceChain

    cam = camera()
    one = cam.seal()
    tus.upload(one, chunk=CHUNK)

    # Announced as such, the fork is refused before any byte is sent.
    rival = cam.fork()
    reply = tus.create(rival)
    assert reply.status == 409 and "fork" in reply.error

    # A segment 2 that follows another segment 1 is found out once its bytes are in, and kept out.
    other = DeviceChain(shared_home, one.device_id, tmp_path / "other-branch")
    other.seal()
    foreign_two = other.seal()
    location = tus.create(foreign_two).headers["Location"]
    reply = tus.patch(location, 0, foreign_two.data)
    assert reply.status == 409
    assert "does not link" in reply.error
    assert nothing_kept(shared_home, foreign_two)
    assert tus.get(f"/api/v1/receipts/{one.device_id}/2").status == 404


def test_a_gap_is_accepted_and_flagged_and_the_flag_clears_when_the_missing_segment_arrives(
    tus, camera, shared_home
):
    cam = camera()
    one, two, three = cam.seal(), cam.seal(), cam.seal()
    tus.upload(one, chunk=CHUNK)
    reply = tus.upload(three, chunk=CHUNK)  # segment 2 is missing: the evidence is still taken
    check_receipt(shared_home, reply.receipt, three)
    assert tus.get(f"/api/v1/segments/{three.segment_hash}").json()["chain_status"] == "gap after 1"

    status = subprocess.run([BWV, "server", "status"], env={"BWV_HOME": str(shared_home.root)},
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert f"{three.device_id}: 2 segment(s), sequence 1..3, 1 flagged" in status.stdout
    assert "#3: gap after 1" in status.stdout

    tus.upload(two, chunk=CHUNK)
    assert tus.get(f"/api/v1/segments/{two.segment_hash}").json()["chain_status"] == "linked"
    assert tus.get(f"/api/v1/segments/{three.segment_hash}").json()["chain_status"] == "linked"


def test_a_first_segment_held_after_others_are_missing_is_flagged_too(tus, camera):
    cam = camera()
    cam.seal()
    two = cam.seal()
    tus.upload(two, chunk=CHUNK)
    assert tus.get(f"/api/v1/segments/{two.segment_hash}").json()["chain_status"] == "gap after 0"


# --------------------------------------------------------------------------- hostile input
PATH_TRICKS = {
    "filename": ["../cam.bwv", "../../etc/passwd", "a/b.bwv", "..\\x.bwv", "/abs.bwv", "x..bwv", ".hidden.bwv",
                 "x.bwv/..", "clip.mp4", "x\u2215y.bwv", "x.bwv\x00.txt", "x.bwv\n"],
    "device_id": ["../cam-1", "cam/1", "", "cam 1", "-cam"],
    "sequence": ["0", "-1", "1e3", "01", "+4", "9223372036854775808", "1/../2"],
    "segment_hash": ["../" * 21 + "a", "g" * 64, "a" * 63],
}


@pytest.mark.parametrize("key,value", [(k, v) for k, vs in PATH_TRICKS.items() for v in vs])
def test_path_tricks_and_malformed_metadata_are_refused_with_400(tus, shared_home, key, value):
    meta = {"filename": "cam-1-0000000001.bwv", "device_id": "cam-1", "sequence": "1",
            "segment_hash": "ab" * 32, key: value}
    before = partial_files(shared_home)
    reply = tus.create(metadata=meta, length=1000)
    assert reply.status == 400, (key, value, reply.status)
    assert key in reply.error or "Upload-Metadata" in reply.error
    assert partial_files(shared_home) == before


@pytest.mark.parametrize("header", [
    "filename",  # no value, no other keys
    "filename Y2FtLTEuYnd2,filename Y2FtLTEuYnd2",  # twice
    "filename not*base64",
    "fi le Y2Ft",
    "x " + "QUFB" * 2000,  # over the header bound
])
def test_malformed_upload_metadata_headers_are_refused_with_400(tus, header):
    reply = tus.request("POST", "/tus/", tus.headers(Upload_Length="1000", Upload_Metadata=header))
    assert reply.status == 400
    assert "Upload-Metadata" in reply.error or "filename" in reply.error


@pytest.mark.parametrize("upload_id", ["..", "..%2F..%2Fetc%2Fpasswd", "ABCDEF" * 5 + "AB", "0" * 31, "0" * 33,
                                       "%2e%2e"])
def test_upload_ids_that_are_not_server_issued_hex_are_refused(tus, upload_id):
    reply = tus.head(f"/tus/{upload_id}")
    assert reply.status in (400, 404)
    assert reply.headers["Bwv-Error"]


def test_an_upload_over_the_maximum_size_is_refused_with_413(tus, camera):
    seg = camera().seal(payload_bytes=2000)
    reply = tus.create(seg, length=4 * 1024**3 + 1)
    assert reply.status == 413 and "Tus-Max-Size" in reply.error


def test_a_patch_running_past_upload_length_is_refused_with_413_and_nothing_kept(tus, camera):
    seg = camera().seal()
    location = tus.create(seg).headers["Location"]
    reply = tus.patch(location, 0, seg.data + b"extra")
    assert reply.status == 413 and "Upload-Length" in reply.error
    assert tus.offset(location) == 0


def test_a_chunked_body_running_past_upload_length_is_cut_back(tus, camera):
    seg = camera().seal()
    location = tus.create(seg).headers["Location"]
    conn = http.client.HTTPConnection(*tus.host_port, timeout=30)
    h = tus.headers(Upload_Offset="0", Content_Type="application/offset+octet-stream")
    conn.request("PATCH", location, body=iter([seg.data, b"more than promised"]), headers=h, encode_chunked=True)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 413, body
    assert tus.offset(location) == 0


def test_creation_without_upload_length_or_with_a_body_is_refused(tus, camera):
    seg = camera().seal(payload_bytes=2000)
    meta = tus_metadata(seg.metadata())
    assert tus.request("POST", "/tus/", tus.headers(Upload_Metadata=meta)).status == 400
    assert tus.request("POST", "/tus/", tus.headers(Upload_Length="-5", Upload_Metadata=meta)).status == 400
    reply = tus.request("POST", "/tus/", tus.headers(Upload_Length=str(seg.size), Upload_Metadata=meta), seg.data)
    assert reply.status == 400 and "creation-with-upload" in reply.error


# --------------------------------------------------------------------------- who may upload
@pytest.mark.parametrize("authorization,why", [
    (None, "missing"),
    ("Basic ZG9jazpwdw==", "scheme"),
    ("Bearer " + "bwvd_" + "A" * 43, "unknown"),
    ("Bearer not-a-token", "not a dock token"),
])
def test_requests_without_a_valid_dock_token_are_401_with_a_reason(tus, camera, authorization, why):
    seg = camera().seal(payload_bytes=2000)
    anonymous = TusSession(tus.url, None)
    if authorization:
        anonymous.extra_headers["Authorization"] = authorization
    for reply in (anonymous.create(seg), anonymous.get(f"/api/v1/receipts/{seg.device_id}/1"),
                  anonymous.get(f"/api/v1/segments/{seg.segment_hash}")):
        assert reply.status == 401
        assert why in reply.error
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_one_dock_cannot_touch_another_docks_upload(tus, camera, shared_home):
    seg = camera().seal()
    location = tus.create(seg).headers["Location"]
    other = TusSession(tus.url, add_dock(shared_home, "dock-other"))
    assert other.head(location).status == 404
    assert other.patch(location, 0, seg.data).status == 404
    assert other.request("DELETE", location).status == 404
    assert tus.offset(location) == 0


def test_tus_requests_without_tus_resumable_are_412(tus, camera):
    seg = camera().seal(payload_bytes=2000)
    h = tus.headers(Upload_Length=str(seg.size), Upload_Metadata=tus_metadata(seg.metadata()))
    del h["Tus-Resumable"]
    reply = tus.request("POST", "/tus/", h)
    assert reply.status == 412 and reply.headers["Tus-Version"] == "1.0.0"
    assert "Tus-Resumable" in reply.error


def test_termination_forgets_the_upload_and_its_bytes(tus, camera, shared_home):
    seg = camera().seal()
    location = tus.create(seg).headers["Location"]
    tus.send(location, seg.data, chunk=CHUNK, stop_at=CHUNK)
    upload_id = location.rsplit("/", 1)[1]
    assert any(p.name.startswith(upload_id) for p in partial_files(shared_home))
    assert tus.request("DELETE", location).status == 204
    assert tus.head(location).status == 404
    assert not any(p.name.startswith(upload_id) for p in partial_files(shared_home))


def test_unknown_receipts_and_segments_are_404_and_bad_names_400(tus):
    assert tus.get("/api/v1/receipts/cam-nobody/1").status == 404
    assert tus.get("/api/v1/segments/" + "0" * 64).status == 404
    assert tus.get("/api/v1/receipts/cam-1/zero").status == 400
    assert tus.get("/api/v1/segments/..%2F..%2Fetc").status == 400
    reply = tus.get("/api/v1/nothing-here")
    assert reply.status == 404 and "no such endpoint" in reply.error


def test_the_server_log_has_a_line_per_request_and_per_ingest(tus, camera, server):
    seg = camera().seal()
    tus.upload(seg, chunk=CHUNK)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and f"{seg.device_id} #{seg.sequence}" not in server.log():
        time.sleep(0.05)
    lines = [line for line in server.log().splitlines() if f"{seg.device_id} #{seg.sequence}" in line]
    assert any("POST /tus/ -> 201" in line and f"{seg.size} B" in line for line in lines)
    assert any("PATCH" in line and "-> 204" in line and "ingested, chain linked" in line for line in lines)
    assert all(DOCK in line for line in lines)


def test_receipts_are_json_documents_with_the_segment_fields(tus, camera, shared_home):
    seg = camera().seal()
    tus.upload(seg, chunk=CHUNK)
    doc = tus.get(f"/api/v1/receipts/{seg.device_id}/{seg.sequence}").json()
    assert set(doc) == {"receipt", "signature"}
    assert doc["receipt"]["segment_hash"] == seg.segment_hash
    assert json.loads(json.dumps(doc)) == doc
