"""Ingest indexes a segment's track in the segment's own transaction, and never loses a segment over its track."""

from __future__ import annotations

import logging
from pathlib import Path

from openbwv.enrol import create_server_keys
from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.server.blobstore import LocalBlobStore
from openbwv.server.db import MetadataStore
from openbwv.server.geoindex import TRACK_INDEXED, TRACK_UNREADABLE
from openbwv.server.ingest import Ingestor, SegmentClaim

from .test_search_over_http import CENTRE, S, T0, Camera


def ingestor(home: Home, server_keys: ServerKeyPair) -> Ingestor:
    db = MetadataStore(home.server_dir / "evidence.db")
    return Ingestor(db, LocalBlobStore(home.server_dir / "store"), DeviceRegistry(home.registry_dir), server_keys)


def claim(seg) -> SegmentClaim:
    return SegmentClaim(seg.device_id, seg.sequence, seg.segment_hash)


def test_a_segment_whose_track_cannot_be_decrypted_is_held_flagged_and_logged(tmp_path: Path, caplog):
    home = Home(tmp_path / "home")
    create_server_keys(home)
    seg = Camera(home, "cam-1", tmp_path / "cam").seal([(T0, *CENTRE)], index=0)
    # A server holding another key pair: the device's signature verifies, the segment key does not unwrap.
    ing = ingestor(home, ServerKeyPair.generate())
    try:
        with caplog.at_level(logging.ERROR, logger="bwv.server.ingest"):
            done = ing.ingest(seg.path, claim(seg), dock="dock-1")
        assert not done.duplicate and ing.db.segment(seg.segment_hash) is not None
        status, fixes, note = ing.db.track_status(seg.segment_hash)
        assert (status, fixes) == (TRACK_UNREADABLE, 0) and "DecryptionFailed" in note
        assert "track is unreadable" in caplog.text
        assert ing.db.search_tracks(*CENTRE, 100, T0 - S, T0 + S) == []
    finally:
        ing.db.close()


def test_a_readable_track_is_indexed_with_the_segment(tmp_path: Path):
    home = Home(tmp_path / "home")
    create_server_keys(home)
    seg = Camera(home, "cam-1", tmp_path / "cam").seal([(T0, *CENTRE), (T0 + S, *CENTRE)], index=0)
    ing = ingestor(home, ServerKeyPair.load(home.server_keys_dir))
    try:
        ing.ingest(seg.path, claim(seg), dock="dock-1")
        assert ing.db.track_status(seg.segment_hash)[:2] == (TRACK_INDEXED, 2)
        (match,) = ing.db.search_tracks(*CENTRE, 1, T0, T0)
        assert match.segment_hashes == [seg.segment_hash]
    finally:
        ing.db.close()


def test_reading_the_track_at_ingest_is_an_audited_key_use(tmp_path: Path):
    from openbwv.server import audit

    home = Home(tmp_path / "home")
    create_server_keys(home)
    seg = Camera(home, "cam-1", tmp_path / "cam").seal([(T0, *CENTRE)], index=0)
    ing = ingestor(home, ServerKeyPair.load(home.server_keys_dir))
    try:
        ing.ingest(seg.path, claim(seg), dock="dock-1")
        [use] = audit.query(ing.db.reader(), action="key_use", target=f"segment:{seg.segment_hash}")
        assert use.actor == "system:ingest" and use.details["track"] == TRACK_INDEXED and use.details["fixes"] == 1
        [upload] = audit.query(ing.db.reader(), action="upload", target=f"segment:{seg.segment_hash}")
        assert upload.seq < use.seq  # one transaction: the upload, then the key use it needed
    finally:
        ing.db.close()
