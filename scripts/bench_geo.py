"""The `geo_search` benchmark: place-and-time search over a million indexed clips (server/geoindex.py).

A plugin of bench.py (see `load_plugins` there), kept beside the code it
measures rather than in the shared driver.
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench import Figure, Figures, benchmark, progress

GEO_CLIPS = int(os.environ.get("BWV_BENCH_GEO_CLIPS", "1000000"))
GEO_SEARCHES = 51
_YEAR_START = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
_YEAR_US = 365 * 86_400_000_000
_DAY_US = 86_400_000_000
_SOUTH_WEST = (51.28, -0.49)  # 0.45 deg lat x 0.72 deg lon from here is about 50 x 50 km


@benchmark(
    "geo_search",
    geo_search_ms_1m=Figure(
        "ms", "median of 51 searches (500 m, one day) over 1,000,000 clips x 10 fixes, SQLite on local disk",
        at_most=50),
    geo_fill_s_1m=Figure(
        "s", "making up those 1,000,000 clips (about half) and bulk-indexing them (geoindex.insert_tracks, "
        "one transaction), 2 cores",
        at_most=120),
)
def bench_geo_search() -> Figures:
    """Radius-and-window search over a year of a force's footage.

    One million clips of ten fixes each (a ten-second walk), spread over a
    50 x 50 km area and one year, bulk-indexed straight into the index tables
    of a real evidence database by `geoindex.insert_tracks` (not via ingest:
    that would measure decryption), the schema made by the server's own
    migrations.  Each search is a 500 m circle around a random point over one
    day, through `MetadataStore.search_tracks`, exact filter included.
    `BWV_BENCH_GEO_CLIPS` makes the set smaller for a quick look.
    """
    from openbwv.server.db import MetadataStore

    rng = random.Random(20251125)
    with tempfile.TemporaryDirectory(prefix="bwv-bench-geo-") as tmp:
        path = Path(tmp) / "evidence.db"
        MetadataStore(path).close()  # the schema, as the server makes it
        progress(f"geo_search: indexing {GEO_CLIPS:,} clips x 10 fixes")
        fill_s = _fill(path, rng)
        progress(f"geo_search: indexed in {fill_s:.1f} s")
        store = MetadataStore(path)
        try:
            times, found = [], 0
            lat0, lon0 = _SOUTH_WEST
            for _ in range(GEO_SEARCHES):
                lat, lon = lat0 + rng.random() * 0.45, lon0 + rng.random() * 0.72
                t = _YEAR_START + rng.randrange(_YEAR_US - _DAY_US)
                started = time.perf_counter()
                found += len(store.search_tracks(lat, lon, 500, t, t + _DAY_US))
                times.append((time.perf_counter() - started) * 1000)
            progress(f"geo_search: {found} clip(s) found in {GEO_SEARCHES} searches; "
                     f"slowest {max(times):.2f} ms")
        finally:
            store.close()
    return {"geo_search_ms_1m": statistics.median(times), "geo_fill_s_1m": fill_s}


def _fill(path: Path, rng: random.Random) -> float:
    """Make up GEO_CLIPS clips and index them in one transaction; seconds taken (both: the clips are
    streamed into the index, not held in memory).  The pragmas are for this throwaway database
    only: nothing here need survive a crash."""
    from openbwv.server.geoindex import Fix, destination, insert_tracks

    lat0, lon0 = _SOUTH_WEST

    def clips():
        for clip in range(GEO_CLIPS):
            lat, lon = lat0 + rng.random() * 0.45, lon0 + rng.random() * 0.72
            t = _YEAR_START + rng.randrange(_YEAR_US)
            bearing = rng.random() * 360
            fixes = [Fix(t + i * 1_000_000, *destination(lat, lon, bearing, 1.4 * i), 0.9) for i in range(10)]
            yield f"{clip:064x}", "cam-bench", f"clip-{clip}", fixes

    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")  # 1 GB: the R*Tree and the hash index stay in memory
        started = time.perf_counter()
        db.execute("BEGIN")
        insert_tracks(db, clips())
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return time.perf_counter() - started
    finally:
        db.close()
