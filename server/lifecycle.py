"""The lifecycle records of held footage: clips, categories, evidence marks, tombstones.

retention.py says *when* a clip may go; this module keeps the facts those
rules read, in the evidence database (migration 5; migration 7 added when a
clip was last released), and answers the
questions staff ask: what is due in the next week, why is this clip still
here, what was deleted and when.

A **clip** row is made when the first segment of a clip is ingested, in the
same transaction as the segment (db.py ``add_segment``).  Its ``state`` is
``held``; the sweep moves it to ``deleting`` (the intent, committed before
any file is touched) and then to ``deleted`` (tombstones written, segment rows
gone, in one transaction) so that a sweep killed anywhere can be re-run and
deletes each clip exactly once.  A segment of a deleted clip that arrives
late (a camera docked weeks after) is evidence like any other: it is held,
and the clip becomes ``held`` again until the sweep takes it.

A clip is **released** when something that kept it longer stops keeping it:
it is re-filed into a category that keeps footage for less time, an evidence
mark on it is lifted, or a subject access request that held it is closed.
``released_utc_us`` records the latest such moment, and retention.py keeps
the clip for the notice period after it, so that it is on the due list for a
week before it can go however long ago its own period ended.

A **tombstone** is what remains of a deleted segment: its hashes, its place
in the device's chain and the digest of the wrapped key that was destroyed,
so that a gap in a device's chain is "deleted by policy", never "missing".

Every function that changes something takes the write connection of an
open transaction and appends its audit record (audit.py) inside it: the
change and its trace commit together or not at all.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable

from . import audit
from .audit_time import when
from .errors import BadRequest, Conflict, NotFound
from .geoindex import to_utc_us
from .store.sql import larger, smaller
from .retention import DEFAULT_CATEGORY, ClipFacts, RetentionPolicy, due_utc_us, releases

CLIP_HELD = "held"
CLIP_DELETING = "deleting"
CLIP_DELETED = "deleted"

MAX_TEXT = 2000
MAX_CASE_REF = 100

SCHEMA = """
CREATE TABLE clips (
    clip_id          TEXT PRIMARY KEY,
    device_id        TEXT NOT NULL,
    camera_start_us  INTEGER NOT NULL,
    recorded_utc_us  INTEGER NOT NULL,
    received_utc_us  INTEGER NOT NULL,
    last_utc_us      INTEGER NOT NULL,
    category         TEXT NOT NULL DEFAULT 'unmarked',
    state            TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'deleting', 'deleted')),
    sweep_id         TEXT,
    deleted_utc      TEXT
);
CREATE INDEX clips_by_due ON clips(state, category, recorded_utc_us);
CREATE INDEX clips_by_device ON clips(device_id, recorded_utc_us);
CREATE INDEX clips_by_time ON clips(recorded_utc_us);
CREATE INDEX clips_by_start ON clips(camera_start_us);
CREATE TABLE clip_stats (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    longest_us  INTEGER NOT NULL
);
CREATE TABLE evidence_marks (
    id          INTEGER PRIMARY KEY,
    clip_id     TEXT NOT NULL REFERENCES clips(clip_id),
    case_ref    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    marked_by   TEXT NOT NULL,
    marked_utc  TEXT NOT NULL,
    lifted_by   TEXT,
    lifted_utc  TEXT,
    lift_reason TEXT
);
CREATE INDEX marks_by_clip ON evidence_marks(clip_id, lifted_utc);
CREATE TABLE tombstones (
    segment_hash       TEXT PRIMARY KEY,
    device_id          TEXT NOT NULL,
    sequence           INTEGER NOT NULL,
    prev_hash          TEXT NOT NULL,
    clip_id            TEXT NOT NULL,
    segment_index      INTEGER NOT NULL,
    start_utc_us       INTEGER NOT NULL,
    end_utc_us         INTEGER NOT NULL,
    size               INTEGER NOT NULL,
    received_utc       TEXT NOT NULL,
    receipt            TEXT NOT NULL,
    wrapped_key_sha256 TEXT NOT NULL,
    category           TEXT NOT NULL,
    deleted_utc        TEXT NOT NULL,
    sweep_id           TEXT NOT NULL,
    UNIQUE (device_id, sequence)
);
CREATE INDEX tombstones_by_clip ON tombstones(clip_id);
CREATE TABLE device_assignments (
    id           INTEGER PRIMARY KEY,
    device_id    TEXT NOT NULL,
    officer      TEXT NOT NULL,
    from_utc_us  INTEGER NOT NULL,
    to_utc_us    INTEGER,
    assigned_by  TEXT NOT NULL,
    assigned_utc TEXT NOT NULL
);
CREATE INDEX assignments_by_device ON device_assignments(device_id, from_utc_us);
CREATE INDEX assignments_by_officer ON device_assignments(officer, from_utc_us);
INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, received_utc_us, last_utc_us)
    SELECT clip_id, MIN(device_id), MIN(start_utc_us),
           MIN(MIN(start_utc_us), MIN(CAST(strftime('%s', received_utc) AS INTEGER) * 1000000)),
           MIN(CAST(strftime('%s', received_utc) AS INTEGER) * 1000000), MAX(end_utc_us)
    FROM segments GROUP BY clip_id;
