"""Where footage was recorded: the index of GNSS fixes, and "clips within R metres of here, then".

A segment's LOCATION records (docs/sealed-segment-format.md §7.1) are
encrypted to the server, so only the server can index them: at ingest the
records are decrypted and the segment's fixes are indexed in the transaction
that records the segment.  The schema is migration 3 in db.py (it replaced
migration 2's row and R*Tree box per fix); this module holds what is done
with it.

The index is by *span*, not by fix: a segment's track is cut, in the order
the camera took the fixes, into spans of at most `SPAN_MAX_FIXES` fixes
covering at most `SPAN_MAX_US` of GNSS time and `SPAN_MAX_DEG` of latitude
and of longitude (a ten-second segment at 1 Hz is one span).  Each span is
one row of ``track_spans``, holding its fixes packed as `FIX_RECORD`s, and
one box in the R*Tree ``track_span_rtree``: the bounding box of its fixes in
space and time.  A million ten-second segments are then a million boxes
rather than ten million (bulk-indexed in about half a minute, where the
box per fix took more than five) and a matching segment is one row read,
not ten.  The limits keep a long or fast track (a one-hour segment, a car)
from becoming one box that every search over its hour and its kilometres
has to open; a track that jumps across the antimeridian is cut there too,
since a span wider than `SPAN_MAX_DEG` never forms.

The R*Tree is a coarse filter, the answer is exact.  ``track_span_rtree`` is
an ``rtree_i32`` (integers, so nothing is rounded to a 32-bit float):
coordinates in microdegrees, time in whole seconds since 2000-01-01 (an
int32 reaches 2068), each span's box rounded outward.  The query box is the
search circle's bounding box, also rounded outward; every fix of every
candidate span is then checked against the exact time window (in µs) and the
exact distance (haversine), so a fix 1 m outside the radius or 1 µs outside
the window is never a match, whatever else shares its span.

Limits, stated rather than hidden: distances are on a sphere of the mean
Earth radius (haversine; the WGS 84 ellipsoid differs by up to 0.5 %, far
below GNSS error at the radii searched); the radius is at most
`MAX_RADIUS_M`.  A circle that crosses the antimeridian is searched as two
boxes; one that reaches a pole is searched over every longitude.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..sealed.errors import KeyFileError, SegmentError
from ..sealed.keys import ServerKeyPair
from ..sealed.layout import RECORD_LOCATION
from ..sealed.reader import KeyLookup, VerifiedSegment, decrypt_records
from .store.sql import is_postgresql

log = logging.getLogger("bwv.server.geoindex")

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG), the sphere haversine distances are on
MAX_RADIUS_M = 50_000.0
MICRO = 1_000_000
RTREE_EPOCH_US = 946_684_800 * MICRO  # 2000-01-01T00:00:00Z: seconds from here fit an int32 until 2068
_I32 = (-(2**31), 2**31 - 1)

TRACK_INDEXED = "indexed"  # at least one fix, all in the index
TRACK_NO_FIX = "no fix"  # the LOCATION records hold no fix (or there are none)
TRACK_UNREADABLE = "track unreadable"  # the records could not be decrypted or read: the segment is held regardless


# --------------------------------------------------------------------------- geometry
def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS 84 points, on a sphere of the mean radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def destination(lat: float, lon: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point `distance_m` from (lat, lon) along the initial `bearing_deg`, on the same sphere
    (the inverse of `haversine_m`; lon normalised to [-180, 180))."""
    d = distance_m / EARTH_RADIUS_M
    p1, b = math.radians(lat), math.radians(bearing_deg)
    # The destination as a unit vector (x towards the start's meridian at the equator, z north),
    # read back with atan2: asin(z) is ill-conditioned near the poles, where it put a point 1 m
    # away 1.7 µm too far, outside the circle it was meant to lie on.
    x = math.cos(d) * math.cos(p1) - math.sin(d) * math.cos(b) * math.sin(p1)
    y = math.sin(d) * math.sin(b)
    z = math.cos(d) * math.sin(p1) + math.sin(d) * math.cos(b) * math.cos(p1)
    p2, dl = math.atan2(z, math.hypot(x, y)), math.atan2(y, x)
    return math.degrees(p2), (lon + math.degrees(dl) + 540.0) % 360.0 - 180.0


