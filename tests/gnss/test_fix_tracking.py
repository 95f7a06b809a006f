"""Fix lost, fix regained: the receiver's state over time, and the synthetic track that exercises it."""

from __future__ import annotations

import math

import pytest

from openbwv.hw.gnss_emulator import SyntheticTrack, destination
from openbwv.hw.nmea import (
    EVENT_FIX_ACQUIRED,
    EVENT_FIX_LOST,
    EVENT_FIX_REGAINED,
    Fix,
    FixEvent,
    FixTracker,
    NmeaDecoder,
    NoFix,
    nmea_checksum,
)

T0 = 1_764_086_400_000_000
S = 1_000_000


def fix_at(seconds: float) -> Fix:
    return Fix(utc_us=T0 + int(seconds * S), device_utc_us=T0 + int(seconds * S), lat=51.5, lon=-0.12, quality=1)


def kinds(items) -> list[str]:
    return [i.kind if isinstance(i, FixEvent) else "fix" for i in items]


def test_the_first_fix_is_announced_as_acquired_then_fixes_follow_plainly():
    tracker = FixTracker()
    assert kinds(tracker.observe(fix_at(0))) == [EVENT_FIX_ACQUIRED, "fix"]
    assert kinds(tracker.observe(fix_at(1))) == ["fix"]
    assert tracker.has_fix and tracker.last_fix == fix_at(1)


def test_no_fix_before_the_first_fix_is_not_a_loss():
    tracker = FixTracker()
    assert tracker.observe(NoFix(T0)) == []
    assert tracker.state == FixTracker.SEARCHING


def test_losing_the_fix_and_regaining_it_are_recorded_with_the_outage():
    tracker = FixTracker()
    tracker.observe(fix_at(0))
    [lost] = tracker.observe(NoFix(T0 + 1 * S, T0 + 1 * S))
    assert (lost.kind, lost.reason, lost.utc_us) == (EVENT_FIX_LOST, "receiver reports no fix", T0 + 1 * S)
    assert tracker.observe(NoFix(T0 + 2 * S)) == []  # still lost: said once
    regained, fix = tracker.observe(fix_at(4))
    assert regained.kind == EVENT_FIX_REGAINED and regained.outage_s == 4.0  # from the last fix before the loss
    assert fix == fix_at(4)
    assert regained.to_record() == {"event": "fix_regained", "device_utc_us": T0 + 4 * S, "utc_us": T0 + 4 * S,
                                    "outage_s": 4.0}


def test_a_receiver_that_falls_silent_loses_its_fix_after_the_silence_limit():
    tracker = FixTracker(silence_s=3.0)
    tracker.observe(fix_at(0))
    assert tracker.check_silence(T0 + int(2.9 * S)) == []
    [lost] = tracker.check_silence(T0 + 3 * S)
    assert lost.kind == EVENT_FIX_LOST and lost.reason == "receiver silent for 3.0 s" and lost.utc_us is None
    assert tracker.check_silence(T0 + 10 * S) == []


def test_a_line_busy_with_bytes_that_make_no_fix_loses_the_fix_too():
    """A receiver that resets to another baud rate, or starts sending binary, keeps the line busy:
    the fix must still be lost once no epoch has come for the silence limit."""
    decoder = NmeaDecoder(silence_s=3.0)
    decoder.tracker.observe(fix_at(0))
    garbage = bytes(range(128, 256)) * 4
    for tenth in range(1, 30):
        assert decoder.feed(garbage, T0 + tenth * S // 10) == []
    [lost] = decoder.feed(garbage, T0 + 3 * S)
    assert lost.kind == EVENT_FIX_LOST and "no usable epoch for 3.0 s" in lost.reason
    assert decoder.counters.garbage_bytes > 0 and not decoder.tracker.has_fix


def test_a_port_failure_while_holding_a_fix_loses_it_and_says_why():
    tracker = FixTracker()
    tracker.observe(fix_at(0))
    [lost] = tracker.port_failed(T0 + S, "the port failed: device disconnected")
    assert lost.reason == "the port failed: device disconnected"
    assert tracker.port_failed(T0 + 2 * S, "cannot open the port") == []


# -- the synthetic track --------------------------------------------------------------
def test_synthetic_sentences_have_correct_checksums_and_parse_back_to_the_generated_positions():
    track = SyntheticTrack(51.5007, -0.1246, speed_mps=13.4, heading_deg=45.0, start_utc_us=T0)
    decoder = NmeaDecoder()
    got: list[Fix] = []
    for i in range(10):
        for sentence in track.sentences(i):
            body, checksum = sentence[1:].split("*")
            assert nmea_checksum(body) == checksum
        got += [x for x in decoder.feed(track.burst(i), T0 + i * S) + decoder.idle(T0 + i * S) if isinstance(x, Fix)]
    assert len(got) == 10 and decoder.counters.bad_checksum == decoder.counters.malformed == 0
    for i, fix in enumerate(got):
        point = track.point(i)
        assert fix.utc_us == T0 + i * S
        assert (fix.lat, fix.lon) == pytest.approx(point.reported, abs=1e-7)
        assert (fix.lat, fix.lon) == pytest.approx((point.lat, point.lon), abs=2e-7)  # NMEA's 5 decimals: ~2 cm
        assert fix.speed_mps == pytest.approx(13.4, abs=0.001) and fix.course_deg == 45.0
        assert fix.hdop == 0.9 and fix.satellites == 9 and fix.accuracy_m == pytest.approx(2.5, abs=0.01)


def test_a_walk_east_at_walking_pace_covers_its_distance():
    track = SyntheticTrack(51.5007, -0.1246, speed_mps=1.4, heading_deg=90.0, start_utc_us=T0)
    start, later = track.point(0), track.point(100)
    east_m = math.radians(later.lon - start.lon) * 6_371_008.8 * math.cos(math.radians(51.5007))
    assert east_m == pytest.approx(140.0, rel=1e-3)
    assert later.lat == pytest.approx(start.lat, abs=1e-6)


def test_one_kilometre_north_is_a_ninetieth_of_a_degree_or_so():
    lat, lon = destination(0.0, 0.0, 0.0, 1000.0)
    assert lat == pytest.approx(1000 / 111_195, rel=1e-4) and lon == 0.0


def test_an_outage_in_the_track_is_a_lost_fix_then_a_regained_one():
    track = SyntheticTrack(start_utc_us=T0, outages=[(3.0, 2.0)])
    decoder = NmeaDecoder()
    items = []
    for i in range(8):
        items += decoder.feed(track.burst(i), T0 + i * S) + decoder.idle(T0 + i * S)
    assert kinds(items) == [EVENT_FIX_ACQUIRED, "fix", "fix", "fix", EVENT_FIX_LOST, EVENT_FIX_REGAINED,
                            "fix", "fix", "fix"]
    lost = items[4]
    assert lost.utc_us == T0 + 3 * S and lost.reason == "receiver reports no fix"
    regained = items[5]
    assert regained.utc_us == T0 + 5 * S and regained.outage_s == 3.0  # last fix at 2 s, back at 5 s
    assert decoder.counters.no_fix_epochs == 2
