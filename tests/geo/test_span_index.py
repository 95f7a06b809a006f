"""The track index by span: one R*Tree box per span of packed fixes, answers exactly those of a fix-by-fix
scan; a version 2 database (a box per fix) upgrades to it with the same answers; a segment's track can be removed."""

from __future__ import annotations

import hashlib
import math
import random
import sqlite3
from dataclasses import dataclass

import pytest

from openbwv.server.db import MIGRATIONS, SCHEMA_VERSION, MetadataStore, SegmentRecord
from openbwv.server.geoindex import (
    FIX_RECORD,
    SPAN_MAX_DEG,
    SPAN_MAX_FIXES,
    SPAN_MAX_US,
    TRACK_INDEXED,
    TRACK_NO_FIX,
    Fix,
    SegmentTrack,
    bounding_boxes,
    delete_track,
    destination,
    haversine_m,
    pack_fixes,
    split_spans,
    unpack_fixes,
)

T0 = 1_764_086_400_000_000  # 2025-11-25T16:00:00Z
S = 1_000_000
EPOCH_2000_S = 946_684_800


# --------------------------------------------------------------------------- a set of tracks, and the answer by brute force
@dataclass(frozen=True)
class Held:
    segment_hash: str
    device_id: str
    clip_id: str
    index: int
    fixes: list[Fix]


def walk(rng: random.Random, lat: float, lon: float, t: int, n: int, *, step_s: float, speed: float) -> list[Fix]:
    """n fixes, one every `step_s`, along a bearing at `speed` m/s, with hdop sometimes missing."""
    bearing = rng.random() * 360
    return [Fix(t + round(i * step_s * S), *destination(lat, lon, bearing, speed * step_s * i),
                None if i % 7 == 3 else round(rng.uniform(0.5, 3.0), 2)) for i in range(n)]


def tracks(seed: int = 20251125) -> list[Held]:
    """Clips of several devices near one another and at the antimeridian: ten-second walks, an hour-long drive
    (many spans by time and distance), a 10 Hz receiver (many spans by count), a segment without a fix."""
    rng = random.Random(seed)
    held: list[Held] = []
    n = 0

    def hold(device: str, clip: str, index: int, fixes: list[Fix]) -> None:
        nonlocal n
        n += 1
        held.append(Held(hashlib.sha256(f"{seed}-{n}".encode()).hexdigest(), device, clip, index, fixes))

    for c in range(12):
        clip, device = f"clip-{c}", f"cam-{c % 3}"
        lat, lon, t = 51.5 + rng.uniform(-0.01, 0.01), -0.12 + rng.uniform(-0.01, 0.01), T0 + rng.randrange(600) * S
        for index in range(rng.randint(1, 3)):
            hold(device, clip, index, walk(rng, lat, lon, t + index * 10 * S, 10, step_s=1, speed=1.4))
    hold("cam-car", "clip-drive", 0, walk(rng, 51.5, -0.12, T0, 3600, step_s=1, speed=15))
    hold("cam-10hz", "clip-10hz", 0, walk(rng, 51.501, -0.121, T0 + 5 * S, 200, step_s=0.1, speed=2))
    dateline = [Fix(T0 + i * S, -17.0, 179.99995 + i * 0.00002 - (360 if i >= 3 else 0), 1.0) for i in range(6)]
    hold("cam-fiji", "clip-dateline", 0, dateline)
    hold("cam-0", "clip-blind", 0, [])
    return held


