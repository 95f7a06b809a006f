"""The emulated camera's button, LEDs, dock contact and triggers, and what the hardware trace records of them."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero import Device

from openbwv.hw.errors import HardwareConfigError
from openbwv.hw.trace_analysis import edges, flash_stats, on_edges, read_trace, state_changes


def test_button_press_reaches_when_pressed(emulated):
    hw = emulated()
    presses: list[str] = []
    hw.button.when_pressed = lambda: presses.append("down")
    hw.button.when_released = lambda: presses.append("up")
    hw.emulator.press_button()
    assert hw.button.is_pressed
    hw.emulator.release_button()
    assert presses == ["down", "up"]
    assert not hw.button.is_pressed


def test_button_press_appears_in_trace(emulated):
    hw = emulated()
    hw.emulator.press_button()
    hw.emulator.release_button()
    events = read_trace(hw.trace.path)
    assert [s for _t, s in state_changes(events, "button")] == ["up", "down", "up"]
    [down] = edges(events, "button", "down")
    [up] = edges(events, "button", "up")
    assert down <= up


def test_record_led_flashes_at_two_hertz_in_the_trace(emulated):
    hw = emulated()
    hw.record_led.blink(on_time=0.25, off_time=0.25)
    time.sleep(2.1)
    hw.record_led.off()
    stats = flash_stats(read_trace(hw.trace.path), "record_led")
    # Generous: the blink thread only sleeps, so load can stretch but not shrink a period.
    assert stats.cycles >= 2
    assert 1.2 <= stats.frequency_hz <= 2.2
    assert 0.3 <= stats.duty <= 0.7


def test_record_led_state_can_be_read_from_the_device_and_the_pin(emulated):
    hw = emulated()
    hw.record_led.on()
    assert hw.record_led.is_lit
    assert hw.emulator.output_is_on("record_led")
    hw.record_led.off()
    assert not hw.emulator.output_is_on("record_led")


def test_the_trace_agrees_with_the_mock_pins_own_history(emulated):
    hw = emulated()
    pin = hw.emulator.pin("status_led")
    pin.clear_states()
    start = pin._last_change
    for _ in range(3):
        hw.status_led.on()
        hw.status_led.off()
    # MockPin.states holds (seconds since the previous change, level); rebuild absolute times.
    pin_times, t = [], start
    for delta, level in pin.states[1:]:
        t += delta
        pin_times.append((t, "on" if level else "off"))
    traced = state_changes(read_trace(hw.trace.path), "status_led")[1:]
    assert [s for _t, s in traced] == [s for _t, s in pin_times]
    assert all(abs(a - b) < 1e-6 for (a, _), (b, _) in zip(traced, pin_times))


def test_trace_lines_are_on_disk_while_the_camera_runs(emulated):
    hw = emulated()
    hw.status_led.on()
    events = read_trace(hw.trace.path)  # read without closing anything
    assert on_edges(events, "status_led")


def test_the_trace_starts_with_every_device_at_rest(emulated):
    hw = emulated(triggers=("holster", "taser"))
    events = read_trace(hw.trace.path)
    assert events[0].device == "trace" and events[0].event == "start"
    initial = {ev.device: ev.state for ev in events if ev.initial}
    assert initial == {
        "record_led": "off", "status_led": "off", "buzzer": "off", "button": "up",
        "dock_detect": "undocked", "holster": "inactive", "taser": "inactive",
    }


def test_docking_follows_the_active_low_dock_contact(emulated):
    hw = emulated()
    docked = threading.Event()
    hw.dock_detect.when_activated = docked.set
    hw.emulator.set_docked(True)
    assert docked.is_set() and hw.dock_detect.is_active
    assert not hw.emulator.pin("dock_detect").state  # the bay's pogo pin pulls the line to ground
    hw.emulator.set_docked(False)
    assert [s for _t, s in state_changes(read_trace(hw.trace.path), "dock_detect")] == ["undocked", "docked", "undocked"]


def test_triggers_follow_their_own_active_levels(emulated):
    hw = emulated(triggers=("holster", "taser"))
    hw.emulator.set_trigger("holster", True)  # reed switch opens: line pulled high
    hw.emulator.set_trigger("taser", True)  # optocoupler conducts: line pulled low
    assert hw.triggers["holster"].is_active and hw.emulator.pin("holster").state
    assert hw.triggers["taser"].is_active and not hw.emulator.pin("taser").state
    events = read_trace(hw.trace.path)
    assert edges(events, "holster", "active") and edges(events, "taser", "active")


def test_triggers_are_opened_only_when_enabled(emulated):
    hw = emulated(triggers=("taser",))
    assert set(hw.triggers) == {"taser"}
    with pytest.raises(HardwareConfigError, match=r"trigger 'holster' is not enabled in this configuration \(enabled: 'taser'\)"):
        hw.emulator.set_trigger("holster", True)


def test_a_trigger_the_board_does_not_have_is_a_clear_error(emulated):
    with pytest.raises(HardwareConfigError, match=r"trigger\(s\) 'lightsaber' are not wired on board 'pi5'"):
        emulated(triggers=("lightsaber",))


def test_two_emulated_cameras_do_not_share_pins_or_global_state(emulated, tmp_path):
    global_factory = Device.pin_factory
    first = emulated()
    second = emulated(trace_path=tmp_path / "second.jsonl")
    first.emulator.press_button()
    assert first.button.is_pressed and not second.button.is_pressed
    assert first.pin_factory is not second.pin_factory
    assert Device.pin_factory is global_factory  # gpiozero's global factory is left alone


def test_close_leaves_the_leds_and_buzzer_off_and_can_be_repeated(emulated):
    hw = emulated()
    hw.record_led.blink(0.05, 0.05)
    hw.status_led.on()
    time.sleep(0.12)
    hw.close()
    hw.close()
    events = read_trace(hw.trace.path)
    for device in ("record_led", "status_led", "buzzer"):
        assert state_changes(events, device)[-1][1] == "off", device
    assert hw.trace.closed


def test_the_pi4_board_emulates_as_well(emulated):
    hw = emulated(board="pi4")
    assert hw.board.name == "pi4"
    hw.emulator.press_button()
    assert hw.button.is_pressed
