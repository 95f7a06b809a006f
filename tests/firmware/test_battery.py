"""The battery alarm: at 10 % or 10 minutes left, repeated while low; critical once; re-armed by charging."""

from __future__ import annotations

import pytest

from openbwv.firmware.battery import CRITICAL, LOW, RECOVERED, BatteryWatch
from openbwv.hw.fuel_gauge import BatteryReading


def kinds(watch: BatteryWatch, level: float, minutes: float | None, t: float, charging: bool = False) -> list[str]:
    return [a.kind for a in watch.feed(BatteryReading(level, minutes, charging), t)]


def test_the_alarm_sounds_once_at_ten_percent():
    watch = BatteryWatch()
    assert kinds(watch, 10.5, 75, 0) == []
    assert kinds(watch, 10.0, 72, 1) == [LOW]
    assert kinds(watch, 9.5, 70, 2) == []


def test_the_alarm_sounds_at_ten_minutes_left_whatever_the_level():
    watch = BatteryWatch()
    alarm = watch.feed(BatteryReading(40, 9.5, False), 0)  # a heavy drain: 40 % but minutes to go
    assert [a.kind for a in alarm] == [LOW] and "9.5 minutes left" in alarm[0].why


def test_the_alarm_repeats_while_the_battery_stays_low():
    watch = BatteryWatch(repeat_s=120)
    assert kinds(watch, 9, 60, 0) == [LOW]
    assert kinds(watch, 8.9, 59, 119) == []
    assert kinds(watch, 8.8, 58, 120) == [LOW]


def test_critical_comes_once_and_recovery_re_arms_the_alarms():
    watch = BatteryWatch()
    assert kinds(watch, 9, 60, 0) == [LOW]
    assert kinds(watch, 3.0, 20, 1) == [CRITICAL]
    assert kinds(watch, 2.0, 15, 2) == []
    assert kinds(watch, 2.5, None, 3, charging=True) == [RECOVERED]
    assert kinds(watch, 9, 60, 4) == [LOW]  # unplugged again, still low


def test_critical_at_two_minutes_left():
    watch = BatteryWatch()
    assert kinds(watch, 30, 1.5, 0) == [CRITICAL]


def test_thresholds_that_contradict_each_other_are_refused():
    with pytest.raises(ValueError, match="critical < low"):
        BatteryWatch(low_pct=5, critical_pct=10)
