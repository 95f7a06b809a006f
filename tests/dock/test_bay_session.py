"""A whole bay session: a docked camera is uploaded, freed against receipts and reported clear.

The server here is `DirectoryUploader` (copies, verifies, signs receipts with
the server's keys), or a server that fails on cue.  Whatever the server
does, the camera's files change only when the camera itself frees a segment
against a receipt.
"""

from __future__ import annotations

import hashlib
import io
import logging

import pytest

from openbwv.dock.backoff import Backoff
from openbwv.dock.bay import Bay
from openbwv.dock.config import BayConfig
from openbwv.dock.errors import MountMismatch, UploadRejected
from openbwv.dock.events import parse_kv
from openbwv.dock.progress import TerminalDisplay
from openbwv.dock.state import ATTENTION, CLEAR, ERROR, WAITING, StateStore
from openbwv.dock.upload import DirectoryUploader
from openbwv.sealed.reader import verify_file

from .dock_kit import FlakyUploader

NO_WAIT = Backoff(initial_s=0.0, maximum_s=0.0, jitter=0.0)


def make_bay(camera, tmp_path, uploader, **kw) -> Bay:
    kw.setdefault("store", StateStore(tmp_path / "state"))
    return Bay(BayConfig("bay-1", "unused", kw.pop("mount", camera.storage.directory)), uploader, **kw)


def events(caplog, name: str) -> list[dict[str, str]]:
    return [parse_kv(r.getMessage()) for r in caplog.records
            if r.name == "bwv.dock.events" and r.getMessage().startswith(f"event={name} ")]


def test_a_docked_camera_ends_empty_with_every_segment_uploaded_verified_and_receipted(
        camera, cradle, tmp_path, server_keys, caplog):
    caplog.set_level(logging.INFO, logger="bwv.dock")
    sealed = camera.seal(4, media_bytes=300_000)
    originals = camera.files()
    upload_dir = tmp_path / "evidence"
    screen = io.StringIO()
    bay = make_bay(camera, tmp_path, DirectoryUploader(upload_dir, server_keys, registry=camera.registry,
                                                       chunk_size=64 * 1024),
                   display=TerminalDisplay(screen, plain_interval_s=0))

    report = bay.run_session(cradle.dock_port)

    assert report.clear and report.device_id == camera.device_id
    assert camera.storage.sealed_paths() == []  # the camera is empty ...
    held = sorted((upload_dir / camera.device_id).iterdir())
    assert [p.name for p in held] == sorted(originals)  # ... and the server holds every segment,
    for path in held:  # whole, signed by the camera, byte for byte what it sealed
        seg = verify_file(path, camera.registry)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == originals[path.name]
        assert seg.segment_hash in {s.segment_hash for s in sealed}
    assert sorted(report.freed) == sorted(originals) == sorted(cradle.link.freed)
    status = bay.store.read_bays()[0]
    assert (status.state, status.segments_freed, status.segments_left) == (CLEAR, 4, 0)
    assert status.device_id == camera.device_id and status.battery_pct == 87

    progress = events(caplog, "upload_progress")
    assert progress and {p["bay"] for p in progress} == {"bay-1"}
    assert {"bytes", "total", "rate_Bps", "eta_s", "pct", "segment", "device"} <= set(progress[0])
    done = events(caplog, "upload_done")
    assert [d["segment"] for d in done] == sorted(originals) and all(d["bytes"] == d["total"] for d in done)
    assert len(events(caplog, "segment_freed")) == 4
    assert events(caplog, "camera_clear")[0]["freed"] == "4"
    shown = screen.getvalue()
    assert "MB/s" in shown and "ETA" in shown and "CLEAR: 4 segment(s) uploaded and freed" in shown


