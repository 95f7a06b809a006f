"""When the battery needs the officer's attention: the low alarm, and the critical stop.

Leading cameras alarm at 10 % or under 10 minutes left; this does the same,
repeats the alarm every `repeat_s` while it stays low (a single beep at the
start of a long incident is easily missed), and at the critical level asks
for a clean stop, so that the open segment is sealed while there is still
power to seal it, rather than recovered after the power is gone.

Pure: `BatteryWatch.feed` takes a reading and the monotonic time and
returns what to do; the camera carries it out (alarm pattern, sealed event,
stop).  Charging, or a level back above `rearm_pct`, re-arms the alarms.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hw.fuel_gauge import BatteryReading

LOW, CRITICAL, RECOVERED = "battery_low", "battery_critical", "battery_recovered"


@dataclass(frozen=True)
class BatteryAlarm:
    kind: str  # LOW, CRITICAL or RECOVERED
    level_pct: float
    minutes_left: float | None
    why: str

    def to_event(self, utc_us: int) -> dict:
        """The record sealed in the clip's EVENTS."""
        return {"type": self.kind, "level_pct": round(self.level_pct, 1),
                "minutes_left": None if self.minutes_left is None else round(self.minutes_left, 1),
                "why": self.why, "utc_us": utc_us}


class BatteryWatch:
    """Turns fuel-gauge readings into alarms: low (repeated), critical (once), recovered."""

    def __init__(self, *, low_pct: float = 10.0, low_minutes: float = 10.0, critical_pct: float = 3.0,
                 critical_minutes: float = 2.0, repeat_s: float = 120.0, rearm_pct: float = 15.0):
        if not (0 <= critical_pct < low_pct < rearm_pct <= 100 and 0 <= critical_minutes < low_minutes
                and repeat_s > 0):
            raise ValueError(f"battery thresholds critical {critical_pct} % / {critical_minutes} min, low {low_pct} % "
                             f"/ {low_minutes} min, re-arm {rearm_pct} %, repeat {repeat_s} s: expected critical < "
                             "low < re-arm and a positive repeat")
        self.low_pct, self.low_minutes = low_pct, low_minutes
        self.critical_pct, self.critical_minutes = critical_pct, critical_minutes
        self.repeat_s, self.rearm_pct = repeat_s, rearm_pct
        self.state = "ok"  # "ok", "low", "critical"
        self._last_alarm = -float("inf")
        self.last: BatteryReading | None = None

    def feed(self, reading: BatteryReading, t: float) -> list[BatteryAlarm]:
        self.last = reading
        level, minutes = reading.level_pct, reading.minutes_left
        if reading.charging:
            was, self.state = self.state, "ok"
            return [BatteryAlarm(RECOVERED, level, minutes, "charging")] if was != "ok" else []
        critical = self._why(level, minutes, self.critical_pct, self.critical_minutes)
        low = self._why(level, minutes, self.low_pct, self.low_minutes)
        if critical and self.state != "critical":
            self.state = "critical"
            self._last_alarm = t
            return [BatteryAlarm(CRITICAL, level, minutes, critical)]
        if low and self.state == "ok":
            self.state = "low"
            self._last_alarm = t
            return [BatteryAlarm(LOW, level, minutes, low)]
        if not low and self.state != "ok" and level >= self.rearm_pct:
            self.state = "ok"
            return [BatteryAlarm(RECOVERED, level, minutes, "level back up")]
        if self.state != "ok" and t - self._last_alarm >= self.repeat_s:
            self._last_alarm = t
            return [BatteryAlarm(LOW, level, minutes, "still low")]
        return []

    @staticmethod
    def _why(level: float, minutes: float | None, pct: float, mins: float) -> str | None:
        if level <= pct:
            return f"{level:.1f} % left (alarm at {pct:g} %)"
        if minutes is not None and minutes <= mins:
            return f"{minutes:.1f} minutes left (alarm at {mins:g} minutes)"
        return None
