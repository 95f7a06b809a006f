"""Lifecycle benchmarks: the retention sweep and the subject-access search over a million clips,
on SQLite and on PostgreSQL.

A plugin of bench.py (see `load_plugins` there).  Each builds a real evidence
database with the server's own migrations (`MetadataStore`) and fills it in
bulk (not through ingest: that would measure decryption), then times the code
the server runs (`Sweeper.run`, `sar.find_candidates`).  The rows come from one
generator per benchmark (`sweep_rows`, `sar_rows`) whichever the engine, so the
SQLite and PostgreSQL figures are over the same records; SQLite is filled with
executemany and geoindex.insert_tracks, PostgreSQL with COPY (what an operator
loading a database would use), the track index through geoindex.span_rows, the
rows insert_tracks writes.  PostgreSQL 15 is started here (tests/pg_kit.py) on
loopback with fsync on, to stand beside SQLite's synchronous=FULL; the blobs stay
on local disk (LocalBlobStore) on both, so the figures differ only by engine.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from bench import Figure, Figures, _tests_module, benchmark, progress

CLIPS = int(os.environ.get("BWV_BENCH_LIFECYCLE_CLIPS", "1000000"))
DAY_US = 86_400_000_000
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc)  # the nightly run
FILL_BATCH = 50_000  # clips per batch of rows

SQLITE, POSTGRESQL = "sqlite", "postgresql"
PG_SETTING = "PostgreSQL 15 (started here on loopback, fsync on, the test kit's 64 MB shared_buffers)"

# The columns the fill writes, by table (the server's schema, migrations 1-5); "tracks" in a batch
# are (segment_hash, device_id, clip_id, fixes) for the track index, written as the server would.
COLUMNS: dict[str, tuple[str, ...]] = {
    "clips": ("clip_id", "device_id", "camera_start_us", "recorded_utc_us", "received_utc_us", "last_utc_us"),
    "segments": ("segment_hash", "device_id", "sequence", "prev_hash", "clip_id", "segment_index", "start_utc_us",
                 "end_utc_us", "size", "recovered", "chain_status", "received_utc", "dock", "blob_key", "receipt"),
    "evidence_marks": ("clip_id", "case_ref", "reason", "marked_by", "marked_utc"),
    "segment_tracks": ("segment_hash", "status", "fixes", "note"),
}
TRACKS = "tracks"
Batch = dict[str, list]  # table -> rows, in an order the foreign keys accept


def _now_us() -> int:
    return int(NOW.timestamp()) * 1_000_000


def _clip_id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


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


# --------------------------------------------------------------------------- the databases
@contextlib.contextmanager
def _evidence_database(engine: str, tmp: Path) -> Iterator[tuple[str, Path]]:
    """An empty evidence database made by the server's own migrations: (where MetadataStore opens
    it, the node's local folder).  On PostgreSQL a cluster of its own, stopped on leaving."""
    from openbwv.server.db import MetadataStore

    local = tmp / "server"
    local.mkdir()
    if engine == SQLITE:
        where = str(local / "evidence.db")
        MetadataStore(Path(where)).close()
        yield where, local
        return
    pg_kit = _tests_module("tests/pg_kit.py")
    with pg_kit.PgCluster(fsync=True) as pg:
        where = pg.new_database("bench")
        MetadataStore(where, local_dir=local).close()
        yield where, local


def _open_store(engine: str, where: str, local: Path):
    from openbwv.server.db import MetadataStore

    return MetadataStore(Path(where)) if engine == SQLITE else MetadataStore(where, local_dir=local)


def _fill(engine: str, where: str, batches: Iterable[Batch], *, then: tuple[str, ...] = ()) -> None:
    """Write every batch in one transaction, then the statements `then`; SQLite by executemany and
    insert_tracks, PostgreSQL by COPY (then VACUUM ANALYZE, as after any bulk load: the planner's
    statistics and visibility map, which autovacuum would otherwise bring a minute later)."""
    if engine == SQLITE:
        _fill_sqlite(Path(where), batches, then)
    else:
        _fill_postgresql(where, batches, then)


