"""The battery alarm and the critical stop on a fast clock; the stealth gesture with the policy on and off."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kit import wait_for

from openbwv.dock.protocol import MessageType, check_message
from openbwv.firmware.docklink import CameraStatus
from openbwv.firmware.state import Mode
from openbwv.hw.config import AudioConfig, BatteryConfig
from openbwv.hw.trace_analysis import beeps, read_trace
from openbwv.opener import open_paths
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.verification import verify_paths

DEVICE = "cam-test"
QUIET = AudioConfig(source="none")  # these tests are about the indicators, not the microphone


def sealed_events(home, tmp_path: Path) -> list[dict]:
    storage = home.device_storage(DEVICE)
    report = open_paths(sorted(storage.glob("*.bwv")), DeviceRegistry(home.registry_dir),
                        ServerKeyPair.load(home.server_keys_dir), tmp_path / "opened")
    assert not report.problems and len(report.clips) == 1
    manifest = json.loads(report.clips[0].manifest_path.read_text())
    return [e for seg in manifest["segments"] for e in seg.get("events", [])]


def hello_fields(status: CameraStatus) -> dict:
    """The camera's HELLO as the dock link builds it, checked against the protocol."""
    from openbwv.dock.protocol import CameraHello

    hello = CameraHello(device_id=DEVICE, firmware=status.firmware, battery_pct=status.battery_pct,
                        storage_free_bytes=1, storage_used_bytes=1, segments=0, clock_utc_us=1,
                        battery_minutes_left=status.battery_minutes_left, battery_charging=status.battery_charging,
                        stealth_changes=list(status.stealth_changes))
    fields = {**hello.to_fields(), "reply_to": 1}
    check_message(MessageType.HELLO, fields)
    return fields


def test_a_low_battery_alarms_and_a_critical_one_stops_and_seals_the_clip(camera_factory, home, tmp_path):
    # 12-hour battery at 11 %, a thousand times faster: 10 % in about 0.4 s, 3 % about 3.5 s later.
    cam = camera_factory(audio=QUIET, battery=BatteryConfig(speedup=1000, start_pct=11.0),
                         **{"prebuffer.seconds": 0, "video.segment_seconds": 2})
    cam.start()
    cam.camera.record(True, "test")
    wait_for(lambda: cam.camera.recording_started.is_set())
    wait_for(lambda: cam.camera.machine.mode is Mode.FAULT and not cam.camera._clip, timeout=20)
    status = cam.camera.status()
    assert cam.hw.sound.wait_idle(5)  # let the chimes play out before the hardware closes
    report = cam.stop()

    assert report.battery_alarms[:2] == ["battery_low", "battery_critical"]
    assert len(report.stop_reasons) == 1 and report.stop_reasons[0].startswith("fault: battery critical")
    verified = verify_paths([home.device_storage(DEVICE)], DeviceRegistry(home.registry_dir))
    assert verified.ok and verified.segments
    assert not any(s.trailer.recovered for s in verified.segments)  # sealed cleanly, not after a power loss
    events = sealed_events(home, tmp_path)
    kinds = [e["type"] for e in events]
    assert kinds.index("battery_low") < kinds.index("battery_critical") < kinds.index("stop")
    low = next(e for e in events if e["type"] == "battery_low")
    assert 9 <= low["level_pct"] <= 10 and "alarm at 10 %" in low["why"]
    # The alarm is its own pattern: a falling chime, never the 2 kHz recording beep.
    tones = [round(b.frequency) for b in beeps(read_trace(cam.trace))]
    assert [1400, 1000, 700] == tones[tones.index(1400):tones.index(1400) + 3]
    assert 500 in tones  # the critical chime's fourth tone
    fields = hello_fields(status)
    assert fields["battery_pct"] <= 3 and fields["battery_minutes_left"] <= 25