INSERT INTO clip_stats (id, longest_us) SELECT 1, COALESCE(MAX(last_utc_us - camera_start_us), 0) FROM clips
"""

# An open request holds the clips it covers (sar.py owns these tables).
_OPEN_REQUEST_HOLDS = (
    "SELECT COUNT(*) FROM sar_holds h JOIN subject_requests r ON r.id = h.sar_id "
    "WHERE h.clip_id = c.clip_id AND r.status != 'closed'"
)
_ACTIVE_MARKS = "SELECT COUNT(*) FROM evidence_marks m WHERE m.clip_id = c.clip_id AND m.lifted_utc IS NULL"


@dataclass(frozen=True)
class ClipRecord:
    clip_id: str
    device_id: str
    camera_start_us: int
    recorded_utc_us: int
    received_utc_us: int
    last_utc_us: int
    category: str
    state: str
    sweep_id: str | None
    deleted_utc: str | None
    active_marks: int = 0
    open_requests: int = 0
    released_utc_us: int | None = None

    @property
    def held(self) -> bool:
        """`is_held` for a clip already read: its counts come from the same two subqueries."""
        return self.active_marks > 0 or self.open_requests > 0

    def facts(self) -> ClipFacts:
        return ClipFacts(self.clip_id, self.category, self.recorded_utc_us, self.received_utc_us,
                         self.active_marks, self.open_requests, self.released_utc_us)


_CLIP_COLUMNS = ("c.clip_id, c.device_id, c.camera_start_us, c.recorded_utc_us, c.received_utc_us, c.last_utc_us, "
                 f"c.category, c.state, c.sweep_id, c.deleted_utc, ({_ACTIVE_MARKS}), ({_OPEN_REQUEST_HOLDS}), "
                 "c.released_utc_us")

# Migration 7: when a clip was last released (see the module docstring), and an index of the clips
# that arrived before their camera says they started (a camera clock running ahead), which a
# subject access request's time window must still find (sar.clips_recorded_during).
RELEASES_SCHEMA = """
ALTER TABLE clips ADD COLUMN released_utc_us INTEGER;
CREATE INDEX clips_arrived_before_start ON clips(recorded_utc_us) WHERE recorded_utc_us < camera_start_us
"""


def _clip(row: tuple | None) -> ClipRecord | None:
    return None if row is None else ClipRecord(*row)


def _bounded(name: str, text: str, limit: int = MAX_TEXT, *, required: bool = True) -> str:
    if not isinstance(text, str):
        raise BadRequest(f"{name} must be text")
    text = text.strip()
    if required and not text:
        raise BadRequest(f"{name} is required")
    if len(text) > limit:
        raise BadRequest(f"{name} is {len(text)} characters; at most {limit}")
    return text


# --------------------------------------------------------------------------- ingest
def record_segment(db: sqlite3.Connection, clip_id: str, device_id: str, start_utc_us: int, end_utc_us: int,
                   received_utc_us: int) -> None:
    """Make or extend the clip a newly held segment belongs to (inside the ingest transaction)."""
    recorded = min(start_utc_us, received_utc_us)
    # Column names qualified (clips.x, excluded.x): PostgreSQL reads a bare name in DO UPDATE as ambiguous.
    db.execute(
        "INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, received_utc_us, last_utc_us) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(clip_id) DO UPDATE SET "
        f"camera_start_us = {smaller('clips.camera_start_us', 'excluded.camera_start_us')}, "
        f"recorded_utc_us = {smaller('clips.recorded_utc_us', 'excluded.recorded_utc_us')}, "
        "received_utc_us = CASE WHEN clips.state = 'deleted' THEN excluded.received_utc_us "
        "ELSE clips.received_utc_us END, "
        f"last_utc_us = {larger('clips.last_utc_us', 'excluded.last_utc_us')}, "
        "state = CASE WHEN clips.state = 'deleted' THEN 'held' ELSE clips.state END, "
        "deleted_utc = CASE WHEN clips.state = 'deleted' THEN NULL ELSE clips.deleted_utc END, "
        "shred_begun_utc = CASE WHEN clips.state = 'deleted' THEN NULL ELSE clips.shred_begun_utc END",
        (clip_id, device_id, start_utc_us, recorded, received_utc_us, end_utc_us),
    )
    # The longest clip bounds a time-window search (sar.find_candidates) to an index range.
    longest = "(SELECT last_utc_us - camera_start_us FROM clips WHERE clip_id = ?)"
    db.execute(f"UPDATE clip_stats SET longest_us = {larger('longest_us', longest)}", (clip_id, clip_id))


# --------------------------------------------------------------------------- reading
def is_held(db: sqlite3.Connection, clip_id: str) -> bool:
    """Whether something keeps the clip whatever its category says: an evidence mark not lifted, or
    a subject access request not closed that holds it.  The sweep asks this again, in the write
    transaction that marks a clip's shredding begun: a request logged since the clip was chosen
    holds it (sar.py holds ``deleting`` clips until their shredding begins)."""
    return db.execute(f"SELECT EXISTS ({_ACTIVE_MARKS.replace('COUNT(*)', '1')}) "
                      f"OR EXISTS ({_OPEN_REQUEST_HOLDS.replace('COUNT(*)', '1')}) "
                      "FROM clips c WHERE c.clip_id = ?", (clip_id,)).fetchone() == (1,)


def longest_clip_us(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT longest_us FROM clip_stats WHERE id = 1").fetchone()
    return row[0] if row else 0


def clip(db: sqlite3.Connection, clip_id: str) -> ClipRecord | None:
    return _clip(db.execute(f"SELECT {_CLIP_COLUMNS} FROM clips c WHERE c.clip_id = ?", (clip_id,)).fetchone())


IN_LIST_MAX = 500  # ids per IN (...) list: far below either engine's limit on parameters


def clips(db: sqlite3.Connection, clip_ids: Iterable[str]) -> dict[str, ClipRecord]:
    """The records of the given clips that exist, by id, in a few queries rather than one per clip
    (the sweep reads a batch of a thousand at once; on PostgreSQL each query is a round trip)."""
    ids = list(dict.fromkeys(clip_ids))
    found: dict[str, ClipRecord] = {}
    for i in range(0, len(ids), IN_LIST_MAX):
        part = ids[i:i + IN_LIST_MAX]
        for row in db.execute(f"SELECT {_CLIP_COLUMNS} FROM clips c WHERE c.clip_id IN "
                              f"({', '.join('?' * len(part))})", part):
            found[row[0]] = _clip(row)
    return found


def require_clip(db: sqlite3.Connection, clip_id: str) -> ClipRecord:
    found = clip(db, clip_id)
    if found is None:
        raise NotFound(f"no clip {clip_id} is known here")
    return found


def due_between(db: sqlite3.Connection, policy: RetentionPolicy, until_utc_us: int, *,
                limit: int | None = None, include_held: bool = False) -> list[ClipRecord]:
    """Clips still held whose retention ends by `until_utc_us`, earliest due first.

    Without `include_held`, clips kept by a mark or an open request are left
    out (they are not going anywhere); with it they are listed too, so the
    due list can show what a hold is keeping."""
    rows: list[ClipRecord] = []
    notice_cut = until_utc_us - policy.notice_us
    for category in sorted(policy.categories):
        cut = until_utc_us - policy.period_us(category)
        sql = (f"SELECT {_CLIP_COLUMNS} FROM clips c WHERE c.state = 'held' AND c.category = ? "
               "AND c.recorded_utc_us <= ? AND c.received_utc_us <= ? "
               "AND (c.released_utc_us IS NULL OR c.released_utc_us <= ?)")
        if not include_held:
            sql += f" AND NOT EXISTS ({_ACTIVE_MARKS.replace('COUNT(*)', '1')})" \
                   f" AND NOT EXISTS ({_OPEN_REQUEST_HOLDS.replace('COUNT(*)', '1')})"
        sql += " ORDER BY c.recorded_utc_us"
        args: tuple = (category, cut, notice_cut, notice_cut)
        if limit is not None:
            sql += " LIMIT ?"
            args += (limit,)
        rows.extend(_clip(r) for r in db.execute(sql, args))
    rows.sort(key=lambda c: (due_utc_us(policy, c.facts()), c.clip_id))
    return rows[:limit] if limit is not None else rows


def unknown_categories(db: sqlite3.Connection, policy: RetentionPolicy) -> list[tuple[str, int]]:
    """Categories held clips carry that the configuration no longer defines (never deleted: reported)."""
    names = sorted(policy.categories)
    marks = ", ".join("?" * len(names))
    return [tuple(r) for r in db.execute(
        f"SELECT category, COUNT(*) FROM clips WHERE state = 'held' AND category NOT IN ({marks}) "
        "GROUP BY category ORDER BY category", names)]


def clips_of_device(db: sqlite3.Connection, device_id: str) -> list[ClipRecord]:
    return [_clip(r) for r in db.execute(
        f"SELECT {_CLIP_COLUMNS} FROM clips c WHERE c.device_id = ? ORDER BY c.recorded_utc_us", (device_id,))]


def segment_hashes(db: sqlite3.Connection, clip_id: str) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT segment_hash FROM segments WHERE clip_id = ? ORDER BY segment_index, sequence", (clip_id,))]


def tombstones_of(db: sqlite3.Connection, clip_id: str) -> list[dict]:
    cur = db.execute(
        "SELECT segment_hash, device_id, sequence, prev_hash, size, wrapped_key_sha256, category, deleted_utc, "
        "sweep_id FROM tombstones WHERE clip_id = ? ORDER BY sequence", (clip_id,))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur]


def deleted_by_sweep(db: sqlite3.Connection, sweep_id: str, *, limit: int = 200) -> list[dict]:
    """What one sweep deleted, a clip per row (camera, segments, category, when), from its tombstones."""
    cur = db.execute(
        "SELECT clip_id, device_id, COUNT(*), SUM(size), MIN(category), MIN(deleted_utc) FROM tombstones "
        "WHERE sweep_id = ? GROUP BY clip_id, device_id ORDER BY MIN(deleted_utc), clip_id LIMIT ?", (sweep_id, limit))
    return [{"clip_id": c, "device_id": d, "segments": n, "bytes": b or 0, "category": cat, "deleted_utc": at}
            for c, d, n, b, cat, at in cur]


def deleted_sequences(db: sqlite3.Connection, device_id: str) -> set[int]:
    """Sequences of the device deleted by policy: the gaps a chain check must not call missing."""
    return {r[0] for r in db.execute("SELECT sequence FROM tombstones WHERE device_id = ?", (device_id,))}


def marks(db: sqlite3.Connection, clip_id: str, *, active_only: bool = False) -> list[dict]:
    sql = ("SELECT id, case_ref, reason, marked_by, marked_utc, lifted_by, lifted_utc, lift_reason "
           "FROM evidence_marks WHERE clip_id = ?")
    if active_only:
        sql += " AND lifted_utc IS NULL"
    cur = db.execute(sql + " ORDER BY id", (clip_id,))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur]


# --------------------------------------------------------------------------- changing
def record_release(db: sqlite3.Connection, clip_ids: Iterable[str], at: str) -> None:
    """Note that the clips were released at `at` (ISO 8601): the notice period starts again from
    then.  The latest release is kept, so a clock stepping back cannot shorten the notice."""
    released = to_utc_us(when(at))
    # The later of the two, in SQL both engines read (SQLite's MAX(a, b) is not PostgreSQL's).
    db.executemany("UPDATE clips SET released_utc_us = CASE WHEN released_utc_us IS NULL OR released_utc_us < ? "
                   "THEN ? ELSE released_utc_us END WHERE clip_id = ?",
                   ((released, released, clip_id) for clip_id in clip_ids))


def _held(db: sqlite3.Connection, clip_id: str) -> ClipRecord:
    found = require_clip(db, clip_id)
    if found.state != CLIP_HELD:
        raise Conflict(f"clip {clip_id} was deleted by the retention policy"
                       f"{' on ' + found.deleted_utc if found.deleted_utc else ''} (it is {found.state})")
    return found


def set_category(db: sqlite3.Connection, policy: RetentionPolicy, clip_id: str, category: str, *,
                 actor: str, reason: str, at: str) -> ClipRecord:
    """File a clip under a retention category (audited, with the old and new category).  Into one
    that keeps footage for less time, the clip is released: it is kept for the notice period from now
    even if the new category's period ended long ago."""
    category = policy.check_category(_bounded("category", category, 32))
    reason = _bounded("reason", reason)
    before = _held(db, clip_id)
    db.execute("UPDATE clips SET category = ? WHERE clip_id = ?", (category, clip_id))
    if releases(policy, before.category, category):
        record_release(db, [clip_id], at)
    audit.append(db, actor=actor, action="category_set", target=f"clip:{clip_id}",
                 detail={"from": before.category, "to": category, "reason": reason}, at=when(at))
    return require_clip(db, clip_id)


