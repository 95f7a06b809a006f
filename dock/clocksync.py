"""Measuring a camera's clock against the dock's: NTP-style arithmetic, pure.

The dock (its own clock kept by NTP) sends a probe stamped with its time
`t0`; the camera answers with its own time `tc`; the answer arrives at dock
time `t1`.  If the link is symmetric, the camera read its clock at dock time
`(t0 + t1) / 2`, so::

    offset = (t0 + t1) / 2 - tc      (what to add to camera time to get UTC)
    error <= (t1 - t0) / 2           (half the round trip bounds the mistake)

Several probes are sent and the one with the shortest round trip is kept:
it is the one least delayed by a busy line or a busy camera.  NIST IR 8161
asks for the offset to be recorded with the footage, which is why the camera
writes it into every segment's preamble after the dock sets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class ClockSample:
    """One probe: dock time sent, camera time read, dock time received (all microseconds UTC)."""

    dock_sent_us: int
    camera_us: int
    dock_received_us: int

    @property
    def rtt_us(self) -> int:
        return self.dock_received_us - self.dock_sent_us

    @property
    def offset_us(self) -> int:
        """Dock time at the probe/reply midpoint minus camera time."""
        return (self.dock_sent_us + self.dock_received_us) // 2 - self.camera_us

    @property
    def error_bound_us(self) -> int:
        return (self.rtt_us + 1) // 2


def best_sample(samples: Iterable[ClockSample]) -> ClockSample:
    """The sample with the shortest (non-negative) round trip.  ValueError if there is none."""
    usable = [s for s in samples if s.rtt_us >= 0]
    if not usable:
        raise ValueError("no usable clock sample (every round trip was negative: the dock's clock jumped)")
    return min(usable, key=lambda s: s.rtt_us)


__all__ = ["ClockSample", "best_sample"]
