"""`bwv server reindex`: held segments the track index does not cover are read and indexed, once,
on either metadata engine (each test runs on SQLite and on a real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openbwv.enrol import create_server_keys
from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.server import audit, geoindex
from openbwv.server.blobstore import LocalBlobStore
from openbwv.server.db import MetadataStore
from openbwv.server.ingest import Ingestor
from openbwv.server.reindex import reindex, unindexed

from .test_ingest_track import claim
from .test_search_over_http import CENTRE, S, T0, Camera


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The metadata database of the home under test: SQLite in the home, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg").new_database()
    return f"sqlite:///{tmp_path / 'home' / 'server' / 'evidence.db'}"


def _setup(tmp_path: Path, db_url: str, *, server_keys: ServerKeyPair | None = None):
    home = Home(tmp_path / "home")
    create_server_keys(home)
    home.config_file.write_text(f'[server]\ndb = "{db_url}"\n')  # what `bwv server reindex` will open
    keys = ServerKeyPair.load(home.server_keys_dir)
    cam = Camera(home, "cam-1", tmp_path / "cam")
    segs = [cam.seal([(T0 + i * 10 * S, *CENTRE), (T0 + (i * 10 + 1) * S, *CENTRE)], index=i) for i in range(3)]
    (home.server_dir).mkdir(parents=True, exist_ok=True)
    ing = Ingestor(MetadataStore(db_url, local_dir=home.server_dir), LocalBlobStore(home.server_dir / "store"),
                   DeviceRegistry(home.registry_dir), server_keys or keys)
    for seg in segs:
        ing.ingest(seg.path, claim(seg), dock="dock-1")
    return home, keys, ing.db, segs


def _run(home: Home, db, keys: ServerKeyPair, **kw):
    return reindex(db, LocalBlobStore(home.server_dir / "store"), DeviceRegistry(home.registry_dir), keys,
                   actor="local:test", **kw)


def test_segments_held_before_the_index_existed_become_searchable_and_a_rerun_does_nothing(tmp_path, db_url):
    home, keys, db, segs = _setup(tmp_path, db_url)
    try:
        with db.transaction() as conn:  # as a database from before the index (schema version 1) would be
            for seg in segs[:2]:
                geoindex.delete_track(conn, seg.segment_hash)
        assert [r[0] for r in unindexed(db)] == sorted(s.segment_hash for s in segs[:2])
        assert len(db.search_tracks(*CENTRE, 10, T0, T0 + 30 * S)) == 1  # only the third's fixes
        assert _run(home, db, keys, dry_run=True).candidates == 2 and len(unindexed(db)) == 2

        report = _run(home, db, keys, batch=1)  # a page of one: every page is read, none twice
        assert (report.candidates, report.indexed, report.fixes, report.unreadable) == (2, 2, 4, 0)
        [match] = db.search_tracks(*CENTRE, 10, T0, T0 + 30 * S)
        assert sorted(match.segment_hashes) == sorted(s.segment_hash for s in segs) and match.fixes == 6
        uses = audit.query(db.reader(), action="key_use", actor="local:test")
        assert sorted(r.target for r in uses) == sorted(f"segment:{s.segment_hash}" for s in segs[:2])

        again = _run(home, db, keys)
        assert (again.candidates, again.indexed) == (0, 0)
        assert len(audit.query(db.reader(), action="key_use", actor="local:test")) == 2
    finally:
        db.close()


def test_tracks_unreadable_at_ingest_are_read_again_only_when_asked(tmp_path, db_url):
    home, keys, db, segs = _setup(tmp_path, db_url, server_keys=ServerKeyPair.generate())  # ingest held the wrong key
    try:
        assert all(db.track_status(s.segment_hash)[0] == geoindex.TRACK_UNREADABLE for s in segs)
        assert _run(home, db, keys).candidates == 0  # unreadable is a status, not a gap
        report = _run(home, db, keys, retry_unreadable=True)  # the right key is back
        assert (report.candidates, report.indexed, report.unreadable) == (3, 3, 0)
        assert all(db.track_status(s.segment_hash)[:2] == (geoindex.TRACK_INDEXED, 2) for s in segs)
        assert len(db.search_tracks(*CENTRE, 10, T0, T0 + 30 * S)) == 1
    finally:
        db.close()


def test_a_segment_that_still_cannot_be_read_stays_held_and_says_why(tmp_path, db_url):
    home, keys, db, segs = _setup(tmp_path, db_url)
    try:
        with db.transaction() as conn:
            geoindex.delete_track(conn, segs[0].segment_hash)
        report = _run(home, db, ServerKeyPair.generate())
        assert (report.unreadable, report.indexed) == (1, 0) and "DecryptionFailed" in report.notes[0]
        assert db.segment(segs[0].segment_hash) is not None  # evidence is held whatever its track says
        assert db.track_status(segs[0].segment_hash)[0] == geoindex.TRACK_UNREADABLE
    finally:
        db.close()


def test_bwv_server_reindex_reports_what_it_read_and_exits_zero(tmp_path, db_url):
    import os
    import subprocess
    import sys

    home, keys, db, segs = _setup(tmp_path, db_url)
    try:
        with db.transaction() as conn:
            geoindex.delete_track(conn, segs[1].segment_hash)
    finally:
        db.close()
    bwv = [str(Path(sys.executable).with_name("bwv"))]
    env = dict(os.environ, BWV_HOME=str(home.root))
    dry = subprocess.run([*bwv, "server", "reindex", "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and dry.stdout.startswith("1 held segment(s) have no indexed track"), dry.stderr
    run = subprocess.run([*bwv, "server", "reindex"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("1 segment(s) read: 1 indexed (2 fixes), 0 sealed without a fix, 0 unreadable")
