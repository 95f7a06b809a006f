"""Subject access requests: a member of the public asks to see footage of themselves.

A request records who asks, when it arrived, where and when the encounter
was (a place in words, coordinates and a radius if known, a time window),
optionally the device or officer involved, and a description.

DPA 2018 s.173 makes erasing data once a request has arrived an offence, so
what a request **holds** is decided by time alone, never narrowed by what the
requester remembers of the place, the camera or the officer:

* logging it holds, in the same transaction, every clip of every device whose
  recording overlaps the window widened by `CLOCK_MARGIN_US` on each side
  (`clips_recorded_during`), whether or not a GNSS fix places it, and a clip
  an interrupted sweep left in ``deleting`` (it is not gone yet);
* a clip docked later whose recording overlaps the window of a request that
  is not closed is held for it by the ingest transaction that records it
  (`hold_for_open_requests`, called from db.py ``add_segment``);
* staff can hold further clips they find (`add_holds`).

A clip's recording, for this purpose, runs from its retention start (the
earlier of the camera's start time and its arrival: retention.py) to the
camera's end time: a camera whose clock runs ahead cannot put its footage
outside a window it was really recorded in, if it docked within the margin.
A held clip is not deleted by the retention sweep while the request is open
or extended; closing the request releases its holds (a clip also marked as
evidence stays marked), and each clip it held gets the notice period on the
due list again (lifecycle.record_release).

The response is due one calendar month after the request arrived (the ICO's
rule: the same day of the next month, or the last day of that month when it
has no such day); a complex request may be extended by up to two further
months, with a reason.  Open requests past their due date are listed as
overdue.

Candidate clips, which staff search to choose what to export, are found by
overlap of the clip's recording time with the window, narrowed by device, by
officer (through the device assignments) and by place (the GNSS index: a clip
matches if one of its fixes lies within the radius during the window).  The
narrowing is for the search only; it never decides what is held.
"""

from __future__ import annotations

import calendar
import math
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from .audit_time import when
from . import audit, geoindex
from .errors import BadRequest, Conflict, NotFound, ServerError
from . import lifecycle
from .lifecycle import CLIP_DELETING, CLIP_HELD, officer_owns_clip_sql

OPEN = "open"
EXTENDED = "extended"
CLOSED = "closed"
MAX_EXTENSION_MONTHS = 2
MAX_TEXT = 4000
MAX_WINDOW_US = 366 * 86_400 * 1_000_000  # a request names an encounter, not a year of footage
# How far a camera's clock may be from the truth and its footage still be held for a window: docks
# set the clock every docking and it drifts seconds a day, but a clock on local time instead of UTC
# is an hour out in summer.  Holding too much costs disk until the request closes; too little is an
# offence.
CLOCK_MARGIN_US = 2 * 3600 * 1_000_000
INGEST_ACTOR = "system:ingest"
# A clip can be held while 'held', and while 'deleting' until its shredding begins:
# a clip the sweep chose but has not touched can still be saved (the sweep asks again, in the transaction
# that marks the shredding begun); once that is committed the footage is going, and no hold is pretended.
# `state || ''`: an expression, so no index on state is used (see clips_recorded_during); SQLite's own
# idiom, unary +, is an error on text in PostgreSQL, and this reads the same on both engines.
_HOLDABLE_SQL = "(state || '' = 'held' OR (state || '' = 'deleting' AND shred_begun_utc IS NULL))"


# Who made a request: staff logging it (the default), or a member of the public on the public page.
SOURCE_STAFF = "staff"
SOURCE_PUBLIC = "public"
PUBLIC_ACTOR = "public"
# Migration 9 (db.py): where a request came from, the keyed tag of the client that sent a public one
# (for the rate limit: never the address itself), and who verified it.
PUBLIC_SCHEMA = """
ALTER TABLE subject_requests ADD COLUMN source TEXT NOT NULL DEFAULT 'staff';
ALTER TABLE subject_requests ADD COLUMN client_tag TEXT;
ALTER TABLE subject_requests ADD COLUMN verified_by TEXT;
ALTER TABLE subject_requests ADD COLUMN verified_utc TEXT;
CREATE INDEX public_requests_by_client ON subject_requests(client_tag, logged_utc) WHERE client_tag IS NOT NULL
"""


