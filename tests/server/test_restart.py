"""Crashes: an upload survives the server being killed, and resumes from what was durably written."""

from __future__ import annotations

import time

from openbwv.enrol import enrol_device
from openbwv.sealed.reader import verify_file
from openbwv.server.config import ServerConfig
from openbwv.server.db import UploadRecord
from openbwv.server.ingest import utc_now
from openbwv.server.service import EvidenceService

from .conftest import add_dock, make_home
from .server_kit import DeviceChain, ServerProcess, TusSession, blob_path, check_receipt

MIB = 1024 * 1024


def test_a_server_killed_mid_upload_resumes_from_the_durable_offset_after_restart(tmp_path):
    home = make_home(tmp_path / "home")
    enrol_device(home, "cam-1")
    token = add_dock(home)
    seg = DeviceChain(home, "cam-1", tmp_path / "segments").seal(payload_bytes=5 * MIB)
    data = seg.data

    first = ServerProcess(home.root, "--reserve-mb", "0").start()
    tus = TusSession(first.url, token)
    location = tus.create(seg).headers["Location"]
    tus.send(location, data, chunk=MIB, stop_at=MIB)  # one MiB acknowledged
    acknowledged = tus.offset(location)
    assert acknowledged == MIB

    # A big PATCH is streaming (more than the server buffers, so bytes reach the file) when the server dies.
    in_flight = tus.open_patch(location, MIB, 3 * MIB, data[MIB : MIB + int(2.5 * MIB)])
    part = home.server_dir / "uploads" / f"{location.rsplit('/', 1)[1]}.part"
    deadline = time.monotonic() + 10
    while part.stat().st_size <= acknowledged and time.monotonic() < deadline:
        time.sleep(0.02)
    assert part.stat().st_size > acknowledged  # unacknowledged bytes are in the file
    first.kill()
    in_flight.close()

    second = ServerProcess(home.root, "--reserve-mb", "0").start()
    try:
        tus = TusSession(second.url, token)
        offset = tus.offset(location)
        assert offset == acknowledged  # bytes never acknowledged are not counted, whatever reached the disk
        assert part.stat().st_size == offset
        reply = tus.send(location, data, start=offset, chunk=MIB)
        check_receipt(home, reply.receipt, seg)
    finally:
        assert second.stop() == 0
    assert "cut back" in second.log()
    stored = blob_path(home, seg.segment_hash)
    assert verify_file(stored, None).segment_hash.hex() == seg.segment_hash


def test_an_upload_whose_last_byte_arrived_before_a_crash_is_ingested_at_start(tmp_path):
    home = make_home(tmp_path / "home")
    enrol_device(home, "cam-1")
    add_dock(home)
    seg = DeviceChain(home, "cam-1", tmp_path / "segments").seal()

    # The state a crash leaves between "offset = length committed" and "ingested".
    service = EvidenceService(home, ServerConfig(reserve_bytes=0))
    upload_id = service.new_upload_file()
    service.part_path(upload_id).write_bytes(seg.data)
    now = utc_now()
    service.db.create_upload(UploadRecord(upload_id, "dock-1", seg.metadata(), seg.device_id, seg.sequence,
                                          seg.segment_hash, seg.size, 0, "receiving", now, now))
    service.db.set_upload_offset(upload_id, seg.size, now)
    service.close()

    restarted = EvidenceService(home, ServerConfig(reserve_bytes=0))
    try:
        notes = restarted.recover()
        assert any("ingested" in n for n in notes), notes
        held = restarted.db.segment(seg.segment_hash)
        assert held is not None and held.chain_status == "linked"
        assert restarted.db.upload(upload_id).complete
        check_receipt(home, held.receipt.encode(), seg)
    finally:
        restarted.close()
    assert blob_path(home, seg.segment_hash).read_bytes() == seg.data
    assert not (home.server_dir / "uploads" / f"{upload_id}.part").exists()


