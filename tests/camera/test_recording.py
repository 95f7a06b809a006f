"""The emulated camera, end to end: what an officer does and what the public sees and hears."""

from __future__ import annotations

from kit import wait_for

import time
from pathlib import Path

import av
import pytest

from openbwv.firmware.state import Mode
from openbwv.hw.trace_analysis import beeps, flash_stats, on_edges, read_trace, state_changes
from openbwv.opener import open_paths
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.reader import verify_file
from openbwv.verification import verify_paths


def opened_frames(home, paths, tmp_path) -> tuple[int, list]:
    server = ServerKeyPair.load(home.server_keys_dir)
    report = open_paths(paths, DeviceRegistry(home.registry_dir), server, tmp_path / "opened")
    assert not report.problems and not report.verify.problems
    clip = report.clips[0]
    with av.open(str(clip.ts_path)) as c:
        return sum(1 for _ in c.decode(video=0)), report.clips


def test_pressing_the_button_records_a_clip_that_verifies_and_plays(camera_factory, home, tmp_path):
    cam = camera_factory(**{"prebuffer.seconds": 0, "video.segment_seconds": 1}).start()
    wait_for(lambda: cam.camera.report.frames > 10)
    cam.hw.emulator.click_button(0.05)
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(2.5)
    cam.hw.emulator.press_button()
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY and cam.camera.report.clips, timeout=10)
    cam.hw.emulator.release_button()
    report = cam.stop()

    assert len(report.clips) == 1
    assert report.stop_reasons == ["button"]
    storage = home.device_storage("cam-test")
    verified = verify_paths([storage], DeviceRegistry(home.registry_dir))
    assert verified.ok, [p.line() for p in verified.problems]
    assert len(verified.segments) >= 3  # 1 s segments over ~5.5 s of recording
    frames, _ = opened_frames(home, sorted(storage.glob("*.bwv")), tmp_path)
    assert frames == report.recorded_frames
    assert frames >= 4.5 * 30


def test_clip_starts_with_the_pre_event_buffer(camera_factory, home):
    cam = camera_factory(**{"prebuffer.seconds": 3}).start()
    wait_for(lambda: cam.camera.report.frames >= 6 * 30, timeout=30)  # 6 s of standby
    press_utc_us = time.time_ns() // 1000
    cam.hw.emulator.click_button(0.05)
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(1)
    cam.camera.record(False, "test")
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY)
    cam.stop()

    first = min(home.device_storage("cam-test").glob("*.bwv"))
    start_utc_us = verify_file(first, DeviceRegistry(home.registry_dir)).preamble.start_utc_us
    lead = (press_utc_us - start_utc_us) / 1e6
    # At least the 3 s asked for, at most one keyframe interval (1 s) more, plus scheduling slack.
    assert 2.9 <= lead <= 4.5, lead


def test_a_trigger_starts_recording(camera_factory):
    cam = camera_factory(**{"prebuffer.seconds": 0}).start()
    wait_for(lambda: cam.camera.report.frames > 5)
    cam.hw.emulator.set_trigger("holster", True)
    wait_for(lambda: cam.camera.recording_started.is_set())
    report = cam.stop()
    assert report.clips and report.stop_reasons == ["shutdown"]


def test_docking_stops_recording_cleanly(camera_factory, home):
    cam = camera_factory(**{"prebuffer.seconds": 0}).start()
    wait_for(lambda: cam.camera.report.frames > 5)
    cam.camera.record(True)
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(1)
    cam.hw.emulator.set_docked(True)
    wait_for(lambda: cam.camera.machine.mode is Mode.DOCKED)
    report = cam.stop()
    assert report.stop_reasons == ["docked"]
    assert "docked_while_recording" in report.warnings
    assert verify_paths([home.device_storage("cam-test")], DeviceRegistry(home.registry_dir)).ok


def test_full_storage_stops_recording_and_says_why_without_deleting_anything(camera_factory, home):
    # A 1.2 MB quota with a 0.3 MB reserve: 2 Mbit/s fills it within a few seconds.
    cam = camera_factory(
        width=640, height=360,
        **{"prebuffer.seconds": 0, "video.bitrate": 2_000_000, "storage.quota_mb": 1.2,
           "storage.reserve_mb": 0.3, "storage.low_warning_mb": 0.8, "video.segment_seconds": 1},
    ).start()
    wait_for(lambda: cam.camera.report.frames > 5)
    cam.camera.record(True)
    wait_for(lambda: "storage full" in cam.camera.report.stop_reasons, timeout=30)
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY)
    before = sorted(p.name for p in home.device_storage("cam-test").glob("*.bwv"))
    cam.hw.emulator.click_button(0.05)  # trying again while full: refused, warned
    time.sleep(0.5)
    report = cam.stop()

    assert "storage_low" in report.warnings and report.warnings.count("storage_full") >= 2
    assert len(report.clips) == 1
    after = sorted(p.name for p in home.device_storage("cam-test").glob("*.bwv"))
    assert after == before  # nothing overwritten, nothing new
    assert verify_paths([home.device_storage("cam-test")], DeviceRegistry(home.registry_dir)).ok


def test_a_bookmark_is_sealed_inside_the_clip(camera_factory, home, tmp_path):
    cam = camera_factory(**{"prebuffer.seconds": 0}).start()
    wait_for(lambda: cam.camera.report.frames > 5)
    cam.camera.record(True)
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(0.5)
    cam.hw.emulator.click_button(0.1)
    wait_for(lambda: cam.camera.report.bookmarks == 1)
    time.sleep(0.5)
    cam.stop()
    _, clips = opened_frames(home, sorted(home.device_storage("cam-test").glob("*.bwv")), tmp_path)
    events = [e for seg in __import__("json").loads(clips[0].manifest_path.read_text())["segments"]
              for e in seg.get("events", [])]
    assert [e["type"] for e in events] == ["bookmark", "stop"]


@pytest.mark.slow
def test_indicators_flash_and_beep_while_recording_and_only_then(camera_factory):
    """The public's promise, from the hardware trace of a 30 s recording with standby before and after."""
    cam = camera_factory(**{"prebuffer.seconds": 2}).start()
    wait_for(lambda: cam.camera.report.frames > 60)
    time.sleep(1)
    cam.hw.emulator.click_button(0.05)
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(30)
    cam.hw.emulator.press_button()
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY, timeout=10)
    cam.hw.emulator.release_button()
    time.sleep(2)
    cam.stop()

    events = read_trace(cam.trace)
    press = [t for t, s in state_changes(events, "button") if s == "down"]
    start, stop = press[0], press[1] + 3.0  # stop = hold of 3 s
    led_on = on_edges(events, "record_led")
    assert led_on and all(start <= t <= stop + 0.2 for t in led_on), "LED lit outside recording"
    assert led_on[0] - start < 0.1, "LED did not come on with the press"
    stats = flash_stats(events, "record_led", start=start, end=stop)
    assert stats.frequency_hz == pytest.approx(2.0, rel=0.1)
    assert stats.duty == pytest.approx(0.5, abs=0.1)
    found = beeps(events)
    starts = [b.start for b in found]
    assert starts and all(start <= t <= stop + 0.2 for t in starts), "beep outside recording"
    assert starts[0] - start < 0.3, "no beep at the start of recording"
    assert len(starts) == 4  # at 0, 10, 20 and 30 s of a ~33 s recording
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(g == pytest.approx(10.0, abs=0.5) for g in gaps), gaps
