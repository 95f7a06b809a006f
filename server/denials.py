"""How many refusals of callers with no valid token are written to the audit trail, one by one.

Every refused request is audited (issue: "failed access"), but a caller with
no token at all costs the server nothing to send and the audit log a record
each: left alone, anyone who can reach the port could grow the log, and the
disk the evidence shares, without limit.  So anonymous refusals are written
one by one up to a rate, and beyond it counted and written as one summary
record when the window ends, with how many were suppressed.  Refusals of a
known dock or staff member (403) are always written one by one: they name
someone, and they are bounded by what that someone can do.

Pure: the clock is passed in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

WINDOW_S = 60.0
PER_WINDOW = 120  # anonymous refusals written one by one per window (two a second on average)


@dataclass(frozen=True)
class Admission:
    write: bool  # write this refusal's own record
    suppressed_before: int  # refusals not written in the window that just ended: write a summary of them


class DenialThrottle:
    """Admits anonymous refusals to the audit trail at most `per_window` per `window_s`."""

    def __init__(self, *, window_s: float = WINDOW_S, per_window: int = PER_WINDOW):
        if window_s <= 0 or per_window < 1:
            raise ValueError(f"window {window_s} s and {per_window} per window: both must be positive")
        self.window_s, self.per_window = window_s, per_window
        self._lock = threading.Lock()
        self._start: float | None = None
        self._written = 0
        self._suppressed = 0

    def admit(self, now: float) -> Admission:
        with self._lock:
            ended = self._roll(now)
            if self._written < self.per_window:
                self._written += 1
                return Admission(True, ended)
            self._suppressed += 1
            return Admission(False, ended)

    def flush(self, now: float, *, final: bool = False) -> int:
        """Refusals suppressed in a window that has ended by `now` (the periodic checkpoint asks, so a
        flood that stops is still summarised); 0 if none, or if the window is still open.  `final`
        (the server is stopping): the open window's too, so no refusal goes uncounted."""
        with self._lock:
            if final:
                ended, self._suppressed = self._suppressed, 0
                return ended
            return self._roll(now)

    def _roll(self, now: float) -> int:
        if self._start is None:
            self._start = now
            return 0
        if now - self._start < self.window_s:
            return 0
        ended, self._suppressed, self._written, self._start = self._suppressed, 0, 0, now
        return ended


__all__ = ["Admission", "DenialThrottle", "PER_WINDOW", "WINDOW_S"]
