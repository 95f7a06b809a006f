"""`bwv server reindex` and `bwv verify --held` on the fleet engines: segments held in Ceph RGW (Object Lock)
with metadata in PostgreSQL are read back through the store, and their copies removed from the work directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from geo.test_search_over_http import CENTRE, S, T0, Camera
from openbwv.enrol import create_server_keys
from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.server import geoindex
from openbwv.server.db import MetadataStore
from openbwv.server.ingest import Ingestor, SegmentClaim
from openbwv.server.s3store import S3BlobStore


def _fleet_home(tmp_path: Path, pg, rgw, bucket, monkeypatch):
    """A home on PostgreSQL + RGW holding two segments of cam-1 whose tracks are not indexed."""
    for name, value in rgw.env().items():
        monkeypatch.setenv(name, value)
    home = Home(tmp_path / "home")
    create_server_keys(home)
    db_url, blobs_url = pg.new_database(), rgw.blobs_url(bucket)
    home.config_file.write_text(f'[server]\ndb = "{db_url}"\nblobs = "{blobs_url}"\n')
    cam = Camera(home, "cam-1", tmp_path / "cam")
    segs = [cam.seal([(T0 + i * 10 * S, *CENTRE)], index=i) for i in range(2)]
    home.server_dir.mkdir(parents=True, exist_ok=True)
    db = MetadataStore(db_url, local_dir=home.server_dir)
    try:
        ing = Ingestor(db, S3BlobStore.from_url(blobs_url), DeviceRegistry(home.registry_dir),
                       ServerKeyPair.load(home.server_keys_dir))
        for seg in segs:
            ing.ingest(seg.path, SegmentClaim(seg.device_id, seg.sequence, seg.segment_hash), dock="dock-1")
        with db.transaction() as conn:  # as if held before the index existed
            for seg in segs:
                geoindex.delete_track(conn, seg.segment_hash)
        assert db.count_unindexed() == 2
    finally:
        db.close()
    return home, db_url, segs


def test_segments_held_in_s3_with_metadata_in_postgresql_are_reindexed_by_the_command(
        tmp_path: Path, pg, rgw, bucket, monkeypatch):
    home, db_url, segs = _fleet_home(tmp_path, pg, rgw, bucket, monkeypatch)
    bwv = str(Path(sys.executable).with_name("bwv"))
    env = {"BWV_HOME": str(home.root), "PATH": "/usr/bin:/bin", **rgw.env()}
    run = subprocess.run([bwv, "server", "reindex", "--batch", "1"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("2 segment(s) read: 2 indexed (2 fixes)"), run.stdout

    db = MetadataStore(db_url, local_dir=home.server_dir)
    try:
        assert db.count_unindexed() == 0
        [match] = db.search_tracks(*CENTRE, 10, T0, T0 + 20 * S)
        assert sorted(match.segment_hashes) == sorted(s.segment_hash for s in segs)
    finally:
        db.close()
    assert not list(Path("/tmp").glob("bwv-reindex-*")) or all(
        not any(p.iterdir()) for p in Path("/tmp").glob("bwv-reindex-*"))  # no decrypted-at-rest copies left


def test_a_blob_store_that_cannot_be_reached_stops_the_run_and_records_nothing(tmp_path: Path, pg, rgw, bucket):
    home = Home(tmp_path / "home")
    create_server_keys(home)
    db_url = pg.new_database()
    home.config_file.write_text(f'[server]\ndb = "{db_url}"\nblobs = "s3://{bucket}?endpoint=http://127.0.0.1:9"\n')
    MetadataStore(db_url, local_dir=home.server_dir).close()
    bwv = str(Path(sys.executable).with_name("bwv"))
    env = {"BWV_HOME": str(home.root), "PATH": "/usr/bin:/bin", **rgw.env()}
    run = subprocess.run([bwv, "server", "reindex"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "bwv server reindex:" in run.stderr and "127.0.0.1:9" in run.stderr, run.stderr


def test_verify_held_reads_every_segment_from_the_bucket_and_names_the_object_of_a_problem(
        tmp_path: Path, pg, rgw, bucket, monkeypatch):
    home, db_url, segs = _fleet_home(tmp_path, pg, rgw, bucket, monkeypatch)
    bwv = str(Path(sys.executable).with_name("bwv"))
    env = {"BWV_HOME": str(home.root), "PATH": "/usr/bin:/bin", **rgw.env()}
    run = subprocess.run([bwv, "verify", "--held", "--list"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "2 segment(s) from 1 device(s) verified; 0 problem(s)" in run.stdout
    assert f"ok  s3://{bucket}/segments/" in run.stdout

    db = MetadataStore(db_url, local_dir=home.server_dir)
    try:  # the database names a segment the bucket never had (a record copied without its blob)
        with db.transaction() as conn:
            conn.execute("UPDATE segments SET blob_key = ? WHERE segment_hash = ?", ("ab" * 32, segs[1].segment_hash))
    finally:
        db.close()
    run = subprocess.run([bwv, "verify", "--held"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert f"s3://{bucket}/segments/ab/ab/{'ab' * 32}.bwv: missing: cam-1 segment 2 is held in the database" \
        in run.stdout
