"""Upload progress: bytes, rate and time left, on the terminal and as structured log lines.

`ProgressMeter` is the arithmetic (pure: byte counts and times in); an
`UploadProgress` is the callback an `Uploader` is handed for one segment: it
feeds the meter and, at a bounded rate, shows a line per bay on the terminal
(`TerminalDisplay`), logs `event=upload_progress ...` and tells the bay's
status file.  Several bays upload at once, so every line names its bay.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, TextIO

from .events import log_event

WINDOW_S = 5.0  # the rate is measured over the last few seconds, so a stall shows at once


@dataclass(frozen=True)
class ProgressSnapshot:
    bay: str
    device_id: str
    segment: str
    done: int
    total: int
    elapsed_s: float
    rate_bps: float  # bytes per second
    eta_s: float | None  # None: no rate yet
    server: str | None = None  # host:port the bytes go to, when the dock has several servers

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)

    def line(self) -> str:
        eta = "--:--" if self.eta_s is None else _clock(self.eta_s)
        return (f"{self.bay:<8} {self.device_id:<14} {self.segment:<28} {_mb(self.done)}/{_mb(self.total)} "
                f"{self.fraction * 100:5.1f}%  {_mb(self.rate_bps)}/s  ETA {eta}"
                + (f"  to {self.server}" if self.server else ""))

    def fields(self) -> dict[str, object]:
        return {"bay": self.bay, "device": self.device_id, "segment": self.segment, "bytes": self.done,
                "total": self.total, "pct": round(self.fraction * 100, 1), "rate_Bps": round(self.rate_bps),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)} | (
                    {"server": self.server} if self.server else {})


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ProgressMeter:
    """Rate over a sliding window and the ETA it implies."""

    def __init__(self, total: int, start: float, *, window_s: float = WINDOW_S):
        self.total = total
        self.start = start
        self.window_s = window_s
        self.done = 0
        self._points: deque[tuple[float, int]] = deque([(start, 0)])

    def update(self, done: int, now: float) -> tuple[float, float | None]:
        """Record `done` bytes at time `now`; returns (rate in bytes/s, seconds left or None)."""
        if done < self.done:  # begun again (another server that did not know the upload): a fresh window
            self._points = deque([(now, done)])
        self.done = done
        self._points.append((now, self.done))
        while len(self._points) > 2 and now - self._points[1][0] >= self.window_s:
            self._points.popleft()
        t0, b0 = self._points[0]
        rate = (self.done - b0) / (now - t0) if now > t0 else 0.0
        left = max(0, self.total - self.done)
        eta = 0.0 if left == 0 else (left / rate if rate > 0 else None)
        return rate, eta


class TerminalDisplay:
    """One live line per uploading bay on a terminal; throttled plain lines when output is a file or pipe."""

    def __init__(self, stream: TextIO | None = None, *, plain_interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream if stream is not None else sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_interval_s = plain_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._lines: dict[str, str] = {}
        self._drawn = 0
        self._last_plain: dict[str, float] = {}

    def update(self, bay: str, line: str) -> None:
        with self._lock:
            if self.live:
                self._lines[bay] = line
                self._redraw()
            else:
                now = self._clock()
                if now - self._last_plain.get(bay, -1e9) >= self.plain_interval_s:
                    self._last_plain[bay] = now
                    self._write(line + "\n")

    def message(self, bay: str | None, text: str) -> None:
        """A line that stays (a finished upload, a camera cleared), printed above the live lines."""
        with self._lock:
            if bay is not None:
                self._lines.pop(bay, None)
                self._last_plain.pop(bay, None)
            if self.live:
                self._clear()
                self._write(text + "\n")
                self._redraw()
            else:
                self._write(text + "\n")

    def _clear(self) -> None:
        if self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        self._clear()
        for bay in sorted(self._lines):
            self._write("\x1b[2K" + self._lines[bay] + "\n")
        self._drawn = len(self._lines)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop an upload


class DisplayLogHandler(logging.Handler):
    """On a live terminal, log lines go above the live progress lines instead of through them.

    `event=upload_progress` lines are left out there: the live line shows the
    same figures.  (Off a terminal, e.g. under systemd, every line goes to the
    journal as usual.)
    """

    def __init__(self, display: TerminalDisplay, *, skip_events: tuple[str, ...] = ("upload_progress",)):
        super().__init__()
        self.display = display
        self.skip = tuple(f"event={e} " for e in skip_events)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.getMessage().startswith(self.skip):
                return
            self.display.message(None, self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break an upload
            self.handleError(record)


class UploadProgress:
    """The progress callback for one upload: `progress(bytes_done)`, then `finish()`."""

    def __init__(self, bay: str, device_id: str, segment: str, total: int, *,
                 display: TerminalDisplay | None = None,
                 on_snapshot: Callable[[ProgressSnapshot], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 server: Callable[[], str | None] | None = None,
                 show_interval_s: float = 0.25, log_interval_s: float = 2.0):
        self.bay, self.device_id, self.segment = bay, device_id, segment
        self.display = display
        self.on_snapshot = on_snapshot
        self._server = server
        self._clock = clock
        self.meter = ProgressMeter(total, clock())
        self.show_interval_s = show_interval_s
        self.log_interval_s = log_interval_s
        self._shown = self._logged = -1e9
        self.last: ProgressSnapshot | None = None

    def __call__(self, done: int) -> None:
        now = self._clock()
        snap = self._snapshot(done, now)
        if now - self._shown >= self.show_interval_s:
            self._shown = now
            if self.display is not None:
                self.display.update(self.bay, snap.line())
            if self.on_snapshot is not None:
                self.on_snapshot(snap)
        if now - self._logged >= self.log_interval_s:
            self._logged = now
            log_event("upload_progress", **snap.fields())

    def finish(self) -> ProgressSnapshot:
        now = self._clock()
        snap = self._snapshot(self.meter.done, now)
        rate = snap.done / snap.elapsed_s if snap.elapsed_s > 0 else 0.0
        log_event("upload_done", **(snap.fields() | {"rate_Bps": round(rate), "seconds": round(snap.elapsed_s, 3)}))
        if self.display is not None:
            self.display.message(self.bay, f"{self.bay:<8} {self.device_id:<14} {self.segment:<28} "
                                           f"{_mb(snap.done)} uploaded in {snap.elapsed_s:.1f} s ({_mb(rate)}/s)"
                                           + (f" to {snap.server}" if snap.server else ""))
        if self.on_snapshot is not None:
            self.on_snapshot(snap)
        return snap

    def _snapshot(self, done: int, now: float) -> ProgressSnapshot:
        rate, eta = self.meter.update(done, now)
        self.last = ProgressSnapshot(self.bay, self.device_id, self.segment, self.meter.done, self.meter.total,
                                     now - self.meter.start, rate, eta,
                                     self._server() if self._server is not None else None)
        return self.last


__all__ = ["DisplayLogHandler", "ProgressMeter", "ProgressSnapshot", "TerminalDisplay", "UploadProgress"]