def mark_evidence(db: sqlite3.Connection, clip_id: str, *, case_ref: str, reason: str, actor: str, at: str) -> int:
    """Mark a clip as evidence in a case: it is kept until the mark is lifted.  Returns the mark id."""
    case_ref = _bounded("case reference", case_ref, MAX_CASE_REF)
    reason = _bounded("reason", reason)
    _held(db, clip_id)
    # RETURNING (both engines): PostgreSQL has no lastrowid.
    (mark_id,) = db.execute(
        "INSERT INTO evidence_marks (clip_id, case_ref, reason, marked_by, marked_utc) VALUES (?, ?, ?, ?, ?) "
        "RETURNING id", (clip_id, case_ref, reason, actor, at)).fetchone()
    audit.append(db, actor=actor, action="mark", target=f"clip:{clip_id}",
                 detail={"mark": mark_id, "case_ref": case_ref, "reason": reason}, at=when(at))
    return mark_id


def lift_mark(db: sqlite3.Connection, clip_id: str, mark_id: int, *, reason: str, actor: str, at: str) -> None:
    """Lift one evidence mark; the clip falls back to its category's rule once no mark is left, and
    is released: kept for the notice period from now even if its period ended long ago."""
    reason = _bounded("reason", reason)
    row = db.execute("SELECT lifted_utc FROM evidence_marks WHERE id = ? AND clip_id = ?",
                     (mark_id, clip_id)).fetchone()
    if row is None:
        raise NotFound(f"clip {clip_id} has no evidence mark {mark_id}")
    if row[0] is not None:
        raise Conflict(f"evidence mark {mark_id} on clip {clip_id} was already lifted on {row[0]}")
    db.execute("UPDATE evidence_marks SET lifted_by = ?, lifted_utc = ?, lift_reason = ? WHERE id = ?",
               (actor, at, reason, mark_id))
    record_release(db, [clip_id], at)
    audit.append(db, actor=actor, action="unmark", target=f"clip:{clip_id}",
                 detail={"mark": mark_id, "reason": reason}, at=when(at))


