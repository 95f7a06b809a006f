"""The pre-event buffer: the seconds of video from before the button was pressed.

A body-worn camera in standby is already encoding. When the officer presses
the button (or a holster or taser trigger fires) the clip must begin some
seconds *before* that moment, because the reason for pressing has usually
already happened. `PreEventBuffer` holds those seconds of encoded packets in
memory; the recorder drains it into a new clip and carries on from the next
packet, so the clip has no gap.

Two guarantees, each aimed at a failure seen in the field (Picamera2's
`CircularOutput` had both):

* **The clip is playable.** What `drain` returns always begins with a
  keyframe. Packets are only ever dropped in whole GOPs (a keyframe and the
  packets up to the next keyframe) from the front, so the held packets are at
  every moment a decodable stream. Packets that arrive when no keyframe is
  held (at start-up, or after the byte bound forced a drop) are discarded:
  without their keyframe they cannot be decoded.
* **The clip is as long as promised.** Eviction keeps the *smallest
  keyframe-aligned tail that still covers* `seconds`: the oldest GOP is
  dropped only while the GOP after it also starts at or before
  ``newest.t_mono - seconds``. Dropping packet by packet and then skipping to
  the next keyframe (what the buggy buffers did) would start the clip up to a
  GOP *later* than promised.

Memory is bounded by `max_bytes` whatever the encoder does: whole GOPs are
dropped from the front while the total exceeds it, and if even the GOP being
filled exceeds it, that GOP is dropped too and nothing is held until the next
keyframe. The time rule never holds less than the current GOP, so with
``seconds=0`` a clip starts at the latest keyframe.

The class is a pure core: no clock, no thread, no file. Time is the packets'
own ``t_mono``; the caller serialises access (one encoder thread pushes, and
the recorder drains under the same lock or on the same thread).
"""

from __future__ import annotations

import math
from collections import deque

from .packets import EncodedPacket

MAX_PRE_EVENT_SECONDS = 120.0
"""The longest pre-event buffer leading cameras offer (Axon: 0-120 s)."""


class _Gop:
    """A keyframe and the packets after it up to (not including) the next keyframe."""

    __slots__ = ("packets", "nbytes")

    def __init__(self, keyframe: EncodedPacket):
        self.packets: list[EncodedPacket] = [keyframe]
        self.nbytes: int = keyframe.size

    @property
    def start(self) -> float:
        return self.packets[0].t_mono


