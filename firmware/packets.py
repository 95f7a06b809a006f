"""An encoded packet (video or audio) as it moves from its encoder to the pre-event buffer and the segmenter."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One H.264 access unit (Annex B) or one AAC-LC frame, with the times it was captured.

    `t_mono` is the capture time on the device's monotonic clock (seconds) and
    `utc_us` the same instant on the device's UTC clock; `pts` counts in
    `time_base` units and is continuous for as long as the encoder runs.
    The segmenter's presentation times come from `t_mono`, for video and
    audio alike: one clock, so that the two play in sync.  `media` says
    which stream the packet belongs to; every audio packet is a `keyframe`
    (AAC frames decode on their own).
    """

    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool
    t_mono: float
    utc_us: int
    media: str = "video"  # "video" or "audio"

    @property
    def size(self) -> int:
        return len(self.data)