def assign_device(db: sqlite3.Connection, device_id: str, officer: str, from_utc_us: int, to_utc_us: int | None,
                  *, actor: str, at: str) -> int:
    """Record that `officer` wore `device_id` over a time range (open-ended if `to_utc_us` is None)."""
    if to_utc_us is not None and to_utc_us <= from_utc_us:
        raise BadRequest("an assignment must end after it starts")
    # Whoever records it (the API or the console), footage must not be attributed to a name that is
    # nobody's account: a typo would hand an officer's own-footage access to no one, or to a later hire.
    if db.execute("SELECT 1 FROM users WHERE username = ?", (officer,)).fetchone() is None:
        raise NotFound(f"no user {officer!r}: create the account first (bwv user add, POST /api/v1/users)")
    (assignment,) = db.execute(
        "INSERT INTO device_assignments (device_id, officer, from_utc_us, to_utc_us, assigned_by, assigned_utc) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id", (device_id, officer, from_utc_us, to_utc_us, actor, at)).fetchone()
    audit.append(db, actor=actor, action="device_assigned", target=f"device:{device_id}",
                 detail={"officer": officer, "from_utc_us": from_utc_us, "to_utc_us": to_utc_us}, at=when(at))
    return assignment


def has_assignment(db: sqlite3.Connection, device_id: str, officer: str) -> bool:
    """Whether `officer` was ever recorded as wearing `device_id` (for set-up that must not assign twice)."""
    return db.execute("SELECT 1 FROM device_assignments WHERE device_id = ? AND officer = ? LIMIT 1",
                      (device_id, officer)).fetchone() is not None