def brute_force(held: list[Held], lat: float, lon: float, radius: float, t0: int, t1: int) -> list[tuple]:
    """What a search must answer, fix by fix: per clip, its segments in order of first match, first and last
    matching time, closest distance and matching fix count; clips in order of first match."""
    clips: dict[tuple[str, str], dict] = {}
    for h in held:
        for f in h.fixes:
            if not t0 <= f.utc_us <= t1:
                continue
            d = haversine_m(lat, lon, f.lat, f.lon)
            if d <= radius:
                c = clips.setdefault((h.device_id, h.clip_id), {"segs": {}, "times": [], "closest": math.inf})
                c["segs"][h.segment_hash] = min(c["segs"].get(h.segment_hash, f.utc_us), f.utc_us)
                c["times"].append(f.utc_us)
                c["closest"] = min(c["closest"], d)
    answers = [(min(c["times"]), device, clip, sorted(c["segs"], key=lambda s: (c["segs"][s], s)), max(c["times"]),
                c["closest"], len(c["times"])) for (device, clip), c in clips.items()]
    return [(device, clip, segs, first, last, closest, n)
            for first, device, clip, segs, last, closest, n in sorted(answers)]


def answers(matches) -> list[tuple]:
    return [(m.device_id, m.clip_id, m.segment_hashes, m.first_utc_us, m.last_utc_us, m.closest_m, m.fixes)
            for m in matches]


def queries(held: list[Held], count: int, seed: int = 7) -> list[tuple[float, float, float, int, int]]:
    """Searches near the fixes, a good share of them with an edge exactly on a fix: the radius at a fix's
    exact distance, the window starting or ending on a fix's time or 1 µs beside it."""
    rng = random.Random(seed)
    fixes = [f for h in held for f in h.fixes]
    out = []
    for i in range(count):
        a, b = rng.choice(fixes), rng.choice(fixes)
        lat, lon = destination(a.lat, a.lon, rng.random() * 360, rng.uniform(0, 300))
        radius = haversine_m(lat, lon, b.lat, b.lon) if i % 3 == 0 and haversine_m(lat, lon, b.lat, b.lon) > 0 \
            else rng.choice([1.0, 20.0, 150.0, 2_000.0, 50_000.0])
        radius = min(max(radius, 0.5), 50_000.0)
        t0 = a.utc_us + rng.choice([0, 1, -1, -rng.randrange(60 * S)])
        t1 = b.utc_us + rng.choice([0, 1, -1]) if i % 2 else t0 + rng.randrange(3600 * S)
        out.append((lat, lon, radius, min(t0, t1), max(t0, t1)))
    out += [(-17.0, 180.0, 10.0, T0, T0 + 10 * S), (-17.0, -179.99999, 5.0, T0, T0 + 10 * S)]
    return out


def record(h: Held) -> SegmentRecord:
    return SegmentRecord(h.segment_hash, h.device_id, int(h.segment_hash[:8], 16), "00" * 32, h.clip_id, h.index,
                         T0, T0 + 10 * S, 1000, False, "linked", "2025-11-25T16:00:00+00:00", "dock-1", "k", "{}")


def indexed(tmp_path, held: list[Held]) -> MetadataStore:
    db = MetadataStore(tmp_path / "evidence.db")
    for h in held:
        db.add_segment(record(h), track=SegmentTrack(TRACK_INDEXED if h.fixes else TRACK_NO_FIX, tuple(h.fixes)))
    return db


# --------------------------------------------------------------------------- spans
def test_a_fix_packs_into_32_bytes_and_reads_back_exactly():
    fixes = [Fix(T0 + 1, 51.50070000000001, -0.1246, 0.9), Fix(2**62 - 1, -90.0, 180.0, None), Fix(1, 0.1, 0.2, 0.0)]
    records = pack_fixes(fixes)
    assert FIX_RECORD.size == 32 and len(records) == 96
    assert unpack_fixes(records) == fixes


