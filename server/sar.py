"""Subject access requests: a member of the public asks to see footage of themselves.

A request records who asks, when it arrived, where and when the encounter
was (a place in words, coordinates and a radius if known, a time window),
optionally the device or officer involved, and a description.  Logging it
**holds** every clip that matches at that moment, in the same transaction
(DPA 2018 s.173 makes erasing data once a request has arrived an offence),
and staff can add further clips they find.  A held clip is not deleted by
the retention sweep while the request is open or extended; closing the
request releases its holds (a clip also marked as evidence stays marked).

The response is due one calendar month after the request arrived (the ICO's
rule: the same day of the next month, or the last day of that month when it
has no such day); a complex request may be extended by up to two further
months, with a reason.  Open requests past their due date are listed as
overdue.

Candidate clips are found by overlap of the clip's recording time with the
window, narrowed by device, by officer (through the device assignments) and
by place (the GNSS index: a clip matches if one of its fixes lies within the
radius during the window).
"""

from __future__ import annotations

import calendar
import math
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timezone

from .audit_time import when
from . import audit, geoindex
from .errors import BadRequest, Conflict, NotFound
from . import lifecycle
from .lifecycle import CLIP_HELD, officer_owns_clip_sql

OPEN = "open"
EXTENDED = "extended"
CLOSED = "closed"
MAX_EXTENSION_MONTHS = 2
MAX_TEXT = 4000
MAX_WINDOW_US = 366 * 86_400 * 1_000_000  # a request names an encounter, not a year of footage

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
    # clip is longer than the longest held, which bounds the start to an index range.
    sql = ("SELECT c.clip_id, c.device_id, c.camera_start_us, c.last_utc_us FROM clips c "
           "WHERE c.state = 'held' AND c.camera_start_us BETWEEN ? AND ? AND c.last_utc_us >= ?")
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


def _next_id(db: sqlite3.Connection, received: date) -> str:
    prefix = f"SAR-{received.year}-"
    row = db.execute("SELECT MAX(CAST(SUBSTR(id, ?) AS INTEGER)) FROM subject_requests WHERE id LIKE ?",
                     (len(prefix) + 1, prefix + "%")).fetchone()
    return f"{prefix}{(row[0] or 0) + 1:05d}"


def log_request(db: sqlite3.Connection, details: RequestDetails, *, actor: str, at: str) -> tuple[str, list[str]]:
    """Record a request and hold every clip it matches now (one transaction).  Returns (id, held clips)."""
    details.check()
    request_id = _next_id(db, details.received)
    due = due_date(details.received)
    db.execute(
        "INSERT INTO subject_requests (id, requester, contact, received_date, logged_by, logged_utc, place, lat, "
        "lon, radius_m, window_from_us, window_to_us, device_id, officer, description, status, due_date) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (request_id, details.requester.strip(), details.contact.strip(), details.received.isoformat(), actor, at,
         details.place.strip(), details.lat, details.lon, details.radius_m, details.window_from_us,
         details.window_to_us, details.device_id, details.officer, details.description.strip(), OPEN,
         due.isoformat()))
    audit.append(db, actor=actor, action="request_logged", target=f"request:{request_id}",
                 detail={"received": details.received.isoformat(), "due": due.isoformat(),
                         "window": [geoindex.iso_utc(details.window_from_us), geoindex.iso_utc(details.window_to_us)],
                         "located": details.located}, at=when(at))
    found = find_candidates(db, details.window_from_us, details.window_to_us, device_id=details.device_id,
                            officer=details.officer, lat=details.lat, lon=details.lon, radius_m=details.radius_m)
    held = [c.clip_id for c in found]
    _hold(db, request_id, held, actor=actor, at=at, why="matched when the request was logged")
    return request_id, held