def current_wearers(db: sqlite3.Connection, now_utc_us: int) -> dict[str, str]:
    """Who wears each camera now: device id -> officer, from the open or current assignments."""
    return {device: officer for device, officer in db.execute(
        "SELECT device_id, officer FROM device_assignments WHERE from_utc_us <= ? AND (to_utc_us IS NULL OR "
        "to_utc_us > ?) ORDER BY from_utc_us, id", (now_utc_us, now_utc_us))}


def officer_owns_clip_sql(alias: str = "c") -> str:
    """SQL condition (one ? parameter: the officer) that a clip was recorded on a device assigned to them."""
    return (f"EXISTS (SELECT 1 FROM device_assignments a WHERE a.device_id = {alias}.device_id AND a.officer = ? "
            f"AND a.from_utc_us <= {alias}.camera_start_us "
            f"AND (a.to_utc_us IS NULL OR a.to_utc_us > {alias}.camera_start_us))")


def officer_owns(db: sqlite3.Connection, officer: str, clip_id: str) -> bool:
    return db.execute(f"SELECT 1 FROM clips c WHERE c.clip_id = ? AND {officer_owns_clip_sql()}",
                      (clip_id, officer)).fetchone() is not None


def counts_by_state(db: sqlite3.Connection) -> dict[str, int]:
    return {state: n for state, n in db.execute("SELECT state, COUNT(*) FROM clips GROUP BY state")}


def iter_clip_ids(rows: Iterable[ClipRecord]) -> list[str]:
    return [r.clip_id for r in rows]


__all__ = [
    "CLIP_DELETED", "CLIP_DELETING", "CLIP_HELD", "ClipRecord", "DEFAULT_CATEGORY", "SCHEMA", "assign_device",
    "IN_LIST_MAX", "RELEASES_SCHEMA", "clip", "clips", "clips_of_device", "counts_by_state", "deleted_sequences",
    "due_between", "is_held",
    "lift_mark", "mark_evidence", "marks", "officer_owns", "officer_owns_clip_sql", "record_release",
    "record_segment", "require_clip", "segment_hashes", "set_category", "tombstones_of", "unknown_categories",
]
