"""Where it was recorded: the receiver's fixes are sealed with the footage, inside the encryption and only there."""

from __future__ import annotations

from kit import wait_for

import json
import struct
import time
from dataclasses import replace
from pathlib import Path

import pytest

from openbwv.enrol import create_server_keys, enrol_device
from openbwv.firmware.state import Mode
from openbwv.home import Home
from openbwv.hw import open_hardware
from openbwv.hw.config import GnssConfig
from openbwv.hw.gnss import emulated_receiver
from openbwv.hw.gnss_emulator import PtyNmeaFeeder, SyntheticTrack
from openbwv.opener import open_paths
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.layout import CHUNK_HEAD_LEN, FRAME_CHUNK, RECORD_LOCATION, preamble_length
from openbwv.sealed.reader import decrypt_records

from .conftest import DEVICE, RunningCamera, camera_fixtures


def spy_on_receiver(cam: RunningCamera) -> list:
    """Keep every item the camera takes from its receiver: what the receiver read."""
    taken: list = []
    take = cam.hw.gnss.take_fixes

    def recording_take():
        items = take()
        taken.extend(items)
        return items

    cam.hw.gnss.take_fixes = recording_take  # type: ignore[method-assign]
    return taken


def record(cam: RunningCamera, seconds: float) -> None:
    cam.start()
    wait_for(lambda: cam.camera.report.frames > 5)
    cam.camera.record(True)
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(seconds)
    cam.camera.record(False, "test")
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY and cam.camera.report.clips)
    cam.stop()


def open_clip(home: Home, out: Path) -> tuple[dict, list]:
    server = ServerKeyPair.load(home.server_keys_dir)
    paths = sorted(home.device_storage(DEVICE).glob("*.bwv"))
    report = open_paths(paths, DeviceRegistry(home.registry_dir), server, out, mp4=False)
    assert not report.problems and not report.verify.problems
    [clip] = report.clips
    return json.loads(clip.manifest_path.read_text()), clip.segments


def location_lines(manifest: dict) -> list[dict]:
    return [line for seg in manifest["segments"] for line in seg.get("location", [])]


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """About 3.5 s recorded on the emulated camera with its default receiver: the synthetic walk."""
    tmp = tmp_path_factory.mktemp("walk")
    home = Home(tmp / "home")
    create_server_keys(home)
    enrol_device(home, DEVICE)
    cam = RunningCamera(home, tmp / "trace.jsonl", **{"prebuffer.seconds": 0})
    taken = spy_on_receiver(cam)
    record(cam, 3.5)
    manifest, segments = open_clip(home, tmp / "opened")
    return home, taken, manifest, segments


def test_every_second_of_recording_has_a_fix_and_they_are_what_the_receiver_read(walk):
    _home, taken, manifest, segments = walk
    sealed = location_lines(manifest)
    fixes = [r for r in sealed if "lat" in r]
    start_us = min(s.preamble.start_utc_us for s in segments)
    end_us = max(s.trailer.end_utc_us for s in segments)
    seconds = (end_us - start_us) / 1e6
    assert seconds >= 3.0
    assert len(fixes) >= int(seconds)
    times = [f["device_utc_us"] for f in fixes]
    assert times[0] <= start_us + 1_200_000 and times[-1] >= end_us - 1_500_000
    assert max(b - a for a, b in zip(times, times[1:])) <= 1_200_000  # one a second, none missed

    # Equal, record for record, to a stretch of what the camera took from the receiver.
    read = [item.to_record() for item in taken]
    first = read.index(sealed[0])
    assert read[first:first + len(sealed)] == sealed
    for fix in fixes:
        assert fix["lat"] == pytest.approx(51.5007, abs=0.001) and fix["lon"] == pytest.approx(-0.1246, abs=0.001)
        assert (fix["quality"], fix["sats"], fix["hdop"]) == (1, 9, 0.9)
        # Receiver UTC beside the camera's clock: here they agree to the receiver's latency.
        assert 0 <= fix["device_utc_us"] - fix["utc_us"] < 500_000
    assert [f["lon"] for f in fixes] == sorted(f["lon"] for f in fixes)  # walking east
    assert not [r for r in sealed if r.get("no_fix")]


def test_the_segment_says_which_gnss_source_its_locations_came_from(walk):
    _home, _taken, manifest, _segments = walk
    assert {seg["info"][0]["gnss"] for seg in manifest["segments"]} == {"synthetic track (emulated)"}


def clear_bytes(path: Path) -> bytes:
    """Everything of a sealed file that is not ciphertext: preamble, chunk frame headers, trailer."""
    data = path.read_bytes()
    pos = preamble_length(data[:16])
    clear = bytearray(data[:pos])
    while data[pos] == FRAME_CHUNK:
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        clear += data[pos:pos + CHUNK_HEAD_LEN]
        pos += CHUNK_HEAD_LEN + length
    return bytes(clear + data[pos:])


def encodings(lat: float, lon: float) -> tuple[list[bytes], list[bytes]]:
    """(long, short) ways a place could be written: decimal and NMEA text, doubles, floats, 1e-7 degree ints."""
    text = [repr(lat), repr(lon), f"{lat:.3f}", f"{lon:.4f}", f"{lat:.4f}", str(lat)[:6], str(lon)[:6],
            f"{int(abs(lat)):02d}{abs(lat) % 1 * 60:07.4f}"[:6], f"{int(abs(lon)):03d}{abs(lon) % 1 * 60:07.4f}"[:7]]
    long = [t.encode() for t in text] + [struct.pack(f"{e}d", v) for e in "<>" for v in (lat, lon)]
    short = [struct.pack(f"{e}{k}", v) for e in "<>" for k, v in
             (("f", lat), ("f", lon), ("i", round(lat * 1e7)), ("i", round(lon * 1e7)))]
    return long, short