def _holdable(state: str, shred_begun_utc: str | None) -> bool:
    return state == CLIP_HELD or (state == CLIP_DELETING and shred_begun_utc is None)

SCHEMA = """
CREATE TABLE subject_requests (
    id              TEXT PRIMARY KEY,
    requester       TEXT NOT NULL,
    contact         TEXT NOT NULL DEFAULT '',
    received_date   TEXT NOT NULL,
    logged_by       TEXT NOT NULL,
    logged_utc      TEXT NOT NULL,
    place           TEXT NOT NULL DEFAULT '',
    lat             REAL,
    lon             REAL,
    radius_m        REAL,
    window_from_us  INTEGER NOT NULL,
    window_to_us    INTEGER NOT NULL,
    device_id       TEXT,
    officer         TEXT,
    description     TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'extended', 'closed')),
    due_date        TEXT NOT NULL,
    extension_reason TEXT,
    closed_utc      TEXT,
    closed_by       TEXT,
    outcome         TEXT
);
CREATE INDEX requests_by_status ON subject_requests(status, due_date);
CREATE TABLE sar_holds (
    sar_id     TEXT NOT NULL REFERENCES subject_requests(id),
    clip_id    TEXT NOT NULL REFERENCES clips(clip_id),
    added_by   TEXT NOT NULL,
    added_utc  TEXT NOT NULL,
    why        TEXT NOT NULL,
    PRIMARY KEY (sar_id, clip_id)
);
CREATE INDEX sar_holds_by_clip ON sar_holds(clip_id);
CREATE TABLE sar_exports (
    id              INTEGER PRIMARY KEY,
    sar_id          TEXT NOT NULL REFERENCES subject_requests(id),
    created_utc     TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    directory       TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    clips           INTEGER NOT NULL
)
"""