def test_a_ten_second_segment_is_one_span():
    fixes = walk(random.Random(1), 51.5, -0.12, T0, 10, step_s=1, speed=1.4)
    ((first, part, box),) = split_spans(fixes)
    assert first == 0 and list(part) == fixes
    assert box[4] <= (T0 // S - EPOCH_2000_S) and box[5] >= (T0 + 9 * S) // S - EPOCH_2000_S


@pytest.mark.parametrize("step_s,speed", [(1, 15), (1, 60), (0.1, 2), (5, 1)])
def test_a_long_track_is_cut_in_order_into_spans_within_the_limits(step_s, speed):
    fixes = walk(random.Random(2), 51.5, -0.12, T0, 2000, step_s=step_s, speed=speed)
    spans = list(split_spans(fixes))
    assert [f for _, part, _ in spans for f in part] == fixes
    assert [first for first, _, _ in spans] == [sum(len(p) for _, p, _ in spans[:i]) for i in range(len(spans))]
    for _, part, (min_lat, max_lat, min_lon, max_lon, min_t, max_t) in spans:
        assert 1 <= len(part) <= SPAN_MAX_FIXES
        assert max(f.utc_us for f in part) - min(f.utc_us for f in part) <= SPAN_MAX_US
        assert max(f.lat for f in part) - min(f.lat for f in part) <= SPAN_MAX_DEG
        assert max(f.lon for f in part) - min(f.lon for f in part) <= SPAN_MAX_DEG
        for f in part:  # the box holds every fix, rounded outward
            assert min_lat <= f.lat * 1e6 <= max_lat and min_lon <= f.lon * 1e6 <= max_lon
            assert min_t <= f.utc_us / S - EPOCH_2000_S <= max_t


def test_a_track_across_the_antimeridian_is_cut_there_not_boxed_round_the_world():
    fixes = [Fix(T0 + i * S, -17.0, 179.99998 + i * 0.00002 - (360 if i >= 2 else 0)) for i in range(4)]
    spans = list(split_spans(fixes))
    assert [len(part) for _, part, _ in spans] == [2, 2]
    assert all(box[3] - box[2] <= SPAN_MAX_DEG * 1e6 + 2 for _, _, box in spans)


# --------------------------------------------------------------------------- search = brute force
def test_search_answers_exactly_what_a_fix_by_fix_scan_answers(tmp_path):
    held = tracks()
    db = indexed(tmp_path, held)
    try:
        found = 0
        for q in queries(held, 400):
            expected = brute_force(held, *q)
            assert answers(db.search_tracks(*q)) == expected, q
            found += bool(expected)
        assert found > 200  # the queries do find things, so the comparison means something
    finally:
        db.close()


def test_in_one_span_a_fix_in_the_window_matches_and_its_neighbour_1_us_out_does_not(tmp_path):
    a, b = Fix(T0, 51.5, -0.12), Fix(T0 + 1, 51.5, -0.12)
    held = [Held("ab" * 32, "cam-1", "clip-1", 0, [a, b])]
    db = indexed(tmp_path, held)
    try:
        (m,) = db.search_tracks(51.5, -0.12, 1, T0 - S, T0)
        assert (m.fixes, m.first_utc_us, m.last_utc_us) == (1, T0, T0)
        assert db.search_tracks(51.5, -0.12, 1, T0 + 2, T0 + S) == []
    finally:
        db.close()


def test_clip_track_gives_every_fix_of_a_many_span_segment_in_order(tmp_path):
    held = tracks()
    db = indexed(tmp_path, held)
    try:
        for clip in ("clip-drive", "clip-10hz", "clip-dateline", "clip-0", "clip-blind"):
            mine = sorted((h for h in held if h.clip_id == clip), key=lambda h: h.index)
            got = db.clip_track(clip)
            assert [s.segment_hash for s in got] == [h.segment_hash for h in mine]
            assert [s.fixes for s in got] == [h.fixes for h in mine]
    finally:
        db.close()


# --------------------------------------------------------------------------- deleting a segment's track
def test_delete_track_removes_a_segments_spans_and_boxes_and_nothing_else(tmp_path):
    held = tracks()
    db = indexed(tmp_path, held)
    drive = next(h for h in held if h.clip_id == "clip-drive")
    q = (drive.fixes[100].lat, drive.fixes[100].lon, 50_000.0, T0, T0 + 3600 * S)
    db.close()
    raw = sqlite3.connect(tmp_path / "evidence.db", isolation_level=None)
    try:
        raw.execute("PRAGMA foreign_keys=ON")
        spans, boxes = (raw.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                        for t in ("track_spans", "track_span_rtree"))
        raw.execute("BEGIN IMMEDIATE")
        removed = delete_track(raw, drive.segment_hash)
        raw.execute("DELETE FROM segments WHERE segment_hash = ?", (drive.segment_hash,))  # nothing refers to it now
        raw.execute("COMMIT")
        assert removed == len(list(split_spans(drive.fixes))) > 100
        assert raw.execute("SELECT COUNT(*) FROM track_spans").fetchone()[0] == spans - removed
        assert raw.execute("SELECT COUNT(*) FROM track_span_rtree").fetchone()[0] == boxes - removed
        assert raw.execute("SELECT COUNT(*) FROM track_span_rtree r LEFT JOIN track_spans s ON s.id = r.id "
                           "WHERE s.id IS NULL").fetchone()[0] == 0
        raw.execute("BEGIN IMMEDIATE")
        assert delete_track(raw, drive.segment_hash) == 0  # again: nothing left, no error
        raw.execute("COMMIT")
    finally:
        raw.close()
    db = MetadataStore(tmp_path / "evidence.db")
    try:
        rest = [h for h in held if h is not drive]
        assert answers(db.search_tracks(*q)) == brute_force(rest, *q)
        assert "clip-drive" not in {m.clip_id for m in db.search_tracks(*q)} and db.clip_track("clip-drive") == []
        assert db.track_status(drive.segment_hash) is None
    finally:
        db.close()


# --------------------------------------------------------------------------- migration 3: a box per fix -> spans
_V2_CANDIDATES = (  # the search of schema version 2, as it was
    "SELECT p.segment_hash, p.device_id, p.clip_id, p.utc_us, p.lat, p.lon FROM track_rtree r "
    "JOIN track_points p ON p.id = r.id "
    "WHERE r.max_lat >= ? AND r.min_lat <= ? AND r.max_lon >= ? AND r.min_lon <= ? "
    "AND r.max_t >= ? AND r.min_t <= ? AND p.utc_us BETWEEN ? AND ?"
)


def _t_floor(utc_us: int) -> int:
    return utc_us // S - EPOCH_2000_S


def _t_ceil(utc_us: int) -> int:
    return -(-utc_us // S) - EPOCH_2000_S


def version_2_database(path, held: list[Held]) -> None:
    """A database as a server at schema version 2 left it: migrations 1 and 2, and every fix a row and a box."""
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("BEGIN")
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version (version) VALUES (2)")
        for version, sql in MIGRATIONS[:2]:
            assert version <= 2 and isinstance(sql, str)
            for statement in sql.split(";"):
                if statement.strip():
                    raw.execute(statement)
        for h in held:
            r = record(h)
            raw.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.segment_hash, r.device_id, r.sequence, r.prev_hash, r.clip_id, r.segment_index,
                         r.start_utc_us, r.end_utc_us, r.size, int(r.recovered), r.chain_status, r.received_utc,
                         r.dock, r.blob_key, r.receipt))
            raw.execute("INSERT INTO segment_tracks (segment_hash, status, fixes, note) VALUES (?, ?, ?, ?)",
                        (h.segment_hash, TRACK_INDEXED if h.fixes else TRACK_NO_FIX, len(h.fixes), ""))
            for f in h.fixes:
                cur = raw.execute("INSERT INTO track_points (segment_hash, device_id, clip_id, utc_us, lat, lon, hdop) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  (h.segment_hash, h.device_id, h.clip_id, f.utc_us, f.lat, f.lon, f.hdop))
                raw.execute("INSERT INTO track_rtree VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (cur.lastrowid, math.floor(f.lat * 1e6), math.ceil(f.lat * 1e6), math.floor(f.lon * 1e6),
                             math.ceil(f.lon * 1e6), _t_floor(f.utc_us), _t_ceil(f.utc_us)))
        raw.execute("COMMIT")
    finally:
        raw.close()


