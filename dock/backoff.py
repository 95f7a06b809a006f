"""How long to wait before trying the server (or a silent camera) again: exponential, capped, jittered.

Pure: the attempt number and a random draw in, seconds out.  Jitter keeps a
rack of bays that all lost the server at once from all knocking again in the
same second when it comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 2.0
    factor: float = 2.0
    maximum_s: float = 300.0
    jitter: float = 0.2  # +/- this fraction of the delay

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.maximum_s < self.initial_s or not 0 <= self.jitter < 1:
            raise ValueError(f"backoff needs 0 <= initial <= maximum, factor >= 1, 0 <= jitter < 1; got {self}")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number `attempt` (0 for the first failure)."""
        base = min(self.maximum_s, self.initial_s * self.factor ** min(attempt, 64))
        return max(0.0, base * (1 + self.jitter * (2 * rand() - 1)))


__all__ = ["Backoff"]
