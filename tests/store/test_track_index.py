"""The track index on both engines: the same clips for the same search, exactly what a check of every
fix finds, and on PostgreSQL a GiST index the planner can use for the box."""

from __future__ import annotations

import random

from openbwv.server import geoindex
from openbwv.server.db import MetadataStore, SegmentRecord

T0 = 1_780_000_000_000_000  # 2026-05-28, microseconds


def _fill(store: MetadataStore, seed: int) -> list[tuple[str, str, geoindex.Fix]]:
    """Forty segments of random walks around Westminster; every (device, clip, fix) indexed."""
    rng = random.Random(seed)
    every = []
    for n in range(40):
        device, clip, h = f"cam-{n % 5}", f"clip-{n}", f"{n:064x}"
        lat, lon, t = 51.5 + rng.uniform(-0.01, 0.01), -0.12 + rng.uniform(-0.01, 0.01), T0 + n * 20_000_000
        fixes = []
        for _ in range(rng.randint(5, 120)):
            lat, lon, t = lat + rng.uniform(-3e-5, 3e-5), lon + rng.uniform(-3e-5, 3e-5), t + 1_000_000
            fixes.append(geoindex.Fix(t, round(lat, 7), round(lon, 7), 1.0))
        rec = SegmentRecord(h, device, n + 1, "00" * 32, clip, 0, fixes[0].utc_us, fixes[-1].utc_us, 1, False,
                            "linked", "2026-05-28T10:00:00+00:00", "dock-1", h, "{}")
        store.add_segment(rec, track=geoindex.SegmentTrack("indexed", tuple(fixes)))
        every += [(device, clip, f) for f in fixes]
    return every


def test_a_search_finds_exactly_the_clips_with_a_fix_in_the_circle_and_window(db_url: str):
    store = MetadataStore(db_url)
    try:
        every = _fill(store, seed=7)
        rng = random.Random(11)
        hits = 0
        for _ in range(25):
            lat, lon = 51.5 + rng.uniform(-0.01, 0.01), -0.12 + rng.uniform(-0.01, 0.01)
            radius = rng.uniform(5, 600)
            lo = T0 + rng.randint(0, 600) * 1_000_000
            hi = lo + rng.randint(1, 900) * 1_000_000
            found = {(m.device_id, m.clip_id): m.fixes for m in store.search_tracks(lat, lon, radius, lo, hi)}
            expected: dict[tuple[str, str], int] = {}
            for device, clip, f in every:
                if lo <= f.utc_us <= hi and geoindex.haversine_m(lat, lon, f.lat, f.lon) <= radius:
                    expected[(device, clip)] = expected.get((device, clip), 0) + 1
            assert found == expected
            hits += bool(found)
        assert hits >= 10  # most searches find something: the equality above is not of two empty answers
    finally:
        store.close()


def test_postgresql_can_answer_the_box_from_its_gist_index(pg):
    store = MetadataStore(pg.new_database())
    try:
        _fill(store, seed=3)
        db = store.reader()
        db.execute("SET enable_seqscan = off")  # 40 segments are few enough that a scan would win
        plan = "\n".join(r[0] for r in db.execute(
            "EXPLAIN " + geoindex._CANDIDATES_PG,
            (51_490_000, 51_510_000, -130_000, -110_000, 0, 2**31 - 1, -130_000, 51_490_000, -110_000, 51_510_000)))
        assert "track_span_rtree_box" in plan, plan
    finally:
        store.close()
