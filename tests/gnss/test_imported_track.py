"""Footage imported with a separate receiver's log (`import_video(..., gnss=...)`) carries its fixes as a
camera would: each segment holds, inside the encryption, the LOCATION lines of the fixes taken while
it was recorded, padded so their length gives nothing away."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from openbwv.enrol import create_server_keys, device_storage, enrol_device
from openbwv.footage import make_synthetic_video
from openbwv.home import Home
from openbwv.importer import import_video
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.layout import RECORD_LOCATION
from openbwv.sealed.reader import decrypt_records

START = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
T0 = int(START.timestamp() * 1_000_000)


def test_each_segment_seals_the_fixes_taken_while_it_was_recorded(tmp_path):
    home = Home(tmp_path / "home")
    create_server_keys(home)
    enrol_device(home, "cam-g")
    fixes = [(T0 + n * 250_000, 51.5 + n * 1e-4, -0.12 - n * 1e-4) for n in range(9)]  # 0 .. 2.0 s
    video = make_synthetic_video(tmp_path / "v.mp4", seconds=2, width=160, height=120)
    report = import_video(video, device_storage(home, "cam-g"), segment_seconds=1.0, start=START, gnss=fixes)
    assert len(report.segments) == 2
    server, registry = ServerKeyPair.load(home.server_keys_dir), DeviceRegistry(home.registry_dir)
    sealed: list[list[tuple[int, float, float]]] = []
    for seg in report.segments:
        payloads = [p for rtype, p in decrypt_records(seg.path, registry, server) if rtype == RECORD_LOCATION]
        assert all(len(p) % 256 == 0 for p in payloads)
        lines = [json.loads(line) for p in payloads for line in p.decode().splitlines() if line.strip()]
        sealed.append([(d["utc_us"], d["lat"], d["lon"]) for d in lines])
    first_end = report.segments[0].trailer.end_utc_us
    assert sealed[0] == [f for f in fixes if f[0] < first_end]
    assert sealed[1] == [f for f in fixes if f[0] >= first_end]  # the last fix, at the very end, included


def test_without_a_log_no_location_is_sealed(tmp_path):
    home = Home(tmp_path / "home")
    create_server_keys(home)
    enrol_device(home, "cam-g")
    video = make_synthetic_video(tmp_path / "v.mp4", seconds=1, width=160, height=120)
    report = import_video(video, device_storage(home, "cam-g"), start=START)
    server, registry = ServerKeyPair.load(home.server_keys_dir), DeviceRegistry(home.registry_dir)
    assert not [1 for seg in report.segments for rtype, _ in decrypt_records(seg.path, registry, server)
                if rtype == RECORD_LOCATION]
