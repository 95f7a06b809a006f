"""`bwv camera --emulate --gnss FILE`: a recorded NMEA log, noise and all, replayed into a real recording."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from openbwv.enrol import create_server_keys, enrol_device
from openbwv.home import Home
from openbwv.hw.gnss_emulator import SyntheticTrack
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.layout import RECORD_LOCATION
from openbwv.sealed.reader import decrypt_records
from openbwv.server.geoindex import parse_location_lines

BWV = str(Path(sys.executable).with_name("bwv"))
EIFFEL = (48.8584, 2.2945)  # far from the synthetic default (Westminster): the fixes can only be the log's


def test_the_camera_seals_the_positions_of_the_log_it_replays_and_survives_its_noise(tmp_path):
    home = Home(tmp_path / "home")
    create_server_keys(home)
    enrol_device(home, "cam-g")
    track = SyntheticTrack(*EIFFEL, speed_mps=1.4, heading_deg=0.0, start_utc_us=1_764_086_400_000_000)
    bursts = [track.burst(i) for i in range(60)]
    bursts[1] = b"\x00\xff\xfe line noise\r\n" + bursts[1]  # garbage between sentences
    bursts[1] = bursts[1] + b"$GNGGA,160001.00,4851.5\r\n"  # a sentence cut short
    log = tmp_path / "walk.nmea"
    log.write_bytes(b"".join(bursts))

    run = subprocess.run([BWV, "camera", "--emulate", "--headless", "--device", "cam-g", "--gnss", str(log),
                          "--record", "--seconds", "4", "--prebuffer-seconds", "0", "--segment-seconds", "2",
                          "--video-size", "320x240", "--fps", "10"],
                         env=dict(os.environ, BWV_HOME=str(home.root)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    said = run.stdout + run.stderr
    assert "1 truncated" in said and "garbage" in said, said[-2000:]  # counted and skipped, said at the end

    sealed = sorted(home.device_storage("cam-g").glob("*.bwv"))
    assert sealed
    keys, registry = ServerKeyPair.load(home.server_keys_dir), DeviceRegistry(home.registry_dir)
    logged = [track.point(i) for i in range(60)]
    fixes = []
    for path in sealed:
        text = "".join(p.decode() for kind, p in decrypt_records(path, registry, keys) if kind == RECORD_LOCATION)
        fixes += parse_location_lines(text)[0]
        assert b"48.85" not in path.read_bytes()  # the place is sealed, never in clear
    assert len(fixes) >= 3  # a fix at least once a second of the 4 s recorded
    # Each sealed fix is one of the log's epochs, to NMEA's precision (1e-5 minutes of arc).
    assert all(any(abs(f.lat - p.lat) < 1e-6 and abs(f.lon - p.lon) < 1e-6 for p in logged) for f in fixes)
    assert [f.utc_us for f in fixes] == sorted(f.utc_us for f in fixes)
