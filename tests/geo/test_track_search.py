"""Search over the track index: exact at the edge of the circle and of the window, in the real SQLite schema."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from openbwv.server.db import MetadataStore, SegmentRecord
from openbwv.server.geoindex import (
    TRACK_INDEXED,
    Fix,
    QueryInvalid,
    SearchQuery,
    SegmentTrack,
    destination,
    haversine_m,
    parse_location_lines,
)

T0 = 1_764_086_400_000_000  # 2025-11-25T16:00:00Z
S = 1_000_000


@pytest.fixture
def db(tmp_path):
    store = MetadataStore(tmp_path / "evidence.db")
    yield store
    store.close()


_n = iter(range(1, 10_000))


def hold(db: MetadataStore, fixes: list[Fix], *, device: str = "cam-1") -> SegmentRecord:
    """Record a segment with these fixes as ingest does (row and track in one transaction)."""
    n = next(_n)
    rec = SegmentRecord(hashlib.sha256(str(n).encode()).hexdigest(), device, n, "00" * 32, str(uuid.uuid4()), 0,
                        T0, T0 + 10 * S, 1000, False, "linked", "2025-11-25T16:00:00+00:00", "dock-1", "k", "{}")
    db.add_segment(rec, track=SegmentTrack(TRACK_INDEXED if fixes else "no fix", tuple(fixes)))
    return rec


CENTRES = [(51.5007, -0.1246), (-33.8568, 151.2153), (0.0, 179.9995), (64.1466, -21.9426), (0.0, 0.0)]


@pytest.mark.parametrize("lat,lon", CENTRES)
@pytest.mark.parametrize("radius", [5.0, 200.0, 50_000.0])
@pytest.mark.parametrize("bearing", [0.0, 90.0, 135.0, 270.0])
def test_a_fix_one_metre_inside_the_radius_is_found_one_metre_outside_is_not(db, lat, lon, radius, bearing):
    inside = destination(lat, lon, bearing, radius - 1)
    outside = destination(lat, lon, bearing, radius + 1)
    assert haversine_m(lat, lon, *inside) == pytest.approx(radius - 1, abs=1e-4)
    near = hold(db, [Fix(T0, *inside)])
    far = hold(db, [Fix(T0, *outside)])
    found = db.search_tracks(lat, lon, radius, T0 - S, T0 + S)
    assert [m.clip_id for m in found] == [near.clip_id]
    assert found[0].closest_m == pytest.approx(radius - 1, abs=1e-3)
    assert far.clip_id not in {m.clip_id for m in db.search_tracks(lat, lon, radius, T0 - S, T0 + S)}


def test_a_fix_exactly_on_the_centre_and_on_the_window_edges_is_found(db):
    rec = hold(db, [Fix(T0, 51.5, -0.12)])
    assert [m.clip_id for m in db.search_tracks(51.5, -0.12, 1, T0, T0)] == [rec.clip_id]


def test_the_window_is_inclusive_and_one_second_outside_is_excluded(db):
    start, end = T0, T0 + 600 * S
    at_start = hold(db, [Fix(start, 51.5, -0.12)])
    at_end = hold(db, [Fix(end, 51.5, -0.12)])
    before = hold(db, [Fix(start - S, 51.5, -0.12)])
    after = hold(db, [Fix(end + S, 51.5, -0.12)])
    found = {m.clip_id for m in db.search_tracks(51.5, -0.12, 100, start, end)}
    assert found == {at_start.clip_id, at_end.clip_id}
    assert before.clip_id not in found and after.clip_id not in found


def test_one_microsecond_outside_the_window_is_outside(db):
    # The R*Tree holds whole seconds; the exact check is in µs.
    rec = hold(db, [Fix(T0 + 500_000, 51.5, -0.12)])
    assert db.search_tracks(51.5, -0.12, 100, T0 + 500_001, T0 + 2 * S) == []
    assert db.search_tracks(51.5, -0.12, 100, T0, T0 + 499_999) == []
    assert [m.clip_id for m in db.search_tracks(51.5, -0.12, 100, T0 + 500_000, T0 + 500_000)] == [rec.clip_id]


def test_a_clip_is_reported_once_with_its_first_last_and_closest_match(db):
    lat, lon = 51.5, -0.12
    # Walking west through the centre: 300 m east of it, then 50 m closer every second.
    fixes = [Fix(T0 + i * S, *destination(lat, lon, 90, 300 - i * 50)) for i in range(10)]
    rec = hold(db, fixes)
    (m,) = db.search_tracks(lat, lon, 200, T0, T0 + 60 * S)
    assert m.clip_id == rec.clip_id and m.device_id == "cam-1" and m.segment_hashes == [rec.segment_hash]
    assert (m.first_utc_us, m.last_utc_us) == (T0 + 2 * S, T0 + 9 * S)  # 200 m east .. 150 m west
    assert m.closest_m == pytest.approx(0, abs=1e-3)
    assert m.fixes == 8


def test_a_segment_without_fixes_is_held_and_never_found(db):
    rec = hold(db, [])
    assert db.segment(rec.segment_hash) is not None
    assert db.track_status(rec.segment_hash)[0] == "no fix"
    assert db.search_tracks(0, 0, 50_000, 0, T0 * 2) == []


def test_location_lines_fixes_events_no_fix_and_padding():
    text = (
        '{"event":"fix_acquired","device_utc_us":1,"utc_us":2}\n'
        '{"utc_us":1764086400000000,"device_utc_us":1764086400051234,"lat":51.5007,"lon":-0.1246,"quality":1,'
        '"hdop":0.9}\n'
        '{"event":"fix_lost","device_utc_us":3,"reason":"receiver silent"}\n'
        '{"no_fix":true,"reason":"fix lost","from_utc_us":1,"to_utc_us":2}\n'
        '{"utc_us":1764086401000000,"lat":91,"lon":0}\n'
        'not json\n'
        + " " * 40 + "\n\n"
    )
    fixes, problems = parse_location_lines(text)
    assert fixes == [Fix(1764086400000000, 51.5007, -0.1246, 0.9)]
    assert len(problems) == 2 and "out of range" in problems[0] and "not JSON" in problems[1]


@pytest.mark.parametrize("line,words", [
    ('{"utc_us":1764086400000000,"lat":1' + "0" * 400 + ',"lon":0}', "out of range"),  # overflows a float
    ('{"utc_us":1764086400000000,"lat":51.5,"lon":0,"hdop":1' + "0" * 400 + '}', None),  # hdop unreadable: dropped
    ("[" * 100_000 + "]" * 100_000, "not JSON"),  # nested beyond the parser's stack
    ('{"utc_us":' + "9" * 4000 + ',"lat":51.5,"lon":0}', "not a time"),  # a huge integer, cut short in the note
])
def test_hostile_location_lines_are_notes_never_exceptions(line, words):
    """The track is inside a verified, signed segment, but the server must hold the segment whatever
    its track says: a line no parser should meet is a note against the track, not a failed ingest."""
    fixes, problems = parse_location_lines(line + "\n")
    if words is None:
        assert fixes == [Fix(1764086400000000, 51.5, 0.0, None)] and problems == []
    else:
        assert fixes == [] and len(problems) == 1 and words in problems[0]
        assert len(problems[0]) < 200


@pytest.mark.parametrize("args,words", [
    (("91", "0", "100", "2025-11-25T00:00:00Z", "2025-11-25T01:00:00Z"), "lat 91 is out of range"),
    (("0", "-180.5", "100", "2025-11-25T00:00:00Z", "2025-11-25T01:00:00Z"), "lon -180.5 is out of range"),
    (("0", "0", "50001", "2025-11-25T00:00:00Z", "2025-11-25T01:00:00Z"), "radius_m 50001 is out of range"),
    (("0", "0", "0", "2025-11-25T00:00:00Z", "2025-11-25T01:00:00Z"), "more than 0"),
    (("0", "0", "nan", "2025-11-25T00:00:00Z", "2025-11-25T01:00:00Z"), "out of range"),
    (("x", "0", "1", "2025-11-25T00:00:00Z", "2025-11-25T01:00:00Z"), "lat 'x' is not a number"),
    ((None, "0", "1", "2025-11-25T00:00:00Z", "2025-11-25T01:00:00Z"), "lat is missing"),
    (("0", "0", "1", "2025-11-25T00:00:00", "2025-11-25T01:00:00Z"), "no time zone"),
    (("0", "0", "1", "yesterday", "2025-11-25T01:00:00Z"), "not an ISO 8601 time"),
    (("0", "0", "1", "2025-11-25T01:00:00Z", "2025-11-25T00:00:00Z"), "before 'from'"),
    (("0", "0", "1", "2025-10-01T00:00:00Z", "2025-11-25T00:00:00Z"), "at most 31 days"),
])
def test_search_parameters_are_refused_with_a_reason(args, words):
    with pytest.raises(QueryInvalid, match=words):
        SearchQuery.parse(*args)


def test_search_times_with_an_offset_are_converted_to_utc():
    q = SearchQuery.parse("0", "0", "1", "2025-11-25T17:00:00+01:00", "2025-11-25T16:00:00.000001Z")
    assert (q.from_utc_us, q.to_utc_us) == (T0, T0 + 1)
