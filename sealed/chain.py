"""The per-device chain: every segment names the hash of the device's previous one.

Pure logic over segment headers (no I/O), shared by `bwv verify`, the dock and
the server.  One chain per device runs across clips, so a missing, reordered,
replayed, altered or foreign segment shows up with public keys alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import ChainFork, ChainGap, ChainProblem, DuplicateSegment
from .layout import HASH_LEN


@dataclass(frozen=True)
class ChainLink:
    """The chain-relevant facts of one verified segment."""

    device_id: str
    sequence: int
    prev_hash: bytes
    segment_hash: bytes
    path: str | None = None

    def where(self) -> str:
        return self.path or f"{self.device_id}#{self.sequence}"


def check_link(prev: ChainLink | None, seg: ChainLink) -> ChainProblem | None:
    """Does `seg` follow directly on `prev` (the device's previous segment, if known)?"""
    if prev is None:
        if seg.sequence == 1 and seg.prev_hash != bytes(HASH_LEN):
            return ChainFork("first segment of the device does not start the chain", path=seg.path)
        return None
    if seg.sequence <= prev.sequence:
        if seg.sequence == prev.sequence and seg.segment_hash == prev.segment_hash:
            return DuplicateSegment(f"segment {seg.sequence} of {seg.device_id} is already held", path=seg.path)
        return ChainFork(
            f"sequence {seg.sequence} of {seg.device_id} comes after sequence {prev.sequence}: replayed or reordered",
            path=seg.path,
        )
    if seg.sequence > prev.sequence + 1:
        missing = _range_text(prev.sequence + 1, seg.sequence - 1)
        return ChainGap(
            f"{seg.device_id}: {missing} missing between {prev.where()} and this one",
            path=seg.path,
        )
    if seg.prev_hash != prev.segment_hash:
        return ChainFork(
            f"segment {seg.sequence} of {seg.device_id} does not link to segment {prev.sequence} "
            f"({prev.where()}): it names previous hash {seg.prev_hash.hex()[:16]}..., "
            f"that segment hashes to {prev.segment_hash.hex()[:16]}...",
            path=seg.path,
        )
    return None


def _range_text(a: int, b: int) -> str:
    return f"segment {a} is" if a == b else f"segments {a}..{b} ({b - a + 1}) are"


def check_chains(
    links: Iterable[ChainLink], *, explained: set[tuple[str, int]] | frozenset = frozenset()
) -> list[ChainProblem]:
    """Every chain problem among a set of segments, per device, in sequence order.

    A gap before the first segment present is not a problem (earlier segments
    may already have been uploaded and freed).  `explained` lists (device,
    sequence) pairs known to be gone for a recorded reason (a tombstone), which
    are then not reported as missing.
    """
    problems: list[ChainProblem] = []
    by_device: dict[str, list[ChainLink]] = defaultdict(list)
    for link in links:
        by_device[link.device_id].append(link)
    for device in sorted(by_device):
        segs = sorted(by_device[device], key=lambda s: (s.sequence, s.path or ""))
        kept: list[ChainLink] = []
        for seg in segs:
            if kept and kept[-1].sequence == seg.sequence:
                first = kept[-1]
                if first.segment_hash == seg.segment_hash:
                    problems.append(
                        DuplicateSegment(
                            f"same segment ({device} #{seg.sequence}) as {first.where()}: a replayed or stray copy",
                            path=seg.path,
                        )
                    )
                else:
                    problems.append(
                        ChainFork(
                            f"two different segments claim {device} #{seg.sequence}: this one and {first.where()}",
                            path=seg.path,
                        )
                    )
                continue
            kept.append(seg)
        prev: ChainLink | None = None
        for seg in kept:
            problem = check_link(prev, seg)
            if isinstance(problem, ChainGap) and prev is not None:
                gone = [s for s in range(prev.sequence + 1, seg.sequence) if (device, s) not in explained]
                if not gone:
                    problem = None
                elif len(gone) != seg.sequence - prev.sequence - 1:
                    problem = ChainGap(
                        f"{device}: {len(gone)} segment(s) missing between {prev.where()} and this one "
                        f"(first {gone[0]}), not explained by a deletion record",
                        path=seg.path,
                    )
            if problem is not None:
                problems.append(problem)
            prev = seg
    return problems


def summarize(links: Sequence[ChainLink]) -> dict[str, tuple[int, int, int]]:
    """Per device: (segments, lowest sequence, highest sequence)."""
    out: dict[str, tuple[int, int, int]] = {}
    for link in links:
        n, lo, hi = out.get(link.device_id, (0, link.sequence, link.sequence))
        out[link.device_id] = (n + 1, min(lo, link.sequence), max(hi, link.sequence))
    return out