def test_stray_partial_files_are_removed_and_longer_files_cut_back_at_start(tmp_path):
    home = make_home(tmp_path / "home")
    enrol_device(home, "cam-1")
    add_dock(home)
    seg = DeviceChain(home, "cam-1", tmp_path / "segments").seal()
    service = EvidenceService(home, ServerConfig(reserve_bytes=0))
    upload_id = service.new_upload_file()
    now = utc_now()
    service.db.create_upload(UploadRecord(upload_id, "dock-1", seg.metadata(), seg.device_id, seg.sequence,
                                          seg.segment_hash, seg.size, 0, "receiving", now, now))
    service.part_path(upload_id).write_bytes(seg.data[:5000])  # written, never acknowledged
    service.db.set_upload_offset(upload_id, 1000, now)
    stray = service.uploads_dir / ("f" * 32 + ".part")
    stray.write_bytes(b"left behind")
    notes = service.recover()
    service.close()
    assert service.part_path(upload_id).stat().st_size == 1000
    assert not stray.exists()
    assert len(notes) == 2, notes


def test_an_unfinished_upload_untouched_past_its_expiry_is_discarded_at_start_and_nothing_else(tmp_path):
    """tus expiration: abandoned bytes do not fill the upload area for ever.  Nothing is lost by it:
    the camera still holds the segment, and the dock that comes back sends it again."""
    from datetime import datetime, timedelta, timezone

    home = make_home(tmp_path / "home")
    enrol_device(home, "cam-1")
    add_dock(home)
    chain = DeviceChain(home, "cam-1", tmp_path / "segments")
    old_seg, fresh_seg = chain.seal(), chain.seal()
    service = EvidenceService(home, ServerConfig(reserve_bytes=0, upload_expiry_hours=24))
    ids = {}
    for name, seg, age in (("old", old_seg, timedelta(hours=25)), ("fresh", fresh_seg, timedelta(hours=23))):
        upload_id = service.new_upload_file()
        when = (datetime.now(timezone.utc) - age).isoformat(timespec="seconds")
        service.db.create_upload(UploadRecord(upload_id, "dock-1", seg.metadata(), seg.device_id, seg.sequence,
                                              seg.segment_hash, seg.size, 0, "receiving", when, when))
        service.part_path(upload_id).write_bytes(seg.data[:1000])
        service.db.set_upload_offset(upload_id, 1000, when)
        ids[name] = upload_id
        if name == "old":
            old_when = when
    notes = service.recover()
    try:
        assert service.db.upload(ids["old"]) is None
        assert not service.part_path(ids["old"]).exists()
        assert [n for n in notes if "expired" in n] == [
            f"upload {ids['old']} (cam-1 #{old_seg.sequence}, 1000 of {old_seg.size} bytes) untouched since "
            f"{old_when}: expired and discarded; the dock will send the segment again"]
        kept = service.db.upload(ids["fresh"])
        assert kept is not None and kept.offset == 1000
        assert service.part_path(ids["fresh"]).stat().st_size == 1000
    finally:
        service.close()


def test_the_server_says_when_an_unfinished_upload_expires(tmp_path):
    from email.utils import parsedate_to_datetime
    from datetime import datetime, timedelta, timezone

    home = make_home(tmp_path / "home")
    enrol_device(home, "cam-1")
    token = add_dock(home)
    seg = DeviceChain(home, "cam-1", tmp_path / "segments").seal(payload_bytes=2 * MIB)
    server = ServerProcess(home.root, "--reserve-mb", "0").start()
    try:
        tus = TusSession(server.url, token)
        created = tus.create(seg)
        assert "expiration" in tus.request("OPTIONS", "/tus/").headers["Tus-Extension"].split(",")
        week = timedelta(hours=168)
        for answer in (created, tus.head(created.headers["Location"])):
            expires = parsedate_to_datetime(answer.headers["Upload-Expires"])
            assert abs(expires - (datetime.now(timezone.utc) + week)) < timedelta(minutes=5)
    finally:
        assert server.stop() == 0


def test_a_server_started_before_its_with_block_is_the_one_the_block_stops(tmp_path):
    # `with ServerProcess(...).start() as s:` must not start a second server the test never sees.
    home = make_home(tmp_path / "home")
    started = ServerProcess(home.root, "--reserve-mb", "0").start()
    first = started.proc
    with started as server:
        assert server.proc is first, "entering the block started a second server"
    assert first.poll() is not None, "the server started before the block was left running"
