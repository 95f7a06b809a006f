"""The receivers with real ports: NMEA through a pty pair read with pyserial, gpsd over a loopback socket."""

from __future__ import annotations

import kit

import argparse
import json
import random
import re
import socket
import threading
import time
import tomllib
from pathlib import Path

import pytest

from openbwv.hw import open_hardware
from openbwv.hw.board import load_board, parse_board
from openbwv.hw.config import CameraConfig, GnssConfig, HardwareConfig, add_hardware_arguments, config_from_arguments
from openbwv.hw.errors import BoardFileError, GnssConfigError, HardwareConfigError, UnknownBackend
from openbwv.hw.gnss import GpsdReceiver, NmeaReceiver, emulated_receiver, open_gnss, serial_port_opener
from openbwv.hw.gnss_emulator import PtyNmeaFeeder, SyntheticTrack, nmea_log_bursts
from openbwv.hw.nmea import EVENT_FIX_ACQUIRED, EVENT_FIX_LOST, EVENT_FIX_REGAINED, Fix, FixEvent, NmeaDecoder

T0 = 1_764_086_400_000_000


def wait_for(predicate, timeout=5.0):
    return kit.wait_for(predicate, timeout)


class Collector:
    """Takes a receiver's items as the camera does, and keeps them all."""

    def __init__(self, receiver):
        self.receiver = receiver
        self.items: list = []

    def take(self) -> list:
        self.items += self.receiver.take_fixes()
        return self.items

    def kinds(self) -> list[str]:
        return [i.kind if isinstance(i, FixEvent) else "fix" for i in self.take()]

    def fixes(self) -> list[Fix]:
        return [i for i in self.take() if isinstance(i, Fix)]


def ten_hertz_log() -> bytes:
    """Five epochs 0.1 s apart, with the noise a real log has: a bad checksum, a cut line, garbage."""
    track = SyntheticTrack(51.5007, -0.1246, 13.4, 0.0, start_utc_us=T0, rate_hz=10)
    bursts = [track.burst(i) for i in range(5)]
    bad = bytearray(bursts[1])
    bad[bad.index(b"GGA") + 20] ^= 0x01  # one bit of the GGA's latitude
    bursts[1] = bytes(bad)
    bursts[2] = b"\x00\xff garbage\r\n" + bursts[2]
    bursts[3] = bursts[3] + b"$GNGGA,160000.30,5130.0\r\n"
    return b"".join(bursts)


def test_a_recorded_log_replayed_through_a_pty_gives_exactly_the_fixes_it_holds():
    log = ten_hertz_log()
    expected_decoder = NmeaDecoder()
    expected = [i for i in expected_decoder.feed(log, T0) + expected_decoder.idle(T0) if isinstance(i, Fix)]
    feeder = PtyNmeaFeeder(nmea_log_bursts(log))
    receiver = emulated_receiver(feeder, name="replay")
    try:
        got = Collector(receiver)
        wait_for(lambda: feeder.finished.is_set() and len(got.fixes()) >= len(expected))
        time.sleep(0.3)
        fixes = got.fixes()
        strip = lambda f: (f.utc_us, f.lat, f.lon, f.quality, f.satellites, f.hdop, f.accuracy_m, f.speed_mps)  # noqa: E731
        assert [strip(f) for f in fixes] == [strip(f) for f in expected]
        assert len(fixes) == 5  # the bad GGA's epoch still has its RMC
        assert fixes[1].satellites is None
        c, e = receiver.counters, expected_decoder.counters
        assert (c.bad_checksum, c.truncated) == (1, 1) and c.garbage_bytes >= 9
        assert (c.bytes, c.sentences, c.garbage_bytes) == (e.bytes, e.sentences, e.garbage_bytes)
        # Paced by the log's own times: 0.4 s from the first epoch to the last, not all at once.
        assert (fixes[-1].device_utc_us - fixes[0].device_utc_us) / 1e6 == pytest.approx(0.4, abs=0.15)
        assert feeder.dropped_bytes == 0
    finally:
        receiver.close()


