"""Storage space on the camera: how much is free for footage, and what that means.

The rule is pure (`classify`) so the thresholds can be tested at their edges;
`measure` is the one place that asks the filesystem.  Nothing here deletes:
a camera never overwrites footage that has not been uploaded; when space runs
out it stops recording cleanly and says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

OK, LOW, FULL = "ok", "low", "full"


@dataclass(frozen=True)
class SpaceReading:
    free_bytes: int
    used_bytes: int  # by footage on this camera (sealed and open segments)


def classify(free_bytes: int, *, low_warning_bytes: int, reserve_bytes: int) -> str:
    """`full` at or below the reserve, `low` at or below the warning level, else `ok`."""
    if free_bytes <= reserve_bytes:
        return FULL
    if free_bytes <= low_warning_bytes:
        return LOW
    return OK


def footage_bytes(directory: Path) -> int:
    total = 0
    with os.scandir(directory) as it:
        for entry in it:
            if entry.is_file() and entry.name.endswith((".bwv", ".open")):
                total += entry.stat().st_size
    return total


def measure(directory: Path, *, quota_bytes: int = 0) -> SpaceReading:
    """Free space for footage: the filesystem's, or what is left of a quota if one is set."""
    used = footage_bytes(directory)
    st = os.statvfs(directory)
    fs_free = st.f_bavail * st.f_frsize
    free = fs_free if quota_bytes <= 0 else min(fs_free, max(0, quota_bytes - used))
    return SpaceReading(free, used)
