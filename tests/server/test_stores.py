"""The two seams behind the server: the blob store and the metadata store, and the chain rules."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from openbwv.sealed.chain import ChainLink
from openbwv.server.blobstore import BlobStore, LocalBlobStore
from openbwv.server.db import SCHEMA_VERSION, MetadataStore, SegmentRecord
from openbwv.server.errors import ConfigError, Conflict, ForkRejected, StoreError
from openbwv.server.ingest import place_in_chain

H1, H2 = "a1" * 32, "b2" * 32


# --------------------------------------------------------------------------- blobs
def test_blobs_are_named_by_their_hash_fanned_out_and_read_only(tmp_path):
    store = LocalBlobStore(tmp_path / "store")
    assert isinstance(store, BlobStore)
    src = tmp_path / "upload.part"
    src.write_bytes(b"segment bytes")
    store.put_file(src, H1)
    path = tmp_path / "store" / "a1" / "a1" / f"{H1}.bwv"
    assert path.read_bytes() == b"segment bytes"
    assert not src.exists()
    assert path.stat().st_mode & 0o222 == 0
    assert store.exists(H1) and store.size(H1) == 13
    with store.open(H1) as f:
        assert f.read() == b"segment bytes"
    assert store.free_bytes() > 0


def test_storing_a_blob_again_keeps_the_first_and_consumes_the_copy(tmp_path):
    store = LocalBlobStore(tmp_path / "store")
    for content in (b"first", b"second"):
        src = tmp_path / "upload.part"
        src.write_bytes(content)
        store.put_file(src, H1)
        assert not src.exists()
    with store.open(H1) as f:
        assert f.read() == b"first"


@pytest.mark.parametrize("key", ["../" * 10 + "x", H1.upper(), H1[:-1], "", H1 + "/..", "/etc/passwd"])
def test_a_blob_key_can_only_be_a_hash(tmp_path, key):
    store = LocalBlobStore(tmp_path / "store")
    with pytest.raises(StoreError):
        store.path(key)


# --------------------------------------------------------------------------- metadata
def record(h: str, sequence: int, status: str = "linked") -> SegmentRecord:
    return SegmentRecord(h, "cam-1", sequence, "00" * 32, "clip", 0, 0, 1, 100, False, status, "2026-11-25T10:00:00+00:00", "dock-1", h, "{}")


def test_the_database_is_wal_at_the_newest_schema_and_refuses_a_newer_one(tmp_path, db_engine):
    if db_engine != "sqlite":
        pytest.skip("WAL is SQLite's journal; PostgreSQL's refusal of a newer schema is in tests/store")
    path = tmp_path / "evidence.db"
    db = MetadataStore(path)
    assert db.schema_version == SCHEMA_VERSION
    db.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(ConfigError, match="newer OpenBWV"):
        MetadataStore(path)


def test_one_segment_per_device_and_sequence(metadata_url):
    db = MetadataStore(metadata_url)
    db.add_dock("dock-1", "d" * 64, "t")
    db.add_segment(record(H1, 1))
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
        db.add_segment(record(H2, 1))
    assert db.segment_at("cam-1", 1).segment_hash == H1
    with pytest.raises(Conflict):
        db.add_dock("dock-1", "e" * 64, "t")


def test_device_summaries_list_the_flagged_segments(metadata_url):
    db = MetadataStore(metadata_url)
    db.add_segment(record(H1, 1))
    db.add_segment(record(H2, 3, "gap after 1"))
    (summary,) = db.device_summaries()
    assert (summary.segments, summary.lowest, summary.highest) == (2, 1, 3)
    assert summary.flagged == [(3, "gap after 1")]


# --------------------------------------------------------------------------- chain rules
def link(sequence: int, prev: bytes, h: bytes) -> ChainLink:
    return ChainLink("cam-1", sequence, prev, h)


A, B, C, Z = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32, bytes(32)


def test_chain_placement():
    assert place_in_chain(None, link(1, Z, A), None) == ("linked", None)
    assert place_in_chain(link(1, Z, A), link(2, A, B), None) == ("linked", None)
    assert place_in_chain(link(1, Z, A), link(3, B, C), None) == ("gap after 1", None)
    assert place_in_chain(None, link(4, C, A), None) == ("gap after 0", None)
    # A late arrival fills the gap before its successor, or narrows it.
    assert place_in_chain(link(1, Z, A), link(2, A, B), link(3, B, C)) == ("linked", "linked")
    assert place_in_chain(link(1, Z, A), link(2, A, B), link(4, C, C)) == ("linked", "gap after 2")
    with pytest.raises(ForkRejected, match="does not link"):
        place_in_chain(link(1, Z, A), link(2, C, B), None)
    with pytest.raises(ForkRejected, match="different predecessor"):
        place_in_chain(link(1, Z, A), link(2, A, B), link(3, C, C))
