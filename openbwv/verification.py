"""`bwv verify`: check sealed segments and their chains with public keys only.

Every problem is reported, not just the first: one line per file that fails,
then the chain problems across the files that passed.  A file that fails is
left out of the chain check, so its successor shows as following a gap, which
is the truth about what can be trusted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .sealed.chain import ChainLink, check_chains
from .sealed.errors import KeyFileError, SegmentError
from .sealed.reader import KeyLookup, VerifiedSegment, verify_file
from .sealed.writer import OPEN_SUFFIX, SEALED_SUFFIX


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    kind: str

    def line(self) -> str:
        return f"{self.path}: {self.kind}: {self.message}"


@dataclass
class VerifyReport:
    segments: list[VerifiedSegment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unsealed: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def devices(self) -> dict[str, list[VerifiedSegment]]:
        out: dict[str, list[VerifiedSegment]] = {}
        for seg in self.segments:
            out.setdefault(seg.device_id, []).append(seg)
        for segs in out.values():
            segs.sort(key=lambda s: s.sequence)
        return out


def collect(paths: Iterable[Path]) -> tuple[list[Path], list[Path], list[Problem]]:
    """Expand files and directories (recursively) into sealed files and open files."""
    sealed: list[Path] = []
    unsealed: list[Path] = []
    problems: list[Problem] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    f = Path(root) / name
                    if name.endswith(SEALED_SUFFIX):
                        sealed.append(f)
                    elif name.endswith(OPEN_SUFFIX):
                        unsealed.append(f)
        elif p.is_file():
            (unsealed if p.name.endswith(OPEN_SUFFIX) else sealed).append(p)
        else:
            problems.append(Problem(str(p), "no such file or directory", "missing"))
    return sealed, unsealed, problems


def _kind(e: Exception) -> str:
    name = type(e).__name__
    return {
        "MalformedSegment": "malformed",
        "UnsupportedVersion": "unsupported",
        "HashMismatch": "altered",
        "SignatureInvalid": "bad signature",
        "UnknownDevice": "unknown device",
        "ChainGap": "gap",
        "ChainFork": "chain broken",
        "DuplicateSegment": "duplicate",
    }.get(name, name)


def verify_paths(
    paths: Iterable[Path], keys: KeyLookup, *, on_file: Callable[[Path, VerifiedSegment | None], None] | None = None
) -> VerifyReport:
    report = VerifyReport()
    files, report.unsealed, report.problems = collect(paths)
    seen: set[Path] = set()
    for path in files:
        real = path.resolve()
        if real in seen:
            continue  # the same file named twice on the command line is not a replay
        seen.add(real)
        try:
            seg = verify_file(path, keys)
        except SegmentError as e:
            report.problems.append(Problem(str(path), e.reason, _kind(e)))
            if on_file:
                on_file(path, None)
            continue
        except KeyFileError as e:
            report.problems.append(Problem(str(path), str(e), "registry"))
            continue
        except OSError as e:
            report.problems.append(Problem(str(path), f"cannot read: {e.strerror}", "unreadable"))
            continue
        report.segments.append(seg)
        if on_file:
            on_file(path, seg)
    links = [
        ChainLink(s.device_id, s.sequence, s.preamble.prev_hash, s.segment_hash, s.path) for s in report.segments
    ]
    failed_files = bool(report.problems)
    for problem in check_chains(links):
        reason = problem.reason
        if failed_files and _kind(problem) == "gap":
            reason += " (or among the files that failed verification above)"
        report.problems.append(Problem(problem.path or "?", reason, _kind(problem)))
    return report