def test_log_bursts_are_cut_by_the_sentence_times_or_at_one_hertz_without_them():
    log = ten_hertz_log()
    offsets = [offset for offset, _ in nmea_log_bursts(log)]
    # The cut GGA at 0.3 s repeats its burst's GGA: a burst of its own, sent at once.
    assert offsets == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3, 0.4])
    untimed = b"$GPGGA,,,,,,0,00,99.99,,,,,,*48\r\n$GPGSA,A,1,,,,,,,,,,,,,,,*1E\r\n" * 3
    assert [offset for offset, _ in nmea_log_bursts(untimed)] == [0.0, 1.0, 2.0]
    across_midnight = b"$GPGGA,235959.00,*00\r\n$GPGGA,000001.00,*00\r\n"
    assert [offset for offset, _ in nmea_log_bursts(across_midnight)] == [0.0, 2.0]


def test_fix_loss_and_recovery_come_through_the_pty_as_events():
    track = SyntheticTrack(start_utc_us=T0, rate_hz=10, outages=[(0.3, 0.3)])
    receiver = emulated_receiver(PtyNmeaFeeder(track.bursts(count=10)), name="synthetic")
    try:
        got = Collector(receiver)
        wait_for(lambda: len(got.fixes()) == 7)
        assert got.kinds() == [EVENT_FIX_ACQUIRED, "fix", "fix", "fix", EVENT_FIX_LOST, EVENT_FIX_REGAINED,
                               "fix", "fix", "fix", "fix"]
        lost, regained = got.items[4], got.items[5]
        assert lost.utc_us == T0 + 300_000 and regained.utc_us == T0 + 600_000
        assert regained.outage_s == pytest.approx(0.4, abs=0.15)
        assert receiver.no_fix_reason() is None
    finally:
        receiver.close()


def test_a_receiver_that_falls_silent_loses_its_fix_and_says_why():
    track = SyntheticTrack(start_utc_us=T0, rate_hz=10)
    receiver = emulated_receiver(PtyNmeaFeeder(track.bursts(count=3)), name="synthetic", silence_s=0.5)
    try:
        got = Collector(receiver)
        wait_for(lambda: EVENT_FIX_LOST in got.kinds())
        lost = got.items[-1]
        assert lost.reason.startswith("receiver silent for") and lost.utc_us is None
        assert receiver.no_fix_reason().startswith("fix lost: receiver silent")
        assert receiver.last_fix is not None and receiver.last_fix.utc_us == T0 + 200_000
    finally:
        receiver.close()


def test_random_bytes_on_the_line_are_counted_and_the_fixes_between_them_survive():
    rng = random.Random(20251125)
    track = SyntheticTrack(start_utc_us=T0, rate_hz=10)
    bursts = []
    for i in range(6):
        bursts.append((i * 0.1, bytes(rng.randrange(256) for _ in range(300)) + b"\r\n" + track.burst(i)))
    receiver = emulated_receiver(PtyNmeaFeeder(bursts), name="noisy")
    try:
        got = Collector(receiver)
        wait_for(lambda: len(got.fixes()) >= 5)
        time.sleep(0.3)
        assert [f.utc_us for f in got.fixes()] == [T0 + i * 100_000 for i in range(6)]
        assert receiver.counters.garbage_bytes > 100
    finally:
        receiver.close()


def test_an_unplugged_receiver_is_a_lost_fix_and_the_reader_keeps_trying():
    track = SyntheticTrack(start_utc_us=T0, rate_hz=10)
    feeder = PtyNmeaFeeder(track.bursts())
    receiver = emulated_receiver(feeder, name="usb")
    try:
        got = Collector(receiver)
        wait_for(lambda: len(got.fixes()) >= 2)
        feeder.close()  # the cable is pulled: the pty's far end goes away
        wait_for(lambda: EVENT_FIX_LOST in got.kinds())
        assert "port" in got.items[-1].reason or "silent" in got.items[-1].reason
        assert receiver.no_fix_reason().startswith("fix lost")
        wait_for(lambda: receiver.port_failures >= 1)
    finally:
        started = time.monotonic()
        receiver.close()
        assert time.monotonic() - started < 2.0


