"""Reading traces back: flash frequency and duty, edges, beeps, and torn lines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbwv.hw.errors import TraceAnalysisError, TraceFormatError
from openbwv.hw.trace_analysis import beep_intervals, beeps, flash_stats, on_edges, parse_trace


def line(t: float, device: str, **fields: object) -> str:
    return json.dumps({"t": t, "device": device, **fields})


def square_wave(frequency: float, duty: float, cycles: int, start: float = 100.0) -> list[str]:
    period = 1 / frequency
    lines = [line(start - 1, "record_led", state="off", initial=True)]
    for i in range(cycles):
        lines.append(line(start + i * period, "record_led", state="on"))
        lines.append(line(start + i * period + duty * period, "record_led", state="off"))
    return lines


@given(frequency=st.floats(0.2, 20), duty=st.floats(0.05, 0.95), cycles=st.integers(2, 30))
def test_flash_stats_recover_the_frequency_and_duty_of_a_square_wave(frequency, duty, cycles):
    stats = flash_stats(parse_trace(square_wave(frequency, duty, cycles)), "record_led")
    assert stats.cycles == cycles - 1  # the last on-off has no following on-edge
    assert stats.frequency_hz == pytest.approx(frequency, rel=1e-6)
    assert stats.duty == pytest.approx(duty, rel=1e-6)


def test_the_initial_level_is_not_an_edge():
    events = parse_trace([line(1.0, "status_led", state="on", initial=True), line(2.0, "status_led", state="off")])
    assert on_edges(events, "status_led") == []


def test_a_steady_led_has_no_flash_stats():
    events = parse_trace([line(1.0, "record_led", state="off", initial=True), line(2.0, "record_led", state="on")])
    with pytest.raises(TraceAnalysisError, match=r"'record_led' made no complete on-off-on cycle"):
        flash_stats(events, "record_led")


def test_flash_stats_can_be_limited_to_a_window():
    lines = square_wave(2.0, 0.5, 10, start=0.0) + square_wave(4.0, 0.25, 10, start=10.0)[1:]
    stats = flash_stats(parse_trace(lines), "record_led", start=10.0)
    assert stats.frequency_hz == pytest.approx(4.0) and stats.duty == pytest.approx(0.25)


def test_beeps_pair_each_start_with_its_stop():
    events = parse_trace([
        line(1.0, "sound", event="beep_start", frequency=2700.0, duration=0.1),
        line(1.1, "sound", event="beep_stop"),
        line(121.0, "sound", event="beep_start", frequency=2700.0, duration=0.1),
    ])
    found = beeps(events)
    assert [b.duration for b in found] == [pytest.approx(0.1), None]
    assert beep_intervals(found) == [pytest.approx(120.0)]


def test_a_torn_trace_line_is_reported_with_its_line_number():
    with pytest.raises(TraceFormatError, match=r"trace line 2: not JSON"):
        parse_trace([line(1.0, "button", state="up"), '{"t": 2.0, "dev'])


def test_a_line_without_state_or_event_is_rejected():
    with pytest.raises(TraceFormatError, match=r"trace line 1: neither 'state' nor 'event' is present"):
        parse_trace([json.dumps({"t": 1.0, "device": "button"})])