@dataclass(frozen=True)
class Box:
    """A lat/lon rectangle in degrees, min <= max on both axes (never crossing the antimeridian)."""

    min_lat: float
    max_lat: float
    min_lon: float
    max_lon: float


def bounding_boxes(lat: float, lon: float, radius_m: float) -> list[Box]:
    """Boxes that together contain every point within `radius_m` of (lat, lon): one, or two when the
    circle crosses the antimeridian.  A circle reaching a pole gets every longitude."""
    # A little slack: the exact haversine check comes after, so too large is only slower.
    d = radius_m / EARTH_RADIUS_M * 1.000001
    dlat = math.degrees(d)
    lo, hi = lat - dlat, lat + dlat
    if lo <= -90.0 or hi >= 90.0 or math.cos(math.radians(lat)) <= math.sin(d):
        return [Box(max(lo, -90.0), min(hi, 90.0), -180.0, 180.0)]
    dlon = math.degrees(math.asin(math.sin(d) / math.cos(math.radians(lat))))
    west, east = lon - dlon, lon + dlon
    if west < -180.0:
        return [Box(lo, hi, west + 360.0, 180.0), Box(lo, hi, -180.0, east)]
    if east > 180.0:
        return [Box(lo, hi, west, 180.0), Box(lo, hi, -180.0, east - 360.0)]
    return [Box(lo, hi, west, east)]


def _clamp32(v: int) -> int:
    return max(_I32[0], min(_I32[1], v))


def _micro_floor(deg: float) -> int:
    return math.floor(deg * MICRO)


def _micro_ceil(deg: float) -> int:
    return math.ceil(deg * MICRO)