# --------------------------------------------------------------------------- deadlines (pure)
def add_months(day: date, months: int) -> date:
    """The same day `months` calendar months later, or the last day of that month if it is shorter."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_date(received: date, extension_months: int = 0) -> date:
    """When the response is due: one calendar month after receipt, plus any extension."""
    return add_months(received, 1 + extension_months)


def is_overdue(status: str, due: date, today: date) -> bool:
    return status != CLOSED and today > due


# --------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class RequestDetails:
    """What staff type in when a request arrives; `check()` says what is wrong with it."""

    requester: str
    description: str
    received: date
    window_from_us: int
    window_to_us: int
    contact: str = ""
    place: str = ""
    lat: float | None = None
    lon: float | None = None
    radius_m: float | None = None
    device_id: str | None = None
    officer: str | None = None

    def check(self) -> None:
        for name, value, required in (("requester", self.requester, True), ("description", self.description, True),
                                      ("contact", self.contact, False), ("place", self.place, False)):
            if not isinstance(value, str) or (required and not value.strip()):
                raise BadRequest(f"{name} is required")
            if len(value) > MAX_TEXT:
                raise BadRequest(f"{name} is {len(value)} characters; at most {MAX_TEXT}")
        if self.window_to_us < self.window_from_us:
            raise BadRequest("the time window ends before it starts")
        if self.window_to_us - self.window_from_us > MAX_WINDOW_US:
            raise BadRequest("the time window is longer than a year; a request names an encounter")
        located = [v is not None for v in (self.lat, self.lon, self.radius_m)]
        if any(located) and not all(located):
            raise BadRequest("a location needs lat, lon and radius_m together")
        if all(located):
            if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
                raise BadRequest(f"coordinates {self.lat}, {self.lon} are out of range")
            if not (math.isfinite(self.radius_m) and 0 < self.radius_m <= geoindex.MAX_RADIUS_M):
                raise BadRequest(f"radius_m must be more than 0 and at most {geoindex.MAX_RADIUS_M:g}")

    @property
    def located(self) -> bool:
        return self.lat is not None


@dataclass(frozen=True)
class Candidate:
    clip_id: str
    device_id: str
    camera_start_us: int
    last_utc_us: int
    closest_m: float | None  # distance of its nearest fix, when searched by place

    def to_dict(self) -> dict:
        return {"clip_id": self.clip_id, "device_id": self.device_id,
                "from": geoindex.iso_utc(self.camera_start_us), "to": geoindex.iso_utc(self.last_utc_us),
                "closest_m": None if self.closest_m is None else round(self.closest_m, 1)}


def find_candidates(db: sqlite3.Connection, window_from_us: int, window_to_us: int, *,
                    device_id: str | None = None, officer: str | None = None,
                    lat: float | None = None, lon: float | None = None, radius_m: float | None = None,
                    limit: int = 5000) -> list[Candidate]:
    """Held clips recorded during the window (overlap), narrowed by device, officer and place."""
    distances: dict[str, float] | None = None
    if lat is not None and lon is not None and radius_m is not None:
        distances = {}
        for m in geoindex.search(db, lat, lon, radius_m, window_from_us, window_to_us):
            distances[m.clip_id] = min(distances.get(m.clip_id, math.inf), m.closest_m)
        if not distances:
            return []
    # A clip overlaps the window if it starts before the window ends and ends after it starts; no
    # clip is longer than the longest held, which bounds the start to an index range (`c.state || ''`
    # keeps SQLite off the index by state, which nearly every clip shares).
    sql = ("SELECT c.clip_id, c.device_id, c.camera_start_us, c.last_utc_us FROM clips c "
           "WHERE c.state || '' = 'held' AND c.camera_start_us BETWEEN ? AND ? AND c.last_utc_us >= ?")
    args: list = [window_from_us - lifecycle.longest_clip_us(db), window_to_us, window_from_us]
    if device_id:
        sql += " AND c.device_id = ?"
        args.append(device_id)
    if officer:
        sql += " AND " + officer_owns_clip_sql()
        args.append(officer)
    if distances is not None:
        ids = sorted(distances)
        sql += f" AND c.clip_id IN ({', '.join('?' * len(ids))})"
        args.extend(ids)
    sql += " ORDER BY c.camera_start_us, c.clip_id LIMIT ?"
    args.append(limit)
    return [Candidate(cid, dev, t0, t1, None if distances is None else distances[cid])
            for cid, dev, t0, t1 in db.execute(sql, args)]


def covers(window_from_us: int, window_to_us: int, recording_from_us: int, recording_to_us: int) -> bool:
    """Whether a request's window holds a clip recorded over the given span (both inclusive): the
    spans overlap once the window is widened by the clock margin on each side.  The rule both
    `clips_recorded_during` (at logging) and `hold_for_open_requests` (at ingest) apply in SQL."""
    return (recording_from_us <= window_to_us + CLOCK_MARGIN_US
            and recording_to_us >= window_from_us - CLOCK_MARGIN_US)


def clips_recorded_during(db: sqlite3.Connection, window_from_us: int, window_to_us: int) -> list[str]:
    """Every clip not yet deleted, of any device, that a request with this window must hold (`covers`
    with the clip's retention start and camera end), all of them: no limit, no place, no device."""
    lo, hi = window_from_us - CLOCK_MARGIN_US, window_to_us + CLOCK_MARGIN_US
    # Most clips start on the camera's clock (recorded_utc_us = camera_start_us), and no clip is
    # longer than the longest held, which bounds the start to an index range; the few that arrived
    # before their camera says they started have a partial index of their own.  (`state || ''`: nearly
    # every clip is held, so the index by state would be a scan of them all.)
    found = {r[0] for r in db.execute(
        f"SELECT clip_id FROM clips WHERE {_HOLDABLE_SQL} AND camera_start_us BETWEEN ? AND ? "
        "AND last_utc_us >= ?", (lo - lifecycle.longest_clip_us(db), hi, lo))}
    found.update(r[0] for r in db.execute(
        f"SELECT clip_id FROM clips WHERE recorded_utc_us < camera_start_us AND recorded_utc_us <= ? "
        f"AND last_utc_us >= ? AND {_HOLDABLE_SQL}", (hi, lo)))
    return sorted(found)


def hold_for_open_requests(db: sqlite3.Connection, clip_id: str, *, at: str,
                           actor: str = INGEST_ACTOR) -> list[str]:
    """Hold a clip just recorded or extended (inside the ingest transaction) for every request not
    closed whose window covers it; each new hold is audited.  Returns the requests now holding it
    that did not before."""
    row = db.execute("SELECT recorded_utc_us, last_utc_us, state, shred_begun_utc FROM clips WHERE clip_id = ?",
                     (clip_id,)).fetchone()
    if row is None or not _holdable(row[2], row[3]):
        return []
    start, end, _, _ = row
    holding = []
    for request_id, pending, t0, t1, lat, lon, radius in db.execute(
            "SELECT id, source = ? AND verified_utc IS NULL, window_from_us, window_to_us, lat, lon, radius_m "
            "FROM subject_requests WHERE status IN (?, ?) AND window_from_us <= ? AND window_to_us >= ? ORDER BY id",
            (SOURCE_PUBLIC, OPEN, EXTENDED, end + CLOCK_MARGIN_US, start - CLOCK_MARGIN_US)).fetchall():
        if pending and lat is not None and clip_id not in _placed_or_unplaced(db, [clip_id], t0, t1, lat, lon,
                                                                              radius):
            continue  # a pending public request holds only what may have been there
        holding.append(request_id)
    return [request_id for request_id in holding
            if _hold(db, request_id, [clip_id], actor=actor, at=at, why="recorded in the window, docked later")]


def _next_id(db: sqlite3.Connection, received: date) -> str:
    prefix = f"SAR-{received.year}-"
    row = db.execute("SELECT MAX(CAST(SUBSTR(id, CAST(? AS INTEGER)) AS BIGINT)) FROM subject_requests WHERE id LIKE ?",
                     (len(prefix) + 1, prefix + "%")).fetchone()
    return f"{prefix}{(row[0] or 0) + 1:05d}"


def log_request(db: sqlite3.Connection, details: RequestDetails, *, actor: str, at: str) -> tuple[str, list[str]]:
    """Record a request and hold every clip recorded during its window (one transaction: the clock
    margin, every device, regardless of place, device or officer named).  Returns (id, held clips)."""
    details.check()
    request_id = _insert_request(db, details, actor=actor, at=at, source=SOURCE_STAFF, client_tag=None)
    held = clips_recorded_during(db, details.window_from_us, details.window_to_us)
    _hold(db, request_id, held, actor=actor, at=at, why="recorded in the window when the request was logged")
    return request_id, held


def _insert_request(db: sqlite3.Connection, details: RequestDetails, *, actor: str, at: str, source: str,
                    client_tag: str | None) -> str:
    request_id = _next_id(db, details.received)
    due = due_date(details.received)
    db.execute(
        "INSERT INTO subject_requests (id, requester, contact, received_date, logged_by, logged_utc, place, lat, "
        "lon, radius_m, window_from_us, window_to_us, device_id, officer, description, status, due_date, source, "
        "client_tag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (request_id, details.requester.strip(), details.contact.strip(), details.received.isoformat(), actor, at,
         details.place.strip(), details.lat, details.lon, details.radius_m, details.window_from_us,
         details.window_to_us, details.device_id, details.officer, details.description.strip(), OPEN,
         due.isoformat(), source, client_tag))
    audit.append(db, actor=actor, action="request_logged", target=f"request:{request_id}",
                 detail={"received": details.received.isoformat(), "due": due.isoformat(),
                         "window": [geoindex.iso_utc(details.window_from_us), geoindex.iso_utc(details.window_to_us)],
                         "located": details.located, "source": source}, at=when(at))
    return request_id