def test_location_is_not_in_the_clear_bytes_of_any_segment(walk):
    home, _taken, manifest, _segments = walk
    fixes = [r for r in location_lines(manifest) if "lat" in r]
    places = [(f["lat"], f["lon"]) for f in fixes] + [(51.5007, -0.1246)]
    files = sorted(home.device_storage(DEVICE).glob("*.bwv"))
    assert files
    manifest_text = json.dumps(manifest).encode()
    for path in files:
        whole, clear = path.read_bytes(), clear_bytes(path)
        assert 0 < len(clear) < len(whole)
        for lat, lon in places:
            long, short = encodings(lat, lon)
            for pattern in long:
                assert pattern not in whole, (path.name, pattern)
            for pattern in short + long:
                assert pattern not in clear, (path.name, pattern)
    # The search looks for the right thing: the opened manifest, decrypted, does hold these places.
    assert repr(fixes[0]["lat"]).encode() in manifest_text and b"51.500" in manifest_text


def test_location_chunks_are_padded_so_their_clear_length_says_nothing_of_the_digits(walk):
    home, _taken, _manifest, _segments = walk
    server = ServerKeyPair.load(home.server_keys_dir)
    registry = DeviceRegistry(home.registry_dir)
    lengths = [len(payload) for path in sorted(home.device_storage(DEVICE).glob("*.bwv"))
               for rtype, payload in decrypt_records(path, registry, server) if rtype == RECORD_LOCATION]
    assert lengths and all(n % 256 == 0 for n in lengths), lengths


def with_receiver(monkeypatch, make_receiver) -> None:
    """RunningCamera's hardware, with the GNSS receiver a test chooses (None: no receiver at all)."""

    def open_with_receiver(config):
        hw = open_hardware(replace(config, gnss=GnssConfig(source="none")))
        hw.gnss = make_receiver()
        return hw

    monkeypatch.setattr(camera_fixtures, "open_hardware", open_with_receiver)


def test_a_segment_recorded_without_a_receiver_says_so_explicitly(home, tmp_path, monkeypatch):
    with_receiver(monkeypatch, lambda: None)
    cam = RunningCamera(home, tmp_path / "trace.jsonl", **{"prebuffer.seconds": 0})
    record(cam, 1.5)
    manifest, segments = open_clip(home, tmp_path / "opened")
    [no_fix] = location_lines(manifest)
    assert no_fix["no_fix"] is True and no_fix["reason"] == "no GNSS receiver configured"
    assert no_fix["from_utc_us"] == segments[0].preamble.start_utc_us
    assert manifest["segments"][0]["info"][0]["gnss"] == "none"


def test_a_fix_lost_and_regained_while_recording_is_sealed_as_such(home, tmp_path, monkeypatch):
    # Fixes at 0 and 1 s, none from 2 s to 7 s (a tunnel), then fixes again; 1 s segments.  The outage is
    # five segments long so that one lies wholly inside it even when a loaded machine cuts 2 s segments
    # (a segment ends at the first keyframe after its length, and a lagging camera's keyframes come late).
    track = SyntheticTrack(outages=[(2.0, 5.0)])
    with_receiver(monkeypatch, lambda: emulated_receiver(PtyNmeaFeeder(track.bursts()), name="tunnel"))
    cam = RunningCamera(home, tmp_path / "trace.jsonl", **{"prebuffer.seconds": 0, "video.segment_seconds": 1})
    cam.start()
    wait_for(lambda: cam.camera.report.frames > 5)
    cam.camera.record(True)
    wait_for(lambda: (time.time_ns() // 1000 - track.start_utc_us) / 1e6 > 8.3, timeout=20)
    cam.camera.record(False, "test")
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY and cam.camera.report.clips)
    cam.stop()

    manifest, _segments = open_clip(home, tmp_path / "opened")
    sealed = location_lines(manifest)
    events = [r for r in sealed if "event" in r]
    assert [e["event"] for e in events if e["event"] != "fix_acquired"] == ["fix_lost", "fix_regained"]
    lost, regained = [e for e in events if e["event"] != "fix_acquired"]
    assert lost["utc_us"] == track.start_utc_us + 2_000_000 and lost["reason"] == "receiver reports no fix"
    assert regained["utc_us"] == track.start_utc_us + 7_000_000
    assert regained["outage_s"] == pytest.approx(6.0, abs=0.3)  # from the fix at 1 s to the one at 7 s
    fix_times = [r["utc_us"] for r in sealed if "lat" in r]
    assert not [t for t in fix_times if track.start_utc_us + 2_000_000 <= t < track.start_utc_us + 7_000_000]
    # A segment wholly inside the outage has no fix, and says why.  (A 1 s segment that a 1 Hz fix
    # just missed, on a loaded machine, says that instead.)
    # (And on a machine loaded enough that the receiver's first sentence comes more than a segment
    # late, the first segment says it had no fix yet.)
    no_fixes = [r for r in sealed if r.get("no_fix")]
    reasons = [r["reason"] for r in no_fixes]
    assert "fix lost: receiver reports no fix" in reasons
    first_from = min(r["from_utc_us"] for r in no_fixes)
    assert set(r["reason"] for r in no_fixes if not (r["reason"].startswith("no fix yet")
                                                     and r["from_utc_us"] == first_from
                                                     and r["from_utc_us"] < track.start_utc_us + 2_000_000)) \
        <= {"fix lost: receiver reports no fix", "no fix arrived during this segment"}