def version_2_search(raw: sqlite3.Connection, lat: float, lon: float, radius: float, t0: int, t1: int) -> list[tuple]:
    """Schema version 2's answer (its segment order was the R*Tree's, so segments are compared as sets)."""
    clips: dict[tuple[str, str], list] = {}
    for box in bounding_boxes(lat, lon, radius):
        args = (math.floor(box.min_lat * 1e6), math.ceil(box.max_lat * 1e6), math.floor(box.min_lon * 1e6),
                math.ceil(box.max_lon * 1e6), _t_floor(t0), _t_ceil(t1), t0, t1)
        for segment_hash, device_id, clip_id, t, plat, plon in raw.execute(_V2_CANDIDATES, args):
            d = haversine_m(lat, lon, plat, plon)
            if d <= radius:
                c = clips.setdefault((device_id, clip_id), [set(), t, t, math.inf, 0])
                c[0].add(segment_hash)
                c[1], c[2], c[3], c[4] = min(c[1], t), max(c[2], t), min(c[3], d), c[4] + 1
    return sorted(((device, clip, sorted(c[0]), *c[1:]) for (device, clip), c in clips.items()),
                  key=lambda a: (a[3], a[0], a[1]))


def test_a_version_2_database_upgrades_to_spans_and_answers_every_search_the_same(tmp_path):
    held = tracks()
    path = tmp_path / "evidence.db"
    version_2_database(path, held)
    searches = queries(held, 200, seed=11)
    raw = sqlite3.connect(path)
    try:
        before = [version_2_search(raw, *q) for q in searches]
    finally:
        raw.close()
    assert sum(map(bool, before)) > 100

    db = MetadataStore(path)
    try:
        assert db.schema_version == SCHEMA_VERSION
        for q, old in zip(searches, before):
            new = answers(db.search_tracks(*q))
            assert [(d, c, sorted(s), *rest) for d, c, s, *rest in new] == old, q
            assert new == brute_force(held, *q), q
        for clip in {h.clip_id for h in held}:
            mine = sorted((h for h in held if h.clip_id == clip), key=lambda h: h.index)
            got = db.clip_track(clip)
            assert [(s.segment_hash, s.status, s.fixes) for s in got] == [
                (h.segment_hash, TRACK_INDEXED if h.fixes else TRACK_NO_FIX, h.fixes) for h in mine]
        assert db.track_status(held[-2].segment_hash) == (TRACK_INDEXED, 6, "")
    finally:
        db.close()
    raw = sqlite3.connect(path)
    try:
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "track_points" not in tables and "track_rtree" not in tables
        spans = raw.execute("SELECT COUNT(*) FROM track_spans").fetchone()[0]
        assert spans == raw.execute("SELECT COUNT(*) FROM track_span_rtree").fetchone()[0]
        assert spans == sum(len(list(split_spans(h.fixes))) for h in held)
    finally:
        raw.close()


def test_a_migration_that_fails_leaves_the_database_at_version_2(tmp_path, monkeypatch):
    held = tracks()[:3]
    path = tmp_path / "evidence.db"
    version_2_database(path, held)

    def broken(db, tracks):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("openbwv.server.geoindex.insert_tracks", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        MetadataStore(path)
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT version FROM schema_version").fetchone()[0] == 2
        assert raw.execute("SELECT COUNT(*) FROM track_points").fetchone()[0] == sum(len(h.fixes) for h in held)
        assert not raw.execute("SELECT 1 FROM sqlite_master WHERE name = 'track_spans'").fetchone()
    finally:
        raw.close()