# --------------------------------------------------------------------------- requests from the public
class RateLimited(ServerError):
    """Too many public requests from one client, or from everyone, in the period: try later."""

    status = 429
    title = "Too Many Requests"


@dataclass(frozen=True)
class PublicLimits:
    """What a request from the public page may hold before staff have verified it (config.py:
    the ``public_*`` settings)."""

    max_window_hours: float = 4.0
    max_radius_m: float = 500.0
    per_client_per_day: int = 3
    per_hour: int = 60  # from everyone together: a flood from many addresses still has a ceiling

    def check(self, details: RequestDetails) -> None:
        """Refuse, in words for the member of the public, a request wider than a pending one may hold."""
        hours = (details.window_to_us - details.window_from_us) / 3_600_000_000
        if hours > self.max_window_hours:
            raise BadRequest(f"the time you give is {hours:.1f} hours long; give at most {self.max_window_hours:g} "
                             "hours around when you met the police (you can send more than one request)")
        if details.located and details.radius_m > self.max_radius_m:
            raise BadRequest(f"the area you give is {details.radius_m:g} metres across from the point; give at most "
                             f"{self.max_radius_m:g} metres")


def check_public_rate(db: sqlite3.Connection, client_tag: str, limits: PublicLimits, now: datetime) -> None:
    """Refuse a public submission past the client's daily or everyone's hourly allowance (counted in
    the database, so every node of a fleet counts the same)."""
    day_ago, hour_ago = (_iso(now - timedelta(days=1)), _iso(now - timedelta(hours=1)))
    mine = db.execute("SELECT COUNT(*) FROM subject_requests WHERE client_tag = ? AND logged_utc > ?",
                      (client_tag, day_ago)).fetchone()[0]
    if mine >= limits.per_client_per_day:
        raise RateLimited(f"{mine} requests have been sent from this connection in the last 24 hours, the most "
                          "this page accepts; try again tomorrow, or contact the force by phone or post",
                          headers={"Retry-After": "3600"})
    everyone = db.execute("SELECT COUNT(*) FROM subject_requests WHERE source = ? AND logged_utc > ?",
                          (SOURCE_PUBLIC, hour_ago)).fetchone()[0]
    if everyone >= limits.per_hour:
        raise RateLimited("this page is receiving many requests just now; try again in an hour, or contact the "
                          "force by phone or post", headers={"Retry-After": "600"})