class PreEventBuffer:
    """Keyframe-aligned, time- and byte-bounded store of the latest encoded packets.

    `seconds` is how far before the newest packet a drained clip must start
    (0-120); `max_bytes` is a hard bound on the bytes held, which wins over
    `seconds` when the two disagree (a camera that runs out of memory records
    nothing at all).

    Each `push` is O(1) amortised: a packet is appended once and evicted at
    most once, and the byte and packet counts are kept as running totals.
    """

    def __init__(self, seconds: float, max_bytes: int):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"pre-event seconds must be a number, got {type(seconds).__name__}")
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_PRE_EVENT_SECONDS):
            raise ValueError(f"pre-event seconds must be between 0 and {MAX_PRE_EVENT_SECONDS:g}, got {seconds!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._seconds = float(seconds)
        self._max_bytes = max_bytes
        self._gops: deque[_Gop] = deque()
        self._bytes = 0
        self._count = 0
        self._newest_t: float | None = None

    @property
    def seconds(self) -> float:
        """How far before the newest packet a drained clip is meant to start."""
        return self._seconds

    @property
    def max_bytes(self) -> int:
        """The bound `bytes_held` never exceeds."""
        return self._max_bytes

    @property
    def bytes_held(self) -> int:
        """Total size of the packets held (always <= `max_bytes`)."""
        return self._bytes

    @property
    def seconds_held(self) -> float:
        """Newest held packet's ``t_mono`` minus the oldest's; 0.0 when empty."""
        if not self._gops:
            return 0.0
        return self._gops[-1].packets[-1].t_mono - self._gops[0].start

    def __len__(self) -> int:
        return self._count

    def push(self, pkt: EncodedPacket) -> None:
        """Add the encoder's next packet, then drop what is no longer needed.

        Packets must come in capture order: a ``t_mono`` earlier than the
        previous packet's raises `ValueError`, because a pre-event window
        measured on a clock that went backwards would silently be the wrong
        length.
        """
        if self._newest_t is not None and pkt.t_mono < self._newest_t:
            raise ValueError(
                f"packets must arrive in capture order: t_mono {pkt.t_mono!r} "
                f"is earlier than the previous packet's {self._newest_t!r}"
            )
        self._newest_t = pkt.t_mono
        if pkt.keyframe:
            self._gops.append(_Gop(pkt))
        elif self._gops:
            gop = self._gops[-1]
            gop.packets.append(pkt)
            gop.nbytes += pkt.size
        else:
            return  # no keyframe held: this packet could never be decoded
        self._bytes += pkt.size
        self._count += 1
        self._evict(pkt.t_mono)

    def drain(self) -> list[EncodedPacket]:
        """Everything held, oldest first, starting at a keyframe; the buffer is left empty.

        The list ends with the newest packet pushed, so a recorder that writes
        it and then every later packet produces a clip without a gap. After a
        drain, packets are discarded again until the next keyframe (they
        belong to a GOP whose keyframe has just been handed over).
        """
        out = [pkt for gop in self._gops for pkt in gop.packets]
        self._gops.clear()
        self._bytes = 0
        self._count = 0
        return out

    def _evict(self, newest_t: float) -> None:
        gops = self._gops
        cutoff = newest_t - self._seconds
        # Time: drop the oldest GOP only while what remains still covers `seconds`.
        while len(gops) >= 2 and gops[1].start <= cutoff:
            self._drop_oldest()
        # Memory: the byte bound always holds, even at the cost of the whole buffer.
        while self._bytes > self._max_bytes:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        gop = self._gops.popleft()
        self._bytes -= gop.nbytes
        self._count -= len(gop.packets)


class AudioPreEventBuffer:
    """The pre-event seconds of *sound*, held only where the policy allows it (Axon's default: not held).

    AAC frames decode on their own, so there is no keyframe rule: the oldest
    packets go once they are more than `seconds` older than the newest, or
    while the bytes exceed `max_bytes`.  `drain(since)` hands over the packets
    captured at or after `since` (the first held video frame), so the clip's
    sound starts with its picture and not before.

    Pure, like `PreEventBuffer`: time is the packets' own ``t_mono``.
    """

    def __init__(self, seconds: float, max_bytes: int):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
                math.isfinite(seconds) and 0 <= seconds <= MAX_PRE_EVENT_SECONDS + 10):
            raise ValueError(f"pre-event audio seconds must be between 0 and {MAX_PRE_EVENT_SECONDS + 10:g}, "
                             f"got {seconds!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        self._seconds = float(seconds)
        self._max_bytes = max_bytes
        self._packets: deque[EncodedPacket] = deque()
        self._bytes = 0

    @property
    def bytes_held(self) -> int:
        return self._bytes

    @property
    def seconds_held(self) -> float:
        return self._packets[-1].t_mono - self._packets[0].t_mono if self._packets else 0.0

    def __len__(self) -> int:
        return len(self._packets)

    def push(self, pkt: EncodedPacket) -> None:
        if self._packets and pkt.t_mono < self._packets[-1].t_mono:
            raise ValueError(f"packets must arrive in capture order: t_mono {pkt.t_mono!r} "
                             f"is earlier than the previous packet's {self._packets[-1].t_mono!r}")
        self._packets.append(pkt)
        self._bytes += pkt.size
        cutoff = pkt.t_mono - self._seconds
        while self._packets and (self._packets[0].t_mono < cutoff or self._bytes > self._max_bytes):
            self._bytes -= self._packets.popleft().size

    def drain(self, since: float) -> list[EncodedPacket]:
        """The packets captured at or after `since`, oldest first; the buffer is left empty."""
        out = [p for p in self._packets if p.t_mono >= since]
        self._packets.clear()
        self._bytes = 0
        return out
