"""`bwv verify`: check sealed segments and their chains with public keys only.

Every problem is reported, not just the first: one line per file that fails,
then the chain problems across the files that passed.  A file that fails is
left out of the chain check, so its successor shows as following a gap, which
is the truth about what can be trusted.

A gap the evidence server's retention sweep left is not missing evidence.
When the server's database is at hand (`DeletionRecords`, opened read-only),
its tombstones are read for the gaps between the files verified: a gap that
tombstones fill, with every hash linking (each tombstone names the hash of
the segment before it, and the segment after the gap names the hash of the
last tombstone), is reported as deleted by policy and is not a problem.  The
files themselves are still checked with public keys only; the database only
explains what is absent.  A tombstone that does not link is a problem, stated
with the hash expected and the hash found; a gap without tombstones is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .sealed.chain import ChainLink, check_chains
from .sealed.errors import KeyFileError, SegmentError
from .sealed.reader import KeyLookup, VerifiedSegment, verify_file
from .sealed.writer import OPEN_SUFFIX, SEALED_SUFFIX

if TYPE_CHECKING:
    from .home import Home
    from .server.blobstore import BlobStore
    from .server.store import DatabaseUrl
    from .server.store.held_records import HeldRecords


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    kind: str

    def line(self) -> str:
        return f"{self.path}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class PolicyDeletion:
    """A run of a device's segments that the retention sweep deleted, with tombstones that link.

    One run per sweep: consecutive segments deleted by two sweeps are two runs."""

    device_id: str
    first: int
    last: int
    deleted_utc: str
    sweep_id: str

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def line(self) -> str:
        which = f"segment {self.first}" if self.first == self.last else f"segments {self.first}..{self.last}"
        return (f"{self.device_id}: note: {which} deleted by policy on {self.deleted_utc[:10]} "
                f"(sweep {self.sweep_id})")


@dataclass
class VerifyReport:
    segments: list[VerifiedSegment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unsealed: list[Path] = field(default_factory=list)
    deleted: list[PolicyDeletion] = field(default_factory=list)  # gaps explained by tombstones

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


@dataclass(frozen=True)
class Tombstone:
    """What the server kept of a segment its retention sweep deleted (server/lifecycle.py)."""

    device_id: str
    sequence: int
    segment_hash: str  # hex, as the server recorded it
    prev_hash: str
    deleted_utc: str
    sweep_id: str
    where: str  # the database and the record, for problem lines
    clip_id: str = ""


class DeletionRecords:
    """The tombstones in an evidence server's database, read-only, on either engine.

    Read through server/store/held_records.py, which opens SQLite with ``mode=ro`` and PostgreSQL
    read-only, so `bwv verify` can run beside live server nodes and can never change a record; a
    database from before tombstones existed simply has none.  It is opened at the first gap, so
    verifying an unbroken chain never touches it, and a database that cannot be read fails there
    (RecordsUnreadable), where `verify_paths` reports it and leaves the gaps missing.
    """

    def __init__(self, where: "Path | DatabaseUrl"):
        from .server.store import DatabaseUrl, sqlite_url
        from .server.store.held_records import HeldRecords

        url = where if isinstance(where, DatabaseUrl) else sqlite_url(Path(where))
        self.records = HeldRecords(url)
        # For problem lines: the file, or the PostgreSQL URL without its options.
        self.path = str(url.path) if url.path is not None else url.shown

    @classmethod
    def of_home(cls, home: "Home") -> "DeletionRecords | None":
        """The server database BWV_HOME's server uses (config.toml's `db`, else server/evidence.db), or
        None if this home runs no server."""
        from .server.service import database_url  # the server owns where its database lives

        url = database_url(home)
        if url.path is not None and not url.path.is_file():
            return None
        return cls(url)

    def between(self, device_id: str, after: int, before: int) -> list[Tombstone]:
        """The device's tombstones with `after` < sequence < `before`, in sequence order."""
        return [Tombstone(device_id, r.sequence, r.segment_hash, r.prev_hash, r.deleted_utc, r.sweep_id,
                          f"{self.path} [tombstone {device_id} #{r.sequence}]", r.clip_id)
                for r in self.records.tombstones_between(device_id, after, before)]

    def audited(self, stone: Tombstone) -> str | None:
        """Why the audit trail does not account for this tombstone, or None if it does.

        A sweep writes each clip's tombstones and its `delete` audit record in one transaction, the
        record naming the sweep and the segments (server/sweep.py, audit_time.segments_detail).  A
        tombstone no such record names was not written by a sweep.  The record's own hash is
        recomputed here; its place in the chain and under a signed checkpoint is what
        `bwv audit verify` proves.  A database from before the audit trail has no records to hold
        the tombstone to, and none is asked of it."""
        from .server.audit import record_hash  # the server owns the audit format

        rows = self.records.deletion_audit_records(stone.clip_id)
        if not rows and not self.records.has_audit_trail():
            return None
        for row in rows:
            try:
                detail = json.loads(row[6])
            except (TypeError, ValueError):
                continue
            if not isinstance(detail, dict) or detail.get("sweep") != stone.sweep_id:
                continue
            named = detail.get("segments")
            if isinstance(named, list):
                found = stone.segment_hash in named
            else:
                swept = self.records.swept_hashes(stone.clip_id, stone.sweep_id)
                found = (stone.segment_hash in swept
                         and hashlib.sha256("\n".join(swept).encode()).hexdigest() == detail.get("segments_sha256"))
            if not found:
                continue
            if record_hash(*row[:8]) != row[8]:
                return (f"the audit record #{row[0]} of its deletion does not hash to what it says it does: "
                        "it was altered")
            return None
        return (f"no `delete` record of the audit trail (clip {stone.clip_id}, sweep {stone.sweep_id}) names it: "
                "a deletion by policy is always audited, so this tombstone was not written by a sweep")

    def close(self) -> None:
        self.records.close()

    def __enter__(self) -> "DeletionRecords":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_paths(
    paths: Iterable[Path], keys: KeyLookup, *, on_file: Callable[[Path, VerifiedSegment | None], None] | None = None,
    deletions: DeletionRecords | None = None,
) -> VerifyReport:
    """Verify every sealed file under `paths`, then each device's chain across them.

    With `deletions`, gaps between the files are looked up in the server's
    tombstones (see the module docstring); without, every gap is missing."""
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
    _judge_chains(report, deletions)
    return report