def test_while_the_server_is_down_the_dock_backs_off_and_the_camera_keeps_every_file(
        camera, cradle, tmp_path, server_keys, caplog):
    caplog.set_level(logging.INFO, logger="bwv.dock")
    camera.seal(2)
    originals = camera.files()
    written: list[tuple[str, int]] = []

    class WatchedStore(StateStore):  # every status `bwv dock status` could have shown, in order
        def write_bay(self, status):
            written.append((status.state, status.attempts))
            super().write_bay(status)

    flaky = FlakyUploader(DirectoryUploader(tmp_path / "evidence", server_keys), failures=3, camera=camera)
    bay = make_bay(camera, tmp_path, flaky, store=WatchedStore(tmp_path / "state"),
                   backoff=Backoff(initial_s=0.05, factor=2.0, maximum_s=1.0, jitter=0.0))

    report = bay.run_session(cradle.dock_port)

    assert flaky.files_seen_while_down == [originals] * 3  # untouched while the server was away
    gaps = [b - a for a, b in zip(flaky.times, flaky.times[1:4])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # exponential backoff
    assert [w for w in written if w[0] == WAITING] == [(WAITING, 1), (WAITING, 2), (WAITING, 3)]
    assert written[-1][0] == CLEAR
    retries = events(caplog, "upload_retry")
    assert [r["attempt"] for r in retries] == ["1", "2", "3"] and "connection refused" in retries[0]["error"]
    assert report.clear and report.upload_retries == 3 and camera.files() == {}


def test_a_segment_the_server_refuses_stays_on_the_camera_and_the_bay_asks_for_attention(
        camera, cradle, tmp_path, server_keys):
    sealed = camera.seal(3)
    inner = DirectoryUploader(tmp_path / "evidence", server_keys)

    class RefusesTheSecond:
        def upload(self, path, device_id, sequence, segment_hash, progress):
            if sequence == sealed[1].sequence:
                raise UploadRejected("signature does not verify with the enrolled key")
            return inner.upload(path, device_id, sequence, segment_hash, progress)

    bay = make_bay(camera, tmp_path, RefusesTheSecond())
    report = bay.run_session(cradle.dock_port)
    assert not report.clear
    assert list(camera.files()) == [sealed[1].path.name]
    assert "signature does not verify" in report.refused[sealed[1].path.name]
    status = bay.store.read_bays()[0]
    assert status.state == ATTENTION and "signature does not verify" in status.last_error


def test_a_bay_whose_mount_does_not_hold_what_its_camera_lists_uploads_nothing(camera, cradle, tmp_path,
                                                                                server_keys):
    camera.seal(2)
    originals = camera.files()
    elsewhere = tmp_path / "another-bays-storage"
    elsewhere.mkdir()
    bay = make_bay(camera, tmp_path, DirectoryUploader(tmp_path / "evidence", server_keys), mount=elsewhere)
    with pytest.raises(MountMismatch, match="storage and serial port of different bays"):
        bay.run_session(cradle.dock_port)
    assert camera.files() == originals and not (tmp_path / "evidence").exists()
    assert bay.store.read_bays()[0].state == ERROR


def test_a_segment_the_server_already_holds_is_receipted_without_sending_it_again(camera, cradle, tmp_path,
                                                                                   server_keys):
    sealed = camera.seal(3)
    uploader = DirectoryUploader(tmp_path / "evidence", server_keys)
    first = sealed[0]
    uploader.upload(first.path, camera.device_id, first.sequence, first.segment_hash.hex(), lambda n: None)
    assert uploader.copies == 1
    report = make_bay(camera, tmp_path, uploader).run_session(cradle.dock_port)
    assert report.clear and uploader.copies == 3  # two more copies, not three
    assert len(report.freed) == 3


def test_an_uploaded_copy_that_is_not_the_listed_segment_gets_no_receipt(camera, tmp_path, server_keys):
    a, b = camera.seal(2)
    uploader = DirectoryUploader(tmp_path / "evidence", server_keys)
    with pytest.raises(UploadRejected, match="not cam-0042 #2"):
        uploader.upload(a.path, camera.device_id, b.sequence, b.segment_hash.hex(), lambda n: None)
    assert not list((tmp_path / "evidence" / camera.device_id).iterdir())


def test_an_empty_camera_is_reported_clear_at_once(camera, cradle, tmp_path, server_keys):
    report = make_bay(camera, tmp_path, DirectoryUploader(tmp_path / "e", server_keys)).run_session(cradle.dock_port)
    assert report.clear and report.listed == [] and cradle.link.join(3) and cradle.link.ended == "bye"