def _iso(t: datetime) -> str:
    """As staff_api.now_iso writes logged_utc, so that the text compares in time order."""
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def log_public_request(db: sqlite3.Connection, details: RequestDetails, *, client_tag: str, limits: PublicLimits,
                       at: str) -> tuple[str, list[str]]:
    """A request from the public page: pending until verified, and holding narrowly at once (`clips_near`)."""
    details.check()
    limits.check(details)
    check_public_rate(db, client_tag, limits, when(at))
    request_id = _insert_request(db, details, actor=f"{PUBLIC_ACTOR}:{client_tag[:16]}", at=at,
                                 source=SOURCE_PUBLIC, client_tag=client_tag)
    if details.located:
        held = clips_near(db, details.window_from_us, details.window_to_us, details.lat, details.lon,
                          details.radius_m)
        why = "recorded near the place and in the window a member of the public gave (pending verification)"
    else:  # no point given: the bounded window alone (the place in words is for staff to read)
        held = clips_recorded_during(db, details.window_from_us, details.window_to_us)
        why = "recorded in the window a member of the public gave (pending verification)"
    _hold(db, request_id, held, actor=PUBLIC_ACTOR, at=at, why=why)
    return request_id, held


def _placed_or_unplaced(db: sqlite3.Connection, clip_ids: list[str], t0: int, t1: int, lat: float, lon: float,
                        radius_m: float) -> set[str]:
    """Of `clip_ids`, those a fix places within the radius during the widened window, and those with no fix."""
    lo, hi = t0 - CLOCK_MARGIN_US, t1 + CLOCK_MARGIN_US
    near = {m.clip_id for m in geoindex.search(db, lat, lon, radius_m, lo, hi)}
    located: set[str] = set()
    for i in range(0, len(clip_ids), 500):
        chunk = clip_ids[i:i + 500]
        located.update(r[0] for r in db.execute(
            f"SELECT DISTINCT clip_id FROM track_spans WHERE clip_id IN ({', '.join('?' * len(chunk))})", chunk))
    return {c for c in clip_ids if c in near or c not in located}


def clips_near(db: sqlite3.Connection, window_from_us: int, window_to_us: int, lat: float, lon: float,
               radius_m: float) -> list[str]:
    """What a pending public request holds: the clips recorded during the window (as `clips_recorded_during`)
    that a GNSS fix places within `radius_m` of the point (in the window widened by the clock margin), and
    those with no fix at all."""
    during = clips_recorded_during(db, window_from_us, window_to_us)
    keep = _placed_or_unplaced(db, during, window_from_us, window_to_us, lat, lon, radius_m)
    return [c for c in during if c in keep]


