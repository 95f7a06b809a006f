"""Reading a hardware trace back and measuring what the camera showed and sounded.

Tests of the firmware assert on these numbers ("the record LED flashed at
2 Hz with 50 % duty", "a beep every two minutes") instead of on log lines.
Everything here is a pure function of the trace lines: no clocks, no files
except in :func:`read_trace`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Iterable, Mapping, Sequence

from .errors import TraceAnalysisError, TraceFormatError

_CORE_KEYS = {"t", "device", "state", "event", "initial"}


@dataclass(frozen=True)
class TraceEvent:
    """One line of a hardware trace."""

    t: float
    device: str
    state: str | None = None
    event: str | None = None
    initial: bool = False
    fields: Mapping[str, object] = field(default_factory=dict)


def parse_trace(lines: Iterable[str]) -> list[TraceEvent]:
    """Parse trace lines (blank lines are skipped; a torn last line is an error, not ignored)."""
    events: list[TraceEvent] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"not JSON ({exc.msg}): {line[:80]!r}", line_number=number) from None
        if not isinstance(obj, dict):
            raise TraceFormatError(f"expected a JSON object, found {type(obj).__name__}", line_number=number)
        t, device = obj.get("t"), obj.get("device")
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TraceFormatError(f"'t' is {t!r}; expected monotonic seconds", line_number=number)
        if not isinstance(device, str):
            raise TraceFormatError(f"'device' is {device!r}; expected a device name", line_number=number)
        if "state" not in obj and "event" not in obj:
            raise TraceFormatError("neither 'state' nor 'event' is present", line_number=number)
        events.append(TraceEvent(
            t=float(t),
            device=device,
            state=obj.get("state"),
            event=obj.get("event"),
            initial=bool(obj.get("initial", False)),
            fields={k: v for k, v in obj.items() if k not in _CORE_KEYS},
        ))
    return events


def read_trace(path: str | Path) -> list[TraceEvent]:
    """Parse a trace file."""
    with open(path, encoding="utf-8") as f:
        return parse_trace(f)


def state_changes(events: Iterable[TraceEvent], device: str) -> list[tuple[float, str]]:
    """``(t, state)`` each time ``device`` changed level, starting with its initial level.

    Repeated lines with the same level are collapsed, so the result is
    a strict alternation for two-level devices.  Lines are taken in time
    order: two threads (gpiozero's blink thread, the sound worker) may write
    lines a hair out of order in the file.
    """
    changes: list[tuple[float, str]] = []
    for ev in _in_time_order(events):
        if ev.device != device or ev.state is None:
            continue
        if not changes or changes[-1][1] != ev.state:
            changes.append((ev.t, ev.state))
    return changes


def edges(events: Iterable[TraceEvent], device: str, to_state: str) -> list[float]:
    """Times at which ``device`` entered ``to_state`` (its initial level is not an edge)."""
    events = list(events)
    initial = {ev.device for ev in events if ev.initial}
    changes = state_changes(events, device)
    if device in initial:
        changes = changes[1:]
    return [t for t, state in changes if state == to_state]


def on_edges(events: Iterable[TraceEvent], device: str) -> list[float]:
    """When an output switched on (an LED lit, the buzzer started sounding)."""
    return edges(events, device, "on")


def off_edges(events: Iterable[TraceEvent], device: str) -> list[float]:
    return edges(events, device, "off")


def intervals(times: Sequence[float]) -> list[float]:
    """Differences between consecutive times (e.g. between beep starts)."""
    return [b - a for a, b in zip(times, times[1:])]


@dataclass(frozen=True)
class FlashStats:
    """How an output flashed over the complete on-to-on cycles of a window."""

    cycles: int
    frequency_hz: float
    duty: float
    periods: list[float]
    on_durations: list[float]


def flash_stats(events: Iterable[TraceEvent], device: str, *, on: str = "on",
                start: float | None = None, end: float | None = None) -> FlashStats:
    """Frequency and duty of a flashing output between ``start`` and ``end`` (monotonic seconds).

    Only whole cycles count (an on-edge, the off-edge after it, the next
    on-edge), so stopping the flashing mid-cycle does not skew the duty.
    """
    changes = [(t, s) for t, s in state_changes(events, device)
               if (start is None or t >= start) and (end is None or t <= end)]
    periods: list[float] = []
    on_durations: list[float] = []
    for i, (t, state) in enumerate(changes):
        if state != on:
            continue
        # The next change is the off-edge, the one after is the next on-edge.
        if i + 2 < len(changes) and changes[i + 2][1] == on:
            periods.append(changes[i + 2][0] - t)
            on_durations.append(changes[i + 1][0] - t)
    if not periods:
        raise TraceAnalysisError(
            f"{device!r} made no complete on-off-on cycle in the window "
            f"({len(changes)} level change(s) found); expected it to be flashing"
        )
    return FlashStats(
        cycles=len(periods),
        frequency_hz=1.0 / fmean(periods),
        duty=sum(on_durations) / sum(periods),
        periods=periods,
        on_durations=on_durations,
    )


@dataclass(frozen=True)
class Beep:
    """One tone from the sound output: requested frequency and length, and when it really ran."""

    start: float
    stop: float | None
    frequency: float
    requested_duration: float

    @property
    def duration(self) -> float | None:
        return None if self.stop is None else self.stop - self.start


def beeps(events: Iterable[TraceEvent], device: str = "sound") -> list[Beep]:
    """The beeps in a trace, in order; a beep still sounding at the end has ``stop=None``."""
    found: list[Beep] = []
    current: TraceEvent | None = None
    for ev in _in_time_order(events):
        if ev.device != device:
            continue
        if ev.event == "beep_start":
            current = ev
        elif ev.event == "beep_stop" and current is not None:
            found.append(_beep(current, ev.t))
            current = None
    if current is not None:
        found.append(_beep(current, None))
    return found


def beep_intervals(found: Sequence[Beep]) -> list[float]:
    """Seconds from each beep's start to the next one's."""
    return intervals([b.start for b in found])


def _in_time_order(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    return sorted(events, key=lambda ev: ev.t)  # stable: equal times keep file order


def _beep(start: TraceEvent, stop: float | None) -> Beep:
    return Beep(
        start=start.t,
        stop=stop,
        frequency=float(start.fields.get("frequency", 0.0)),  # type: ignore[arg-type]
        requested_duration=float(start.fields.get("duration", 0.0)),  # type: ignore[arg-type]
    )
