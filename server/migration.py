"""What a migration must find on both sides: the pure half of `bwv server migrate` (no I/O here).

A migration is trusted only by what it can show afterwards: for every table,
the number of rows and a digest of their contents at the source and at the
destination; for the blobs, each one's SHA-256 at the source and as re-read
from the destination store; the audit chain's head.  `Tally` folds rows into
a count and a digest, `Reconciliation` sets the two sides side by side and
says whether they match, and `resume_decision` says whether a destination
may be written at all.

**The digest of a table** is the sum, modulo 2^256, of the SHA-256 of each
row's canonical encoding (`row_bytes`).  A sum does not depend on the order
rows are read in, so neither engine's collation (SQLite compares text by
bytes, PostgreSQL by its locale) nor a page order can make equal tables
look different; and since every table has a primary key no row appears
twice, which a sum would otherwise not see.  The encoding tags what a value
is (text, integer, real, bytes, NULL), so that text "1" and the integer 1,
or bytes and their hex, never encode the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

_MOD = 1 << 256


class MigrationError(Exception):
    """The migration cannot go on (the message says what was found, where, and what to do)."""


class DestinationRefused(MigrationError):
    """The destination holds something other than an earlier run of this migration: nothing is written."""


def _value(v: object) -> object:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return ["int", int(v)]
    if isinstance(v, int):
        return ["int", v]
    if isinstance(v, float):
        return ["real", v.hex()]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ["bytes", bytes(v).hex()]
    raise TypeError(f"a database value of type {type(v).__name__} has no canonical encoding")


def row_bytes(table: str, row: Sequence[object]) -> bytes:
    """One row as the digest reads it: the table's name and each value, tagged with its kind."""
    return json.dumps([table, [_value(v) for v in row]], separators=(",", ":"), ensure_ascii=True).encode()


@dataclass
class Tally:
    """How many rows, and the order-free digest of their contents (see the module docstring)."""

    rows: int = 0
    _sum: int = 0

    def add(self, data: bytes) -> None:
        self.rows += 1
        self._sum = (self._sum + int.from_bytes(hashlib.sha256(data).digest(), "big")) % _MOD

    def add_rows(self, table: str, rows: Iterable[Sequence[object]]) -> "Tally":
        for r in rows:
            self.add(row_bytes(table, r))
        return self

    @property
    def digest(self) -> str:
        return self._sum.to_bytes(32, "big").hex()


def blob_line(segment_hash: str, sha256: str) -> bytes:
    """One blob as the blob tally reads it: its key and the SHA-256 of its bytes."""
    return f"{segment_hash} {sha256}".encode()


@dataclass(frozen=True)
class Side:
    rows: int
    digest: str


@dataclass(frozen=True)
class Line:
    """One thing compared: a table, the blobs, or the audit chain's head."""

    what: str
    source: Side
    destination: Side

    @property
    def matches(self) -> bool:
        return self.source == self.destination


@dataclass
class Reconciliation:
    """Both sides of a migration, line by line, and the problems found on arrival."""

    lines: list[Line] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, what: str, source: Tally | Side, destination: Tally | Side) -> None:
        self.lines.append(Line(what, _side(source), _side(destination)))

    @property
    def matches(self) -> bool:
        return not self.problems and all(line.matches for line in self.lines)

    @property
    def digest(self) -> str:
        """One SHA-256 over every line: what the destination's audit record of the migration names."""
        h = hashlib.sha256()
        for line in self.lines:
            h.update(f"{line.what} {line.source.rows} {line.source.digest} {line.destination.rows} "
                     f"{line.destination.digest}\n".encode())
        return h.hexdigest()

    def table(self) -> list[str]:
        """The reconciliation for a person: one line per table, counts and digests on both sides."""
        width = max((len(line.what) for line in self.lines), default=10)
        out = [f"{'':{width}}  {'source':>9} {'digest':16}  {'destination':>11} {'digest':16}"]
        for line in self.lines:
            s, d = line.source, line.destination
            out.append(f"{line.what:{width}}  {s.rows:>9} {s.digest[:16]:16}  {d.rows:>11} {d.digest[:16]:16}  "
                       + ("ok" if line.matches else "DIFFERS"))
        out += [f"problem: {p}" for p in self.problems]
        out.append(f"reconciliation {self.digest}: " + ("every line matches" if self.matches else "DOES NOT MATCH"))
        return out


def _side(x: Tally | Side) -> Side:
    return x if isinstance(x, Side) else Side(x.rows, x.digest)


@dataclass(frozen=True)
class SourceIdentity:
    """What names an installation across runs: its audit trail's first record and its server key.
    (Its path may change between a kill and the resume; neither of these can.)"""

    first_audit_hash: str
    server_key_id: str
    shown: str = ""

    def to_json(self) -> str:
        return json.dumps({"first_audit_hash": self.first_audit_hash, "server_key_id": self.server_key_id,
                           "source": self.shown}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SourceIdentity":
        doc = json.loads(text)
        return cls(doc["first_audit_hash"], doc["server_key_id"], doc.get("source", ""))

    def same_installation(self, other: "SourceIdentity") -> bool:
        return (self.first_audit_hash, self.server_key_id) == (other.first_audit_hash, other.server_key_id)


FRESH, RESUME, FINISHED = "fresh", "resume", "finished"


def resume_decision(identity: SourceIdentity, recorded: dict[str, str], occupied: Sequence[str],
                    destination: str) -> str:
    """Whether a destination may be written: FRESH (empty), RESUME (a run of this migration stopped part
    way), FINISHED (this migration is done: only reconcile again); anything else is a MigrationError."""
    if "source" in recorded:
        before = SourceIdentity.from_json(recorded["source"])
        if not before.same_installation(identity):
            raise DestinationRefused(
                f"{destination} holds a migration from another installation ({before.shown or 'unnamed'}: server "
                f"key {before.server_key_id}, first audit record {before.first_audit_hash[:16]}...); this source "
                f"has server key {identity.server_key_id} and first record {identity.first_audit_hash[:16]}.... "
                "Migrate into an empty database")
        return FINISHED if "finished" in recorded else RESUME
    if occupied:
        raise DestinationRefused(
            f"{destination} is not empty (rows in {', '.join(occupied)}) and holds no earlier run of this "
            "migration: a migration copies into an empty database only, so that nothing there is mixed with "
            "or mistaken for the installation moved. Give a new database (createdb) or the one a killed run "
            "of this same migration left")
    return FRESH


def key_after(recorded: str | None) -> tuple | None:
    """The primary key a table's copy stopped after (None: from its first row)."""
    if not recorded:
        return None
    doc = json.loads(recorded)
    return None if doc.get("after") is None else tuple(doc["after"])


def progress_value(after: Sequence | None, copied: int, done: bool) -> str:
    return json.dumps({"after": None if after is None else list(after), "copied": copied, "done": done})


def progress_done(recorded: str | None) -> bool:
    return bool(recorded) and bool(json.loads(recorded).get("done"))


def progress_copied(recorded: str | None) -> int:
    return int(json.loads(recorded).get("copied", 0)) if recorded else 0


__all__ = ["DestinationRefused", "FINISHED", "FRESH", "Line", "MigrationError", "RESUME", "Reconciliation", "Side",
           "SourceIdentity", "Tally", "blob_line", "key_after", "progress_copied", "progress_done", "progress_value",
           "resume_decision", "row_bytes"]
