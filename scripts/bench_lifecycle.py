"""Lifecycle benchmarks: the retention sweep and the subject-access search over a million clips.

A plugin of bench.py (see `load_plugins` there).  Both build a real evidence
database with the server's own migrations and fill it in bulk (not through
ingest: that would measure decryption), then time the code the server runs.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench import Figure, Figures, benchmark, progress

CLIPS = int(os.environ.get("BWV_BENCH_LIFECYCLE_CLIPS", "1000000"))
DAY_US = 86_400_000_000
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc)  # the nightly run


def _now_us() -> int:
    return int(NOW.timestamp()) * 1_000_000


def _sealed_bytes(tmp: Path) -> bytes:
    """One small real sealed segment: the blobs of the bench are copies of it (the shred parses them)."""
    from openbwv.sealed.keys import DeviceKey, ServerKeyPair
    from openbwv.sealed.layout import RECORD_MEDIA
    from openbwv.sealed.writer import SegmentWriter

    where = tmp / "seal"
    where.mkdir()
    w = SegmentWriter(where, DeviceKey.generate("cam-bench"), ServerKeyPair.generate().public, clip_id=uuid.uuid4(),
                      segment_index=0, sequence=1, prev_hash=bytes(32), start_utc_us=_now_us(), chunk_limit=65536)
    w.append(RECORD_MEDIA, os.urandom(4000))
    return w.seal(end_utc_us=_now_us() + 10_000_000).path.read_bytes()


@benchmark(
    "sweep",
    sweep_s_1m=Figure("s", "one sweep deciding over 1,000,000 clip records (recorded over 32 days: ~1/32 due, "
                           "1% marked), crypto-shredding and tombstoning the due ones, SQLite + local disk",
                      at_most=60),
    sweep_deleted_1m=Figure("clips", "how many of them that sweep deleted"),
    sweep_unlink_s=Figure("s", "reference, same run: plain unlink of the same number of files, then one sync"),
)
def bench_sweep() -> Figures:
    from openbwv.server.blobstore import LocalBlobStore
    from openbwv.server.db import MetadataStore
    from openbwv.server.retention import RetentionPolicy
    from openbwv.server.sweep import Sweeper

    rng = random.Random(31)
    with tempfile.TemporaryDirectory(prefix="bwv-bench-sweep-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "evidence.db"
        MetadataStore(path).close()
        blob = _sealed_bytes(tmp)
        blobs = LocalBlobStore(tmp / "store")
        progress(f"sweep: filling {CLIPS:,} clip records")
        due_keys = _fill_clips(path, blobs, blob, rng)
        progress(f"sweep: {len(due_keys):,} of them due, blobs written; sweeping")
        store = MetadataStore(path)
        try:
            started = time.perf_counter()
            report = Sweeper(store, blobs, RetentionPolicy(), batch=1000).run(now=NOW)
            took = time.perf_counter() - started
        finally:
            store.close()
        progress(f"sweep: deleted {len(report.deleted_clips):,} clips in {took:.1f} s")
        # The reference: the same number of files, written the same way, simply unlinked.
        ref = tmp / "ref"
        ref.mkdir()
        files = []
        for i in range(len(due_keys)):
            p = ref / f"{i:08d}"
            p.write_bytes(blob)
            files.append(p)
        os.sync()
        started = time.perf_counter()
        for p in files:
            p.unlink()
        os.sync()  # what the sweep's blob store does once per batch (Python has no syncfs)
        unlink_s = time.perf_counter() - started
    return {"sweep_s_1m": took, "sweep_deleted_1m": len(report.deleted_clips), "sweep_unlink_s": unlink_s}


def _fill_clips(path: Path, blobs, blob: bytes, rng: random.Random) -> list[str]:
    """CLIPS clip rows recorded over the 32 days before NOW; the due ones get a segment row and a blob."""
    now = _now_us()
    due_before = now - 31 * DAY_US
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    clips, segments, marks, due_keys = [], [], [], []
    for n in range(CLIPS):
        recorded = now - rng.randrange(32 * DAY_US)
        clip_id = f"{n:08x}-0000-4000-8000-{n:012x}"
        clips.append((clip_id, f"cam-{n % 5000}", recorded, recorded, recorded + 3_600_000_000, recorded + 600_000_000))
        if n % 100 == 0:
            marks.append((clip_id, "CR-bench", "benchmark", "user:bench", "2026-11-01T00:00:00Z"))
        if recorded <= due_before and n % 100 != 0:
            key = f"{n:064x}"
            due_keys.append(key)
            segments.append((key, f"cam-{n % 5000}", n + 1, "00" * 32, clip_id, 0, recorded, recorded + 600_000_000,
                             len(blob), 0, "linked", "2026-10-01T00:00:00+00:00", "dock-bench", key, "{}"))
        if len(clips) >= 50_000:
            _flush(db, clips, segments, marks)
    _flush(db, clips, segments, marks)
    db.execute("COMMIT")
    db.close()
    for key in due_keys:
        p = blobs.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob)
    os.sync()
    return due_keys


def _flush(db, clips, segments, marks) -> None:
    db.executemany("INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, received_utc_us, "
                   "last_utc_us) VALUES (?, ?, ?, ?, ?, ?)", clips)
    db.executemany("INSERT INTO segments (segment_hash, device_id, sequence, prev_hash, clip_id, segment_index, "
                   "start_utc_us, end_utc_us, size, recovered, chain_status, received_utc, dock, blob_key, receipt) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", segments)
    db.executemany("INSERT INTO evidence_marks (clip_id, case_ref, reason, marked_by, marked_utc) "
                   "VALUES (?, ?, ?, ?, ?)", marks)
    clips.clear()
    segments.clear()
    marks.clear()


@benchmark(
    "sar_search",
    sar_search_ms_1m=Figure("ms", "median of 51 subject-access searches (200 m, a 2-hour window; half of them "
                                  "around a real clip's place and time) over 1,000,000 clips x 10 fixes with their "
                                  "lifecycle records, SQLite on local disk",
                            at_most=200),
    sar_window_search_ms_1m=Figure("ms", "median of 51 searches by time window alone (2 hours) over the same"),
)
def bench_sar_search() -> Figures:
    from openbwv.server import sar
    from openbwv.server.db import MetadataStore
    from openbwv.server.geoindex import Fix, destination, insert_tracks

    rng = random.Random(173)
    year_start, year_us = 1_735_689_600_000_000, 365 * DAY_US
    lat0, lon0 = 51.28, -0.49
    with tempfile.TemporaryDirectory(prefix="bwv-bench-sar-") as tmp:
        path = Path(tmp) / "evidence.db"
        MetadataStore(path).close()
        progress(f"sar_search: {CLIPS:,} clips with tracks and lifecycle records")
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")
        db.execute("BEGIN")
        rows = []
        targets: list[tuple[float, float, int]] = []  # where and when some clips were: a requester's memory

        def tracks():
            for n in range(CLIPS):
                lat, lon = lat0 + rng.random() * 0.45, lon0 + rng.random() * 0.72
                t = year_start + rng.randrange(year_us)
                bearing = rng.random() * 360
                clip_id = f"{n:08x}-0000-4000-8000-{n:012x}"
                if n % (CLIPS // 30 or 1) == 0:
                    targets.append((lat, lon, t))
                rows.append((clip_id, f"cam-{n % 5000}", t, t, t + 3_600_000_000, t + 10_000_000))
                if len(rows) >= 50_000:
                    db.executemany("INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, "
                                   "received_utc_us, last_utc_us) VALUES (?, ?, ?, ?, ?, ?)", rows)
                    rows.clear()
                yield (f"{n:064x}", f"cam-{n % 5000}", clip_id,
                       [Fix(t + i * 1_000_000, *destination(lat, lon, bearing, 1.4 * i), 0.9) for i in range(10)])
        insert_tracks(db, tracks())
        db.executemany("INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, received_utc_us, "
                       "last_utc_us) VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("UPDATE clip_stats SET longest_us = 10000000")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        store = MetadataStore(path)
        try:
            reader = store.reader()
            placed, windowed, found = [], [], 0
            for i in range(51):
                if i % 2 == 0 and targets:
                    # Half the requests are about a real encounter: about there (within 100 m), about then.
                    lat, lon, when = targets[(i // 2) % len(targets)]
                    lat, lon = destination(lat, lon, rng.random() * 360, rng.random() * 100)
                    t = when - rng.randrange(7_200_000_000 - 20_000_000)
                else:  # ... the other half find nothing, as a request about someone never filmed would
                    lat, lon = lat0 + rng.random() * 0.45, lon0 + rng.random() * 0.72
                    t = year_start + rng.randrange(year_us - DAY_US)
                started = time.perf_counter()
                found += len(sar.find_candidates(reader, t, t + 7_200_000_000, lat=lat, lon=lon, radius_m=200))
                placed.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                sar.find_candidates(reader, t, t + 7_200_000_000)
                windowed.append((time.perf_counter() - started) * 1000)
            progress(f"sar_search: {found} clip(s) found by place; slowest {max(placed):.1f} ms")
        finally:
            store.close()
    return {"sar_search_ms_1m": statistics.median(placed), "sar_window_search_ms_1m": statistics.median(windowed)}