def _hold(db: sqlite3.Connection, request_id: str, clip_ids: list[str], *, actor: str, at: str, why: str) -> list[str]:
    added = []
    for clip_id in clip_ids:
        cur = db.execute("INSERT OR IGNORE INTO sar_holds (sar_id, clip_id, added_by, added_utc, why) "
                         "VALUES (?, ?, ?, ?, ?)", (request_id, clip_id, actor, at, why))
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
    """Hold more clips for an open request; a clip already deleted cannot be held (Conflict says when)."""
    _open_request(db, request_id)
    for clip_id in clip_ids:
        row = db.execute("SELECT state, deleted_utc FROM clips WHERE clip_id = ?", (clip_id,)).fetchone()
        if row is None:
            raise NotFound(f"no clip {clip_id} is known here")
        if row[0] != CLIP_HELD:
            raise Conflict(f"clip {clip_id} was deleted by the retention policy ({row[0]}"
                           f"{', ' + row[1] if row[1] else ''}) before it could be held")
    return _hold(db, request_id, clip_ids, actor=actor, at=at, why=why)


def extend(db: sqlite3.Connection, request_id: str, months: int, *, reason: str, actor: str, at: str) -> date:
    """Extend a complex request by 1 or 2 months past its original due date (at most two in all)."""
    _, received, _ = _open_request(db, request_id)
    if months not in (1, 2) or not reason.strip():
        raise BadRequest("an extension is 1 or 2 months and needs a reason")
    new_due = due_date(date.fromisoformat(received), months)
    db.execute("UPDATE subject_requests SET status = ?, due_date = ?, extension_reason = ? WHERE id = ?",
               (EXTENDED, new_due.isoformat(), reason.strip()[:MAX_TEXT], request_id))
    audit.append(db, actor=actor, action="request_extended", target=f"request:{request_id}",
                 detail={"due": new_due.isoformat(), "months": months, "reason": reason.strip()[:500]}, at=when(at))
    return new_due


def close(db: sqlite3.Connection, request_id: str, *, outcome: str, actor: str, at: str) -> int:
    """Close a request (its holds end with it).  Returns how many clip holds were released."""
    _open_request(db, request_id)
    if not outcome.strip():
        raise BadRequest("closing a request needs an outcome (what was disclosed, or why nothing)")
    db.execute("UPDATE subject_requests SET status = ?, closed_utc = ?, closed_by = ?, outcome = ? WHERE id = ?",
               (CLOSED, at, actor, outcome.strip()[:MAX_TEXT], request_id))
    released = db.execute("SELECT COUNT(*) FROM sar_holds WHERE sar_id = ?", (request_id,)).fetchone()[0]
    audit.append(db, actor=actor, action="request_closed", target=f"request:{request_id}",
                 detail={"outcome": outcome.strip()[:500], "holds_released": released}, at=when(at))
    return released


def request(db: sqlite3.Connection, request_id: str) -> dict:
    cur = db.execute("SELECT * FROM subject_requests WHERE id = ?", (request_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no subject access request {request_id}")
    out = dict(zip([d[0] for d in cur.description], row))
    out["window_from"] = geoindex.iso_utc(out.pop("window_from_us"))
    out["window_to"] = geoindex.iso_utc(out.pop("window_to_us"))
    out["held_clips"] = [r[0] for r in db.execute(
        "SELECT clip_id FROM sar_holds WHERE sar_id = ? ORDER BY added_utc, clip_id", (request_id,))]
    out["overdue"] = is_overdue(out["status"], date.fromisoformat(out["due_date"]), today_utc())
    return out


def requests(db: sqlite3.Connection, *, status: str | None = None, overdue_on: date | None = None) -> list[dict]:
    """Requests, oldest due first; `overdue_on` keeps only those open past their due date on that day."""
    sql = "SELECT id, requester, received_date, due_date, status FROM subject_requests"
    args: list = []
    if overdue_on is not None:
        sql += " WHERE status != 'closed' AND due_date < ?"
        args.append(overdue_on.isoformat())
    elif status:
        sql += " WHERE status = ?"
        args.append(status)
    today = overdue_on or today_utc()
    return [{"id": i, "requester": who, "received_date": rec, "due_date": due, "status": st,
             "overdue": is_overdue(st, date.fromisoformat(due), today)}
            for i, who, rec, due, st in db.execute(sql + " ORDER BY due_date, id", args)]


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


__all__ = [
    "CLOSED", "Candidate", "EXTENDED", "OPEN", "RequestDetails", "SCHEMA", "add_holds", "add_months", "close",
    "due_date", "extend", "find_candidates", "is_overdue", "log_request", "request", "requests", "today_utc",
]