def verify_request(db: sqlite3.Connection, request_id: str, *, note: str, actor: str, at: str) -> list[str]:
    """A disclosure officer has checked who made a public request: from now on it holds by time alone,
    like a request staff logged.  Returns the clips newly held."""
    _open_request(db, request_id)
    source, verified = db.execute("SELECT source, verified_utc FROM subject_requests WHERE id = ?",
                                  (request_id,)).fetchone()
    if source != SOURCE_PUBLIC:
        raise Conflict(f"subject access request {request_id} was logged by staff; only a request from the public "
                       "page needs verifying")
    if verified is not None:
        raise Conflict(f"subject access request {request_id} was already verified at {verified}")
    if not note.strip():
        raise BadRequest("say how the requester's identity was checked")
    db.execute("UPDATE subject_requests SET verified_by = ?, verified_utc = ? WHERE id = ?", (actor, at, request_id))
    audit.append(db, actor=actor, action="request_verified", target=f"request:{request_id}",
                 detail={"how": note.strip()[:500]}, at=when(at))
    window = db.execute("SELECT window_from_us, window_to_us FROM subject_requests WHERE id = ?",
                        (request_id,)).fetchone()
    return _hold(db, request_id, clips_recorded_during(db, *window), actor=actor, at=at,
                 why="recorded in the window (request verified)")