def verify_held(records: "HeldRecords", blobs: "BlobStore", keys: KeyLookup, *,
                on_file: Callable[[str, VerifiedSegment | None], None] | None = None,
                deletions: DeletionRecords | None = None) -> VerifyReport:
    """Verify every segment an evidence server's database says it holds, read from its blob store
    (local disk or S3), then each device's chain across them, as `verify_paths` does for files.

    The database only lists what to read: each blob is checked with public keys alone, and its hash
    must be the one the database recorded for it (a store holding another segment under the key is
    altered, whatever that other segment's own signature says).  A segment held in S3 is copied into
    a temporary directory, verified and removed at once; problem lines name the blob where it lives."""
    import tempfile

    from .server.blobstore import blob_label, readable_path

    report = VerifyReport()
    with tempfile.TemporaryDirectory(prefix="bwv-verify-") as workdir:
        for row in records.held_segments():
            label = blob_label(blobs, row.blob_key)
            absent = Problem(label, f"{row.device_id} segment {row.sequence} is held in the database but absent "
                                    "from the store", "missing")
            try:
                path = readable_path(blobs, row.blob_key, Path(workdir))
            except FileNotFoundError:
                report.problems.append(absent)
                continue
            try:
                seg = verify_file(path, keys)
            except FileNotFoundError:  # a local store's file, gone
                report.problems.append(absent)
                continue
            except SegmentError as e:
                report.problems.append(Problem(label, e.reason, _kind(e)))
                if on_file:
                    on_file(label, None)
                continue
            except KeyFileError as e:
                report.problems.append(Problem(label, str(e), "registry"))
                continue
            except OSError as e:
                report.problems.append(Problem(label, f"cannot read: {e.strerror}", "unreadable"))
                continue
            finally:
                if path.parent == Path(workdir):
                    path.unlink(missing_ok=True)
            if seg.segment_hash.hex() != row.segment_hash:
                report.problems.append(Problem(label, (
                    f"the database holds {row.device_id} segment {row.sequence} as {row.segment_hash}; the "
                    f"store's blob hashes to {seg.segment_hash.hex()}"), "altered"))
                continue
            seg = dataclasses.replace(seg, path=label)
            report.segments.append(seg)
            if on_file:
                on_file(label, seg)
    _judge_chains(report, deletions)
    return report


def _judge_chains(report: VerifyReport, deletions: DeletionRecords | None) -> None:
    """Each device's chain across the segments verified, the gaps looked up in the tombstones."""
    links = [
        ChainLink(s.device_id, s.sequence, s.preamble.prev_hash, s.segment_hash, s.path) for s in report.segments
    ]
    failed_files = bool(report.problems)  # before the tombstones' problems: those are not files
    explained: set[tuple[str, int]] = set()
    if deletions is not None:
        from .server.store.held_records import RecordsUnreadable

        try:
            explained = _explain_gaps(links, deletions, report)
        except RecordsUnreadable as e:
            report.problems.append(Problem(str(deletions.path), f"cannot read the deletion records: {e}; "
                                           "gaps are reported as missing", "deletion records"))
    for problem in check_chains(links, explained=explained):
        reason = problem.reason
        if failed_files and _kind(problem) == "gap":
            reason += " (or among the files that failed verification above)"
        report.problems.append(Problem(problem.path or "?", reason, _kind(problem)))