def _t_floor(utc_us: int) -> int:
    return _clamp32((utc_us - RTREE_EPOCH_US) // MICRO)


def _t_ceil(utc_us: int) -> int:
    return _clamp32(-((RTREE_EPOCH_US - utc_us) // MICRO))


# --------------------------------------------------------------------------- a search, checked
MAX_WINDOW = timedelta(days=31)


class QueryInvalid(ValueError):
    """A search parameter out of range or unreadable; the message says which and why."""


@dataclass(frozen=True)
class SearchQuery:
    lat: float
    lon: float
    radius_m: float
    from_utc_us: int
    to_utc_us: int

    @classmethod
    def parse(cls, lat: str | None, lon: str | None, radius_m: str | None, start: str | None,
              end: str | None) -> "SearchQuery":
        """Check every parameter as text from outside (HTTP query, command line)."""
        la = _float("lat", lat, -90.0, 90.0)
        lo = _float("lon", lon, -180.0, 180.0)
        r = _float("radius_m", radius_m, 0.0, MAX_RADIUS_M)
        if r <= 0:
            raise QueryInvalid(f"radius_m must be more than 0 metres (got {radius_m})")
        t0, t1 = parse_utc("from", start), parse_utc("to", end)
        if t1 < t0:
            raise QueryInvalid(f"'to' ({end}) is before 'from' ({start})")
        if t1 - t0 > MAX_WINDOW:
            raise QueryInvalid(f"the window from {start} to {end} is {t1 - t0}; at most {MAX_WINDOW.days} days")
        return cls(la, lo, r, to_utc_us(t0), to_utc_us(t1))


def _float(name: str, text: str | None, lo: float, hi: float) -> float:
    if text is None or not text.strip():
        raise QueryInvalid(f"{name} is missing")
    try:
        v = float(text)
    except ValueError:
        raise QueryInvalid(f"{name} {text[:40]!r} is not a number") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise QueryInvalid(f"{name} {text[:40]} is out of range: {lo:g} to {hi:g}")
    return v


def parse_utc(name: str, text: str | None) -> datetime:
    """An ISO 8601 time with its offset (Z or +hh:mm): a search must not depend on the server's zone."""
    if text is None or not text.strip():
        raise QueryInvalid(f"{name} is missing (an ISO 8601 time such as 2025-11-25T14:30:00Z)")
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryInvalid(f"{name} {text[:40]!r} is not an ISO 8601 time (e.g. 2025-11-25T14:30:00Z)") from None
    if t.tzinfo is None:
        raise QueryInvalid(f"{name} {text[:40]!r} has no time zone; add Z for UTC or an offset like +01:00")
    return t.astimezone(timezone.utc)


def to_utc_us(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * MICRO + delta.microseconds


def iso_utc(utc_us: int) -> str:
    """µs since 1970 as ISO 8601 UTC with a Z (milliseconds shown only when not whole seconds)."""
    t = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=utc_us)
    spec = "seconds" if utc_us % MICRO == 0 else "microseconds" if utc_us % 1000 else "milliseconds"
    return t.isoformat(timespec=spec).replace("+00:00", "Z")


# --------------------------------------------------------------------------- reading a segment's track
@dataclass(frozen=True)
class Fix:
    utc_us: int
    lat: float
    lon: float
    hdop: float | None = None


@dataclass(frozen=True)
class SegmentTrack:
    """What a segment's LOCATION records said: its fixes, and whether they could be read at all."""

    status: str
    fixes: tuple[Fix, ...] = ()
    note: str = ""


def parse_location_lines(text: str) -> tuple[list[Fix], list[str]]:
    """The fixes among §7.1 JSON lines, in order, and a note per line that was not understood.
    Events and ``no_fix`` lines are not places; blank (padding) lines are skipped."""
    fixes: list[Fix] = []
    problems: list[str] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
            problems.append(f"line {n}: not JSON (or nested too deeply)")
            continue
        if not isinstance(doc, dict) or "lat" not in doc:
            continue  # an event, a no_fix line, or something newer: not a place
        lat, lon, t, hdop = doc.get("lat"), doc.get("lon"), doc.get("utc_us"), doc.get("hdop")
        if not (_number(lat) and _number(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            problems.append(f"line {n}: lat/lon {_short(lat)},{_short(lon)} out of range")
            continue
        if not isinstance(t, int) or isinstance(t, bool) or not 0 < t < 2**62:
            problems.append(f"line {n}: utc_us {_short(t)} is not a time in µs")
            continue
        fixes.append(Fix(t, float(lat), float(lon), float(hdop) if _number(hdop) else None))
    return fixes, problems


def _number(v: object) -> bool:
    """A finite JSON number that fits a float64 (JSON integers are unbounded: 10**400 is one)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _short(v: object) -> str:
    """A value for a note, cut short: the note must not carry a megabyte of someone's JSON."""
    try:
        text = repr(v)
    except ValueError:  # an int too long to print (sys.int_info.str_digits_check_threshold)
        return "<a number too long to print>"
    return text if len(text) <= 40 else text[:37] + "..."


def read_track(path: Path, keys: KeyLookup, server: ServerKeyPair, *, verified: VerifiedSegment | None = None
               ) -> SegmentTrack:
    """Decrypt a verified segment's LOCATION records and parse its fixes.  Never raises: a segment
    is evidence whether or not its track can be read, so a failure is a status, not an exception."""
    try:
        text = "".join(
            payload.decode("utf-8") for rtype, payload in decrypt_records(path, keys, server, verified=verified)
            if rtype == RECORD_LOCATION
        )
    except (SegmentError, KeyFileError, UnicodeDecodeError, OSError) as e:
        return SegmentTrack(TRACK_UNREADABLE, note=f"{type(e).__name__}: {e}")
    try:
        fixes, problems = parse_location_lines(text)
    except Exception as e:  # a verified segment is held whatever its track says; never lose it to a parser
        return SegmentTrack(TRACK_UNREADABLE, note=f"the track could not be parsed: {type(e).__name__}: {e}"[:500])
    note = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
    return SegmentTrack(TRACK_INDEXED if fixes else TRACK_NO_FIX, tuple(fixes), note)


# --------------------------------------------------------------------------- the index (SQL)
FIX_RECORD = struct.Struct("<qddd")
"""One fix as packed in ``track_spans.records``: 32 bytes, little-endian, no padding —
utc_us (int64, µs since 1970, GNSS time), lat, lon (float64, WGS 84 degrees), hdop (float64;
NaN when the receiver gave none).  float64 throughout, so a fix reads back exactly as it was
parsed (lat/lon were REAL, i.e. float64, in the per-fix table this replaced, and the GPX
export shows hdop as given).  This layout is part of schema version 3: changing it is a new
migration, never an edit."""

SPAN_MAX_FIXES = 32  # a span's fixes are re-checked one by one in Python: keep that bounded
SPAN_MAX_US = 30 * MICRO  # ... and its box short in time (a one-hour segment is ~120 spans, not one hour-long box)
SPAN_MAX_DEG = 0.01  # ... and small in space: about 1.1 km of latitude (a car at 37 m/s for 30 s)
_BATCH = 10_000  # spans per executemany


def pack_fixes(fixes: Iterable[Fix]) -> bytes:
    """Fixes as consecutive `FIX_RECORD`s."""
    nan = math.nan
    return b"".join(FIX_RECORD.pack(f.utc_us, f.lat, f.lon, nan if f.hdop is None else f.hdop) for f in fixes)


def unpack_fixes(records: bytes) -> list[Fix]:
    """The inverse of `pack_fixes`."""
    return [Fix(t, lat, lon, None if math.isnan(h) else h) for t, lat, lon, h in FIX_RECORD.iter_unpack(records)]


def split_spans(fixes: Sequence[Fix]) -> Iterator[tuple[int, Sequence[Fix], tuple[int, int, int, int, int, int]]]:
    """Cut a track, in order, into spans within the `SPAN_MAX_*` limits (greedily: a span ends
    just before the fix that would take it over a limit).  Yields (index of the span's first fix
    in the track, its fixes, its R*Tree box (min_lat, max_lat, min_lon, max_lon, min_t, max_t)
    rounded outward).  Every fix is in exactly one span."""
    n = len(fixes)
    if not n:
        return
    ts, lats, lons = [f.utc_us for f in fixes], [f.lat for f in fixes], [f.lon for f in fixes]
    if (n <= SPAN_MAX_FIXES and max(ts) - min(ts) <= SPAN_MAX_US and max(lats) - min(lats) <= SPAN_MAX_DEG
            and max(lons) - min(lons) <= SPAN_MAX_DEG):  # the usual case: the whole segment is one span
        yield 0, fixes, _box(min(lats), max(lats), min(lons), max(lons), min(ts), max(ts))
        return
    start = 0
    t0 = t1 = ts[0]
    a0 = a1 = lats[0]
    o0 = o1 = lons[0]
    for i in range(1, n):
        t, a, o = ts[i], lats[i], lons[i]
        nt0, nt1, na0, na1, no0, no1 = min(t0, t), max(t1, t), min(a0, a), max(a1, a), min(o0, o), max(o1, o)
        if (i - start >= SPAN_MAX_FIXES or nt1 - nt0 > SPAN_MAX_US or na1 - na0 > SPAN_MAX_DEG
                or no1 - no0 > SPAN_MAX_DEG):
            yield start, fixes[start:i], _box(a0, a1, o0, o1, t0, t1)
            start, t0, t1, a0, a1, o0, o1 = i, t, t, a, a, o, o
        else:
            t0, t1, a0, a1, o0, o1 = nt0, nt1, na0, na1, no0, no1
    yield start, fixes[start:], _box(a0, a1, o0, o1, t0, t1)


def _box(min_lat: float, max_lat: float, min_lon: float, max_lon: float, min_t: int,
         max_t: int) -> tuple[int, int, int, int, int, int]:
    return (_micro_floor(min_lat), _micro_ceil(max_lat), _micro_floor(min_lon), _micro_ceil(max_lon),
            _t_floor(min_t), _t_ceil(max_t))


def store_track(db: sqlite3.Connection, segment_hash: str, device_id: str, clip_id: str,
                track: SegmentTrack) -> None:
    """Index a segment's fixes; call inside the transaction that records the segment."""
    db.execute("INSERT INTO segment_tracks (segment_hash, status, fixes, note) VALUES (?, ?, ?, ?)",
               (segment_hash, track.status, len(track.fixes), track.note))
    insert_tracks(db, [(segment_hash, device_id, clip_id, track.fixes)])


def insert_tracks(db: sqlite3.Connection, tracks: Iterable[tuple[str, str, str, Sequence[Fix]]]) -> int:
    """Index the fixes of many segments, (segment_hash, device_id, clip_id, fixes) each, in bulk;
    returns the number of spans written.  Only the spans and their boxes: a segment's
    ``segment_tracks`` row is `store_track`'s.  Call inside a write transaction: span ids are
    taken from the table's highest, so a concurrent writer would collide (and fail, not corrupt)."""
    first_id = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM track_spans").fetchone()[0]
    written = 0
    spans: list[tuple] = []
    boxes: list[tuple] = []
    for span, box in span_rows(tracks, first_id):
        spans.append(span)
        boxes.append(box)
        if len(spans) >= _BATCH:
            _write_spans(db, spans, boxes)
            written += len(spans)
            spans, boxes = [], []
    _write_spans(db, spans, boxes)
    return written + len(spans)


def span_rows(tracks: Iterable[tuple[str, str, str, Sequence[Fix]]], first_id: int
              ) -> Iterator[tuple[tuple[int, str, int, str, str, bytes], tuple[int, int, int, int, int, int, int]]]:
    """The rows `insert_tracks` writes, numbered from `first_id`, one pair per span: its
    ``track_spans`` row (id, segment_hash, first_fix, device_id, clip_id, records) and its
    ``track_span_rtree`` row (id, min_lat, max_lat, min_lon, max_lon, min_t, max_t).  Apart so
    that a bulk load by other means (PostgreSQL's COPY, in a benchmark or a migration) stores
    exactly what the server would, spans cut and boxes rounded by the same code."""
    next_id = first_id
    for segment_hash, device_id, clip_id, fixes in tracks:
        for first, part, box in split_spans(fixes):
            yield (next_id, segment_hash, first, device_id, clip_id, pack_fixes(part)), (next_id, *box)
            next_id += 1


SPAN_COLUMNS = ("id", "segment_hash", "first_fix", "device_id", "clip_id", "records")
BOX_COLUMNS = ("id", "min_lat", "max_lat", "min_lon", "max_lon", "min_t", "max_t")
"""The columns of a `span_rows` pair, in order: ``track_spans`` and ``track_span_rtree``."""


def _write_spans(db: sqlite3.Connection, spans: list[tuple], boxes: list[tuple]) -> None:
    db.executemany(f"INSERT INTO track_spans ({', '.join(SPAN_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", spans)
    db.executemany(f"INSERT INTO track_span_rtree ({', '.join(BOX_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)", boxes)


def stored_status(db: sqlite3.Connection, segment_hash: str) -> str | None:
    """The recorded track status of a segment inside a transaction; None when none is recorded."""
    row = db.execute("SELECT status FROM segment_tracks WHERE segment_hash = ?", (segment_hash,)).fetchone()
    return row[0] if row is not None else None


def segment_held(db: sqlite3.Connection, segment_hash: str) -> bool:
    """Whether the segment is still held, inside a transaction (the sweep may have deleted it meanwhile)."""
    return db.execute("SELECT 1 FROM segments WHERE segment_hash = ?", (segment_hash,)).fetchone() is not None


def delete_track(db: sqlite3.Connection, segment_hash: str) -> int:
    """Remove a segment's track from the index: its spans, their R*Tree boxes and its
    ``segment_tracks`` row; returns the number of spans removed (0: nothing was indexed).  Call
    inside the transaction that deletes the segment, before its ``segments`` row goes (the
    index rows refer to it)."""
    db.execute("DELETE FROM track_span_rtree WHERE id IN (SELECT id FROM track_spans WHERE segment_hash = ?)",
               (segment_hash,))
    removed = db.execute("DELETE FROM track_spans WHERE segment_hash = ?", (segment_hash,)).rowcount
    db.execute("DELETE FROM segment_tracks WHERE segment_hash = ?", (segment_hash,))
    return removed


def delete_tracks(db: sqlite3.Connection, segment_hashes: Sequence[str]) -> None:
    """`delete_track` for many segments at once: each of its three deletes as one executemany
    (pipelined on PostgreSQL, where a statement per segment would be a round trip each)."""
    if not segment_hashes:
        return
    args = [(h,) for h in segment_hashes]
    db.executemany("DELETE FROM track_span_rtree WHERE id IN (SELECT id FROM track_spans WHERE segment_hash = ?)",
                   args)
    db.executemany("DELETE FROM track_spans WHERE segment_hash = ?", args)
    db.executemany("DELETE FROM segment_tracks WHERE segment_hash = ?", args)


@dataclass
class ClipMatch:
    """A clip with fixes inside the search circle and window."""

    device_id: str
    clip_id: str
    segment_hashes: list[str] = field(default_factory=list)
    first_utc_us: int = 0
    last_utc_us: int = 0
    closest_m: float = math.inf
    fixes: int = 0

    def public(self) -> dict:
        return {
            "device_id": self.device_id,
            "clip_id": self.clip_id,
            "segment_hashes": self.segment_hashes,
            "first_utc_us": self.first_utc_us,
            "last_utc_us": self.last_utc_us,
            "closest_m": round(self.closest_m, 2),
            "matching_fixes": self.fixes,
        }


_CANDIDATES = (
    "SELECT s.id, s.segment_hash, s.device_id, s.clip_id, s.records FROM track_span_rtree r "
    "JOIN track_spans s ON s.id = r.id "
    "WHERE r.max_lat >= ? AND r.min_lat <= ? AND r.max_lon >= ? AND r.min_lon <= ? "
    "AND r.max_t >= ? AND r.min_t <= ?"
)
# On PostgreSQL track_span_rtree is a plain table with a GiST index on each span's box (lon, lat)
# (store/pg_schema.py): the overlap test (&&, touching counts) lets the planner use it; the integer
# tests stay, so the candidates are exactly SQLite's, and every fix is checked after either way.
# float8 holds every int32 exactly, so the box loses nothing of the integer microdegrees.
_CANDIDATES_PG = _CANDIDATES + (
    " AND box(point(r.min_lon, r.min_lat), point(r.max_lon, r.max_lat)) && "
    "box(point(CAST(? AS INTEGER), CAST(? AS INTEGER)), point(CAST(? AS INTEGER), CAST(? AS INTEGER)))"
)


def search(db: sqlite3.Connection, lat: float, lon: float, radius_m: float,
           from_utc_us: int, to_utc_us: int) -> list[ClipMatch]:
    """Clips with at least one fix within `radius_m` of (lat, lon) (inclusive) and with
    from_utc_us <= utc_us <= to_utc_us, ordered by first matching time; a clip's
    `segment_hashes` are in the order of their first matching fix."""
    clips: dict[tuple[str, str], ClipMatch] = {}
    first_match: dict[str, int] = {}  # segment hash -> its earliest matching fix
    seen: set[int] = set()  # a span whose box meets both boxes of an antimeridian circle is checked once
    for box in bounding_boxes(lat, lon, radius_m):
        args = (_micro_floor(box.min_lat), _micro_ceil(box.max_lat), _micro_floor(box.min_lon),
                _micro_ceil(box.max_lon), _t_floor(from_utc_us), _t_ceil(to_utc_us))
        if is_postgresql(db):
            query, args = _CANDIDATES_PG, (*args, args[2], args[0], args[3], args[1])
        else:
            query = _CANDIDATES
        for span_id, segment_hash, device_id, clip_id, records in db.execute(query, args):
            if span_id in seen:
                continue
            seen.add(span_id)
            for t, plat, plon, _hdop in FIX_RECORD.iter_unpack(records):
                if not from_utc_us <= t <= to_utc_us:
                    continue
                d = haversine_m(lat, lon, plat, plon)
                if d > radius_m:
                    continue
                m = clips.get((device_id, clip_id))
                if m is None:
                    m = clips[(device_id, clip_id)] = ClipMatch(device_id, clip_id, first_utc_us=t, last_utc_us=t)
                if segment_hash in first_match:
                    first_match[segment_hash] = min(first_match[segment_hash], t)
                else:
                    first_match[segment_hash] = t
                    m.segment_hashes.append(segment_hash)
                m.first_utc_us, m.last_utc_us = min(m.first_utc_us, t), max(m.last_utc_us, t)
                m.closest_m = min(m.closest_m, d)
                m.fixes += 1
    for m in clips.values():
        m.segment_hashes.sort(key=lambda h: (first_match[h], h))
    return sorted(clips.values(), key=lambda m: (m.first_utc_us, m.device_id, m.clip_id))


@dataclass(frozen=True)
class TrackSegment:
    """One segment of a clip, and its fixes in the order the camera took them."""

    segment_hash: str
    device_id: str
    sequence: int
    segment_index: int
    status: str | None  # None: held before the index existed
    fixes: list[Fix]


def clip_track(db: sqlite3.Connection, clip_id: str) -> list[TrackSegment]:
    """Every held segment of a clip, in segment order, with its fixes (empty: no segment held)."""
    out: list[TrackSegment] = []
    for segment_hash, device_id, sequence, index, status in db.execute(
        "SELECT s.segment_hash, s.device_id, s.sequence, s.segment_index, t.status FROM segments s "
        "LEFT JOIN segment_tracks t ON t.segment_hash = s.segment_hash "
        "WHERE s.clip_id = ? ORDER BY s.device_id, s.segment_index, s.sequence", (clip_id,)
    ).fetchall():
        fixes = [f for (records,) in db.execute(
            "SELECT records FROM track_spans WHERE segment_hash = ? ORDER BY first_fix", (segment_hash,))
            for f in unpack_fixes(records)]
        out.append(TrackSegment(segment_hash, device_id, sequence, index, status, fixes))
    return out


__all__ = [
    "BOX_COLUMNS", "Box", "ClipMatch", "EARTH_RADIUS_M", "FIX_RECORD", "Fix", "MAX_RADIUS_M", "QueryInvalid",
    "SPAN_COLUMNS", "SPAN_MAX_DEG", "SPAN_MAX_FIXES", "SPAN_MAX_US", "SearchQuery", "SegmentTrack", "TRACK_INDEXED",
    "TRACK_NO_FIX", "TRACK_UNREADABLE", "TrackSegment", "bounding_boxes", "clip_track", "delete_track", "delete_tracks",
    "destination", "haversine_m", "insert_tracks", "iso_utc", "pack_fixes", "parse_location_lines", "parse_utc",
    "read_track", "search", "span_rows", "split_spans", "store_track", "to_utc_us", "unpack_fixes",
]