def _hold(db: sqlite3.Connection, request_id: str, clip_ids: list[str], *, actor: str, at: str, why: str) -> list[str]:
    added = []
    for clip_id in clip_ids:
        cur = db.execute("INSERT INTO sar_holds (sar_id, clip_id, added_by, added_utc, why) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (request_id, clip_id, actor, at, why))
        if cur.rowcount:
            added.append(clip_id)
            audit.append(db, actor=actor, action="hold", target=f"clip:{clip_id}",
                         detail={"request": request_id, "why": why}, at=when(at))
    return added


def _open_request(db: sqlite3.Connection, request_id: str) -> tuple:
    row = db.execute("SELECT status, received_date, due_date FROM subject_requests WHERE id = ?",
                     (request_id,)).fetchone()
    if row is None:
        raise NotFound(f"no subject access request {request_id}")
    if row[0] == CLOSED:
        raise Conflict(f"subject access request {request_id} is closed")
    return row


def add_holds(db: sqlite3.Connection, request_id: str, clip_ids: list[str], *, actor: str, at: str,
              why: str = "added by staff") -> list[str]:
    """Hold more clips for an open request; a clip already deleted cannot be held (Conflict says when).
    A clip an interrupted sweep left in ``deleting`` is not gone yet, and is held, unless its
    shredding has begun (Conflict says so)."""
    _open_request(db, request_id)
    for clip_id in clip_ids:
        row = db.execute("SELECT state, deleted_utc, shred_begun_utc FROM clips WHERE clip_id = ?",
                         (clip_id,)).fetchone()
        if row is None:
            raise NotFound(f"no clip {clip_id} is known here")
        if row[0] == CLIP_DELETING and row[2] is not None:
            raise Conflict(f"clip {clip_id} is being deleted by the retention policy (its shredding began at "
                           f"{row[2]}) and can no longer be held")
        if not _holdable(row[0], row[2]):
            raise Conflict(f"clip {clip_id} was deleted by the retention policy ({row[0]}"
                           f"{', ' + row[1] if row[1] else ''}) before it could be held")
    return _hold(db, request_id, clip_ids, actor=actor, at=at, why=why)


def extend(db: sqlite3.Connection, request_id: str, months: int, *, reason: str, actor: str, at: str) -> date:
    """Extend a complex request by 1 or 2 months past its original due date (at most two in all)."""
    _, received, due = _open_request(db, request_id)
    if months not in (1, 2) or not reason.strip():
        raise BadRequest("an extension is 1 or 2 months and needs a reason")
    new_due = due_date(date.fromisoformat(received), months)
    if new_due <= date.fromisoformat(due):
        # A second extension must not bring the deadline forward, and two months past the first
        # month is all the law allows.
        raise Conflict(f"subject access request {request_id} is already due {due}; extending it by {months} "
                       f"month(s) from receipt would make it {new_due.isoformat()}, which is not later "
                       "(at most two months' extension in all)")
    earlier = db.execute("SELECT extension_reason FROM subject_requests WHERE id = ?", (request_id,)).fetchone()[0]
    reasons = f"{earlier}\n{reason.strip()}" if earlier else reason.strip()  # every reason given is kept
    db.execute("UPDATE subject_requests SET status = ?, due_date = ?, extension_reason = ? WHERE id = ?",
               (EXTENDED, new_due.isoformat(), reasons[:MAX_TEXT], request_id))
    audit.append(db, actor=actor, action="request_extended", target=f"request:{request_id}",
                 detail={"due": new_due.isoformat(), "months": months, "reason": reason.strip()[:500]}, at=when(at))
    return new_due


def close(db: sqlite3.Connection, request_id: str, *, outcome: str, actor: str, at: str) -> int:
    """Close a request (its holds end with it, and each clip it held gets the notice period on the due
    list again).  Returns how many clip holds were released."""
    _open_request(db, request_id)
    if not outcome.strip():
        raise BadRequest("closing a request needs an outcome (what was disclosed, or why nothing)")
    db.execute("UPDATE subject_requests SET status = ?, closed_utc = ?, closed_by = ?, outcome = ? WHERE id = ?",
               (CLOSED, at, actor, outcome.strip()[:MAX_TEXT], request_id))
    held = [r[0] for r in db.execute("SELECT clip_id FROM sar_holds WHERE sar_id = ?", (request_id,))]
    lifecycle.record_release(db, held, at)
    released = len(held)
    audit.append(db, actor=actor, action="request_closed", target=f"request:{request_id}",
                 detail={"outcome": outcome.strip()[:500], "holds_released": released}, at=when(at))
    return released


def request(db: sqlite3.Connection, request_id: str) -> dict:
    cur = db.execute("SELECT * FROM subject_requests WHERE id = ?", (request_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no subject access request {request_id}")
    out = dict(zip([d[0] for d in cur.description], row))
    out.pop("client_tag", None)  # the keyed tag of a public client is for the rate limit only
    out["pending"] = out["source"] == SOURCE_PUBLIC and out["verified_utc"] is None and out["status"] != CLOSED
    out["window_from"] = geoindex.iso_utc(out.pop("window_from_us"))
    out["window_to"] = geoindex.iso_utc(out.pop("window_to_us"))
    out["held_clips"] = [r[0] for r in db.execute(
        "SELECT clip_id FROM sar_holds WHERE sar_id = ? ORDER BY added_utc, clip_id", (request_id,))]
    out["overdue"] = is_overdue(out["status"], date.fromisoformat(out["due_date"]), today_utc())
    return out


def requests(db: sqlite3.Connection, *, status: str | None = None, overdue_on: date | None = None) -> list[dict]:
    """Requests, oldest due first; `overdue_on` keeps only those open past their due date on that day."""
    sql = "SELECT id, requester, received_date, due_date, status, source, verified_utc FROM subject_requests"
    args: list = []
    if overdue_on is not None:
        sql += " WHERE status != 'closed' AND due_date < ?"
        args.append(overdue_on.isoformat())
    elif status:
        sql += " WHERE status = ?"
        args.append(status)
    today = overdue_on or today_utc()
    return [{"id": i, "requester": who, "received_date": rec, "due_date": due, "status": st, "source": src,
             "pending": src == SOURCE_PUBLIC and verified is None and st != CLOSED,
             "overdue": is_overdue(st, date.fromisoformat(due), today)}
            for i, who, rec, due, st, src, verified in db.execute(sql + " ORDER BY due_date, id", args)]


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


__all__ = [
    "CLOCK_MARGIN_US", "CLOSED", "Candidate", "EXTENDED", "INGEST_ACTOR", "OPEN", "PUBLIC_SCHEMA", "PublicLimits",
    "RateLimited", "RequestDetails", "SCHEMA", "SOURCE_PUBLIC", "SOURCE_STAFF", "add_holds", "add_months",
    "check_public_rate", "clips_near", "clips_recorded_during", "close", "covers", "due_date", "extend",
    "find_candidates", "hold_for_open_requests", "is_overdue", "log_public_request", "log_request", "request",
    "requests", "today_utc", "verify_request",
]