def _explain_gaps(links: list[ChainLink], deletions: DeletionRecords, report: VerifyReport) -> set[tuple[str, int]]:
    """Check the tombstones in the gaps between held segments; note the runs that link, report those
    that do not.  Returns the (device, sequence) pairs a tombstone accounts for, which the chain
    check then does not call missing (a broken tombstone is reported here instead)."""
    held: dict[str, dict[int, ChainLink]] = {}
    for link in sorted(links, key=lambda s: (s.sequence, s.path or "")):
        held.setdefault(link.device_id, {}).setdefault(link.sequence, link)  # the first, as check_chains keeps
    explained: set[tuple[str, int]] = set()
    for device in sorted(held):
        chain = held[device]
        if len(chain) < 2 or max(chain) - min(chain) + 1 == len(chain):
            continue  # no gap to explain: the database is not asked (it may be unreadable, and need not be)
        stones: list[Tombstone] = []
        for stone in deletions.between(device, min(chain), max(chain)):
            present = chain.get(stone.sequence)
            if present is None:
                stones.append(stone)
            elif present.segment_hash.hex() != stone.segment_hash:
                report.problems.append(Problem(present.path or stone.where, (
                    f"segment {stone.sequence} of {device} was deleted by policy on {stone.deleted_utc[:10]} "
                    f"(sweep {stone.sweep_id}) as a different segment: its tombstone records hash "
                    f"{stone.segment_hash}, this file hashes to {present.segment_hash.hex()}"), "chain broken"))
        explained.update((device, s.sequence) for s in stones)
        linked = _check_links(device, chain, stones, report)
        for stone in stones:
            if stone.sequence not in linked:
                continue
            why = deletions.audited(stone)
            if why is not None:
                linked.discard(stone.sequence)
                report.problems.append(Problem(stone.where, (
                    f"the tombstone of segment {stone.sequence} of {device} (deleted by policy on "
                    f"{stone.deleted_utc[:10]}) links, but {why}"), "unaccounted deletion"))
        report.deleted.extend(_runs(device, [s for s in stones if s.sequence in linked]))
    return explained


def _check_links(device: str, chain: dict[int, ChainLink], stones: list[Tombstone],
                 report: VerifyReport) -> set[int]:
    """Every link into and out of a tombstone; the sequences of the tombstones whose links all hold."""
    by_seq: dict[int, Tombstone] = {s.sequence: s for s in stones}
    good = set(by_seq)

    def hash_of(seq: int) -> tuple[str, str] | None:
        """(hash, what it is) of the segment or tombstone at `seq`, if known."""
        if seq in by_seq:
            return by_seq[seq].segment_hash, f"as recorded in its tombstone, sweep {by_seq[seq].sweep_id}"
        if seq in chain:
            return chain[seq].segment_hash.hex(), f"the hash of {chain[seq].where()}"
        return None  # not held, no tombstone: the chain check reports it missing

    for stone in stones:
        before = hash_of(stone.sequence - 1)
        if before is not None and stone.prev_hash != before[0]:
            good.discard(stone.sequence)
            good.discard(stone.sequence - 1)
            report.problems.append(Problem(stone.where, (
                f"the tombstone of segment {stone.sequence} of {device} (deleted by policy on "
                f"{stone.deleted_utc[:10]}, sweep {stone.sweep_id}) does not link to segment "
                f"{stone.sequence - 1}: expected previous hash {before[0]} ({before[1]}), "
                f"found {stone.prev_hash}"), "chain broken"))
        after = chain.get(stone.sequence + 1)
        if after is not None and after.prev_hash.hex() != stone.segment_hash:
            good.discard(stone.sequence)
            report.problems.append(Problem(after.path or after.where(), (
                f"segment {after.sequence} of {device} does not link to segment {stone.sequence}, deleted by "
                f"policy on {stone.deleted_utc[:10]} (sweep {stone.sweep_id}): expected previous hash "
                f"{stone.segment_hash} (recorded in its tombstone), found {after.prev_hash.hex()}"),
                "chain broken"))
    return good


def _runs(device: str, stones: list[Tombstone]) -> Iterator[PolicyDeletion]:
    """Consecutive tombstones of one sweep, as one `PolicyDeletion` each."""
    run: list[Tombstone] = []
    for stone in stones:
        if run and (stone.sequence != run[-1].sequence + 1 or stone.sweep_id != run[-1].sweep_id):
            yield PolicyDeletion(device, run[0].sequence, run[-1].sequence, run[0].deleted_utc, run[0].sweep_id)
            run = []
        run.append(stone)
    if run:
        yield PolicyDeletion(device, run[0].sequence, run[-1].sequence, run[0].deleted_utc, run[0].sweep_id)