def _fill_sqlite(path: Path, batches: Iterable[Batch], then: tuple[str, ...]) -> None:
    from openbwv.server.geoindex import insert_tracks

    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    db.execute("BEGIN")
    for batch in batches:
        for table, rows in batch.items():
            if table == TRACKS:
                insert_tracks(db, rows)
            elif rows:
                columns = COLUMNS[table]
                db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                               f"({', '.join('?' * len(columns))})", rows)
    for statement in then:
        db.execute(statement)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _fill_postgresql(url: str, batches: Iterable[Batch], then: tuple[str, ...]) -> None:
    import psycopg

    from openbwv.server.geoindex import BOX_COLUMNS, SPAN_COLUMNS, span_rows

    with psycopg.connect(url) as conn:  # one transaction, committed on leaving
        with conn.cursor() as cur:
            next_span = cur.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM track_spans").fetchone()[0]
            for batch in batches:
                for table, rows in batch.items():
                    if table == TRACKS:
                        spans, boxes = [], []
                        for span, box in span_rows(rows, next_span):
                            spans.append(span)
                            boxes.append(box)
                        next_span += len(spans)
                        _copy(cur, "track_spans", SPAN_COLUMNS, spans)
                        _copy(cur, "track_span_rtree", BOX_COLUMNS, boxes)
                    else:
                        _copy(cur, table, COLUMNS[table], rows)
            for statement in then:
                cur.execute(statement)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _copy(cur, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if rows:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


# --------------------------------------------------------------------------- the sweep
def sweep_rows(rng: random.Random, blob_size: int, due_keys: list[str]) -> Iterator[Batch]:
    """CLIPS clip rows recorded over the 32 days before NOW, 1 % marked as evidence; the due ones
    (recorded more than 31 days ago, unmarked) get a segment row, and their blob keys are appended
    to `due_keys` (the caller writes the blobs)."""
    now = _now_us()
    due_before = now - 31 * DAY_US
    batch: Batch = {"clips": [], "segments": [], "evidence_marks": []}
    for n in range(CLIPS):
        recorded = now - rng.randrange(32 * DAY_US)
        clip_id = _clip_id(n)
        batch["clips"].append((clip_id, f"cam-{n % 5000}", recorded, recorded, recorded + 3_600_000_000,
                               recorded + 600_000_000))
        if n % 100 == 0:
            batch["evidence_marks"].append((clip_id, "CR-bench", "benchmark", "user:bench", "2026-11-01T00:00:00Z"))
        if recorded <= due_before and n % 100 != 0:
            key = f"{n:064x}"
            due_keys.append(key)
            batch["segments"].append((key, f"cam-{n % 5000}", n + 1, "00" * 32, clip_id, 0, recorded,
                                      recorded + 600_000_000, blob_size, 0, "linked", "2026-10-01T00:00:00+00:00",
                                      "dock-bench", key, "{}"))
        if len(batch["clips"]) >= FILL_BATCH:
            yield batch
            batch = {"clips": [], "segments": [], "evidence_marks": []}
    yield batch


def _sweep(engine: str) -> tuple[float, int, float]:
    """One sweep over CLIPS records on `engine`: (seconds, clips deleted, the unlink reference's seconds)."""
    from openbwv.server.blobstore import LocalBlobStore
    from openbwv.server.retention import RetentionPolicy
    from openbwv.server.sweep import Sweeper

    name = "sweep" if engine == SQLITE else "sweep_pg"
    rng = random.Random(31)
    with tempfile.TemporaryDirectory(prefix=f"bwv-bench-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        blob = _sealed_bytes(tmp)
        blobs = LocalBlobStore(tmp / "store")
        with _evidence_database(engine, tmp) as (where, local):
            progress(f"{name}: filling {CLIPS:,} clip records ({engine})")
            due_keys: list[str] = []
            started = time.perf_counter()
            _fill(engine, where, sweep_rows(rng, len(blob), due_keys))
            for key in due_keys:
                p = blobs.path(key)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(blob)
            os.sync()
            progress(f"{name}: filled in {time.perf_counter() - started:.0f} s; {len(due_keys):,} due, blobs "
                     "written; sweeping")
            store = _open_store(engine, where, local)
            try:
                started = time.perf_counter()
                report = Sweeper(store, blobs, RetentionPolicy(), batch=1000).run(now=NOW)
                took = time.perf_counter() - started
            finally:
                store.close()
        progress(f"{name}: deleted {len(report.deleted_clips):,} clips in {took:.1f} s")
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
    return took, len(report.deleted_clips), unlink_s


@benchmark(
    "sweep",
    sweep_s_1m=Figure("s", "one sweep deciding over 1,000,000 clip records (recorded over 32 days: ~1/32 due, "
                           "1% marked), crypto-shredding and tombstoning the due ones, SQLite + local disk",
                      at_most=60),
    sweep_deleted_1m=Figure("clips", "how many of them that sweep deleted"),
    sweep_unlink_s=Figure("s", "reference, same run: plain unlink of the same number of files, then one sync"),
)
def bench_sweep() -> Figures:
    took, deleted, unlink_s = _sweep(SQLITE)
    return {"sweep_s_1m": took, "sweep_deleted_1m": deleted, "sweep_unlink_s": unlink_s}


@benchmark(
    "sweep_pg",
    sweep_s_1m_pg=Figure("s", "the same sweep over the same 1,000,000 clip records in " + PG_SETTING + "; "
                              "blobs on local disk (LocalBlobStore) as on SQLite, so the figure isolates the "
                              "database engine", at_most=60),
    sweep_deleted_1m_pg=Figure("clips", "how many of them that sweep deleted"),
    sweep_unlink_s_pg=Figure("s", "reference, same run: plain unlink of the same number of files, then one sync"),
)
def bench_sweep_pg() -> Figures:
    took, deleted, unlink_s = _sweep(POSTGRESQL)
    return {"sweep_s_1m_pg": took, "sweep_deleted_1m_pg": deleted, "sweep_unlink_s_pg": unlink_s}


# --------------------------------------------------------------------------- the subject-access search
SAR_YEAR_START, SAR_YEAR_US = 1_735_689_600_000_000, 365 * DAY_US
SAR_LAT0, SAR_LON0 = 51.28, -0.49


def sar_rows(rng: random.Random, targets: list[tuple[float, float, int]]) -> Iterator[Batch]:
    """CLIPS ten-second clips over a year and a 50 x 50 km area, one segment each with a track of
    10 fixes at walking pace, and the segment's index status; every (CLIPS // 30)th clip's place
    and time is appended to `targets` (what a requester remembers of a real encounter)."""
    from openbwv.server.geoindex import TRACK_INDEXED, Fix, destination, iso_utc

    def fresh() -> Batch:
        return {"clips": [], "segments": [], "segment_tracks": [], TRACKS: []}

    batch = fresh()
    for n in range(CLIPS):
        lat, lon = SAR_LAT0 + rng.random() * 0.45, SAR_LON0 + rng.random() * 0.72
        t = SAR_YEAR_START + rng.randrange(SAR_YEAR_US)
        bearing = rng.random() * 360
        clip_id, device, key = _clip_id(n), f"cam-{n % 5000}", f"{n:064x}"
        if n % (CLIPS // 30 or 1) == 0:
            targets.append((lat, lon, t))
        batch["clips"].append((clip_id, device, t, t, t + 3_600_000_000, t + 10_000_000))
        batch["segments"].append((key, device, n + 1, "00" * 32, clip_id, 0, t, t + 10_000_000, 4096, 0, "linked",
                                  iso_utc(t + 3_600_000_000), "dock-bench", key, "{}"))
        batch["segment_tracks"].append((key, TRACK_INDEXED, 10, ""))
        batch[TRACKS].append((key, device, clip_id,
                              [Fix(t + i * 1_000_000, *destination(lat, lon, bearing, 1.4 * i), 0.9)
                               for i in range(10)]))
        if len(batch["clips"]) >= FILL_BATCH:
            yield batch
            batch = fresh()
    yield batch


def _sar_search(engine: str) -> tuple[float, float]:
    """51 searches by place and time and 51 by time alone over CLIPS clips: (median ms, median ms)."""
    from openbwv.server import sar
    from openbwv.server.geoindex import destination

    name = "sar_search" if engine == SQLITE else "sar_search_pg"
    rng = random.Random(173)
    with tempfile.TemporaryDirectory(prefix=f"bwv-bench-{name}-") as tmp_name, \
            _evidence_database(engine, Path(tmp_name)) as (where, local):
        progress(f"{name}: {CLIPS:,} clips with tracks and lifecycle records ({engine})")
        targets: list[tuple[float, float, int]] = []
        started = time.perf_counter()
        _fill(engine, where, sar_rows(rng, targets), then=("UPDATE clip_stats SET longest_us = 10000000",))
        progress(f"{name}: filled in {time.perf_counter() - started:.0f} s; searching")
        store = _open_store(engine, where, local)
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
                    lat, lon = SAR_LAT0 + rng.random() * 0.45, SAR_LON0 + rng.random() * 0.72
                    t = SAR_YEAR_START + rng.randrange(SAR_YEAR_US - DAY_US)
                started = time.perf_counter()
                found += len(sar.find_candidates(reader, t, t + 7_200_000_000, lat=lat, lon=lon, radius_m=200))
                placed.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                sar.find_candidates(reader, t, t + 7_200_000_000)
                windowed.append((time.perf_counter() - started) * 1000)
            progress(f"{name}: {found} clip(s) found by place; slowest {max(placed):.1f} ms by place, "
                     f"{max(windowed):.1f} ms by window")
        finally:
            store.close()
    return statistics.median(placed), statistics.median(windowed)


@benchmark(
    "sar_search",
    sar_search_ms_1m=Figure("ms", "median of 51 subject-access searches (200 m, a 2-hour window; half of them "
                                  "around a real clip's place and time) over 1,000,000 clips x 10 fixes with their "
                                  "lifecycle records, SQLite on local disk",
                            at_most=200),
    sar_window_search_ms_1m=Figure("ms", "median of 51 searches by time window alone (2 hours) over the same"),
)
def bench_sar_search() -> Figures:
    placed, windowed = _sar_search(SQLITE)
    return {"sar_search_ms_1m": placed, "sar_window_search_ms_1m": windowed}


@benchmark(
    "sar_search_pg",
    sar_search_ms_1m_pg=Figure("ms", "the same 51 searches over the same 1,000,000 clips x 10 fixes in "
                                     + PG_SETTING + ", the track index's GiST on span boxes", at_most=200),
    sar_window_search_ms_1m_pg=Figure("ms", "median of the same 51 searches by time window alone, same database"),
)
def bench_sar_search_pg() -> Figures:
    placed, windowed = _sar_search(POSTGRESQL)
    return {"sar_search_ms_1m_pg": placed, "sar_window_search_ms_1m_pg": windowed}