def test_a_serial_port_that_is_not_there_is_reported_not_raised(tmp_path):
    receiver = NmeaReceiver(serial_port_opener(str(tmp_path / "ttyNOPE"), 9600), name="missing", retry_s=0.05)
    try:
        wait_for(lambda: receiver.port_failures >= 2)
        assert receiver.take_fixes() == []
        assert receiver.no_fix_reason().startswith("no fix yet (cannot open the port")
    finally:
        receiver.close()


# -- choosing the source ------------------------------------------------------------------
def parse(*argv: str, environ: dict[str, str] | None = None) -> HardwareConfig:
    parser = argparse.ArgumentParser()
    add_hardware_arguments(parser)
    return config_from_arguments(parser.parse_args(list(argv)), environ or {})


def test_gnss_file_means_replay_that_log_and_the_synthetic_walk_is_the_emulated_default(tmp_path):
    assert parse().gnss_source == "synthetic"
    config = parse("--gnss", str(tmp_path / "drive.nmea"))
    assert (config.gnss_source, config.gnss.device) == ("replay", str(tmp_path / "drive.nmea"))
    assert parse("--gnss", "none").gnss_source == "none"
    config = parse("--gnss", "serial", environ={"BWV_GNSS_DEVICE": "/dev/ttyACM0", "BWV_GNSS_BAUD": "38400"})
    assert (config.gnss_source, config.gnss.device, config.gnss.baud) == ("serial", "/dev/ttyACM0", 38400)
    assert parse("--hw-backend", "pi").gnss_source is None  # the board file's receiver


def test_emulated_positions_are_refused_on_a_real_camera(tmp_path):
    with pytest.raises(GnssConfigError, match="never seal an emulated place"):
        parse("--hw-backend", "pi", "--gnss", str(tmp_path / "drive.nmea"))
    with pytest.raises(GnssConfigError):
        HardwareConfig(backend="pi", gnss=GnssConfig(source="synthetic")).check()


def test_gnss_settings_from_a_config_file_table_are_checked():
    config = HardwareConfig.from_mapping({"gnss": {"source": "serial", "device": "/dev/ttyACM0", "baud": 115200}})
    assert (config.gnss_source, config.gnss.baud) == ("serial", 115200)
    with pytest.raises(HardwareConfigError, match="unknown key"):
        HardwareConfig.from_mapping({"gnss": {"port": "/dev/ttyACM0"}})
    with pytest.raises(UnknownBackend):
        HardwareConfig.from_mapping({"gnss": {"source": "glonass"}})
    with pytest.raises(GnssConfigError, match="baud"):
        HardwareConfig.from_mapping({"gnss": {"baud": 7}})


def test_a_replay_of_a_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(GnssConfigError, match="cannot read the NMEA log"):
        open_gnss(HardwareConfig(gnss=GnssConfig(source="replay", device=str(tmp_path / "nope.nmea"))))


def test_on_a_pi_the_board_files_receiver_is_the_default_and_a_dead_port_is_not_fatal(tmp_path):
    board = load_board("pi5")
    assert board.gnss is not None and board.gnss.device == "/dev/ttyAMA0" and board.gnss.baud == 9600
    assert {14, 15} <= board.reserved  # its UART lines are kept free of GPIO use
    config = HardwareConfig(backend="pi", gnss=GnssConfig(device=str(tmp_path / "ttyAMA0")))
    receiver = open_gnss(config, board)
    try:
        assert isinstance(receiver, NmeaReceiver) and receiver.name.endswith("ttyAMA0 at 9600 baud")
        assert receiver.no_fix_reason().startswith("no fix yet")
    finally:
        receiver.close()
    assert open_gnss(HardwareConfig(backend="pi", gnss=GnssConfig(source="none")), board) is None