def test_a_camera_that_was_stopped_by_a_flat_battery_records_again_once_charging(camera_factory):
    cam = camera_factory(audio=QUIET, battery=BatteryConfig(speedup=3000, start_pct=3.5),
                         **{"prebuffer.seconds": 0})
    cam.start()
    wait_for(lambda: cam.camera.machine.mode is Mode.FAULT, timeout=15)
    cam.camera.record(True, "test")
    time.sleep(0.3)
    assert not cam.camera.report.clips  # no recording on a flat battery
    cam.hw.battery.set_charging(True)
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY, timeout=10)
    report = cam.stop()
    assert "battery_recovered" in report.battery_alarms


def triple_press(cam) -> None:
    for _ in range(3):
        cam.hw.emulator.click_button(0.06)
        time.sleep(0.2)


def test_with_the_policy_on_three_presses_turn_the_indicators_off_and_the_change_is_sealed_and_reported(
        camera_factory, home, tmp_path):
    cam = camera_factory(audio=QUIET, **{"prebuffer.seconds": 0, "indicators.stealth_allowed": True})
    cam.start()
    cam.camera.record(True, "test")
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(0.5)
    triple_press(cam)
    wait_for(lambda: cam.camera.machine.stealth)
    time.sleep(0.3)
    assert not cam.hw.emulator.output_is_on("record_led") and cam.camera.indicators.stealth
    time.sleep(0.5)
    assert not cam.hw.emulator.output_is_on("record_led")  # not flashing either
    triple_press(cam)
    wait_for(lambda: not cam.camera.machine.stealth)
    status = cam.camera.status()
    cam.camera.record(False, "test")
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY and cam.camera.report.clips, timeout=10)
    cam.stop()

    events = sealed_events(home, tmp_path)
    stealth = [e for e in events if e["type"] == "stealth"]
    assert [(e["on"], e["cause"]) for e in stealth] == [(True, "gesture"), (False, "gesture")]
    reported = hello_fields(status)["stealth_changes"]
    assert [(c["on"], c["cause"]) for c in reported] == [(True, "gesture"), (False, "gesture")]


def test_with_the_policy_off_the_gesture_is_refused_and_the_indicators_stay_on(camera_factory, home, tmp_path):
    cam = camera_factory(audio=QUIET, **{"prebuffer.seconds": 0})
    cam.start()
    cam.camera.record(True, "test")
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(0.3)
    triple_press(cam)
    wait_for(lambda: "stealth_refused" in cam.camera.report.warnings)
    assert cam.camera.indicators.on and not cam.camera.machine.stealth
    cam.camera.record(False, "test")
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY and cam.camera.report.clips, timeout=10)
    cam.stop()
    assert not [e for e in sealed_events(home, tmp_path) if e["type"] == "stealth"]
    assert hello_fields(cam.camera.status())["stealth_changes"] == []


def test_a_clip_started_in_stealth_says_so_and_never_lights_the_red_circle(camera_factory, home, tmp_path):
    from openbwv.firmware.state import StealthRequest

    cam = camera_factory(audio=QUIET, **{"prebuffer.seconds": 0, "indicators.stealth_allowed": True})
    cam.start()
    wait_for(lambda: cam.camera.report.frames > 5)
    cam.camera.post(StealthRequest(time.monotonic(), True))
    cam.camera.record(True, "test")
    wait_for(lambda: cam.camera.recording_started.is_set())
    time.sleep(0.8)
    cam.camera.record(False, "test")
    wait_for(lambda: cam.camera.machine.mode is Mode.STANDBY and cam.camera.report.clips, timeout=10)
    cam.stop()
    led = [ev.state for ev in read_trace(cam.trace) if ev.device == "record_led" and not ev.initial]
    assert "on" not in led  # the red circle never came on
    storage = home.device_storage(DEVICE)
    report = open_paths(sorted(storage.glob("*.bwv")), DeviceRegistry(home.registry_dir),
                        ServerKeyPair.load(home.server_keys_dir), tmp_path / "opened")
    info = json.loads(report.clips[0].manifest_path.read_text())["segments"][0]["info"][0]
    assert info["stealth_at_start"] is True and info["stealth_policy"] == {"allowed": True}