def test_open_hardware_gives_the_emulated_camera_a_synthetic_receiver_and_closes_it():
    with open_hardware(HardwareConfig(camera=CameraConfig(source="none"))) as hw:
        assert hw.gnss is not None and hw.gnss.name == "synthetic track (emulated)"
        thread = hw.gnss._thread
    assert not thread.is_alive()
    with open_hardware(HardwareConfig(camera=CameraConfig(source="none"), gnss=GnssConfig(source="none"))) as hw:
        assert hw.gnss is None


# -- gpsd -------------------------------------------------------------------------
class FakeGpsd:
    """A loopback server that speaks the part of gpsd's JSON protocol the client uses."""

    def __init__(self, reports: list[bytes]):
        self.reports = reports
        self.watch = b""
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.sendall(b'{"class":"VERSION","release":"3.25","proto_major":3,"proto_minor":15}\n')
            self.watch = conn.recv(1024)
            for report in self.reports:
                conn.sendall(report + b"\n")
                time.sleep(0.05)
            self.done.wait(10)

    def close(self) -> None:
        self.done.set()
        self.sock.close()


def tpv(mode: int, second: int, **extra) -> bytes:
    report = {"class": "TPV", "device": "/dev/ttyACM0", "mode": mode, "time": f"2025-11-25T16:00:0{second}.000Z"}
    if mode >= 2:
        report.update(lat=51.5007, lon=-0.1246, altMSL=12.0, eph=3.1, speed=1.4, track=90.0)
    report.update(extra)
    return json.dumps(report).encode()


def test_gpsd_reports_become_fixes_and_fix_events():
    sky = json.dumps({"class": "SKY", "hdop": 0.8, "uSat": 11}).encode()
    gpsd = FakeGpsd([sky, tpv(3, 0), tpv(1, 1), b"this is not json", tpv(3, 2, status=2), b"[1, 2]"])
    receiver = GpsdReceiver(gpsd.address)
    try:
        got = Collector(receiver)
        wait_for(lambda: len(got.fixes()) == 2)
        assert got.kinds() == [EVENT_FIX_ACQUIRED, "fix", EVENT_FIX_LOST, EVENT_FIX_REGAINED, "fix"]
        first, second = got.fixes()
        assert first.utc_us == T0 and (first.lat, first.lon, first.quality) == (51.5007, -0.1246, 1)
        assert (first.hdop, first.satellites, first.accuracy_m, first.altitude_m) == (0.8, 11, 3.1, 12.0)
        assert second.quality == 2 and second.utc_us == T0 + 2_000_000
        assert b'"enable":true' in gpsd.watch and b'"json":true' in gpsd.watch
        wait_for(lambda: receiver.counters.malformed == 2)
    finally:
        receiver.close()
        gpsd.close()


def test_a_gpsd_that_is_not_running_is_reported_not_raised():
    probe = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{probe.getsockname()[1]}"
    probe.close()  # nothing listens there now
    receiver = GpsdReceiver(address, retry_s=0.05)
    try:
        wait_for(lambda: receiver.port_failures >= 1)
        assert "cannot reach gpsd" in receiver.no_fix_reason()
    finally:
        receiver.close()


@pytest.mark.parametrize("gnss, message", [
    ({"device": "/dev/serial0", "baud": 7}, "[gnss] baud is 7"),
    ({"device": "/dev/serial0", "baud": 9600, "port": "x"}, "unknown key(s) ['port']"),
    ({"baud": 9600}, "[gnss] device is None"),
])
def test_a_board_files_gnss_section_is_checked(gnss, message):
    data = tomllib.loads(Path(load_board("pi4").source).read_text(encoding="utf-8")) | {"gnss": gnss}
    with pytest.raises(BoardFileError, match=re.escape(message)):
        parse_board(data)
