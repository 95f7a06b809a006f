"""The clip page's account of a clip's parts (ui_pages_clip.chain_of): each part held and checked on
arrival is "verified"; a part the retention sweep deleted is a "gap deleted by policy" (its tombstone
is kept); a part neither held nor deleted is "missing", and the part after it says its camera's
earlier segments never reached the server.  Real sealed segments, really ingested and swept."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from lifecycle.lifecycle_kit import UTC, Evidence
from openbwv.server.retention import RetentionPolicy
from openbwv.server.staff_api import clip_details
from openbwv.server.sweep import Sweeper
from openbwv.server.ui_pages_clip import GAP_DELETED, MISSING, VERIFIED, chain_of

RECORDED = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
POLICY = RetentionPolicy()


@pytest.fixture
def ev(tmp_path):
    e = Evidence(tmp_path / "home")
    yield e
    e.close()


def chain(ev: Evidence, clip_id: str):
    service = SimpleNamespace(config=SimpleNamespace(retention=POLICY), db=ev.db)
    db = ev.db.reader()
    return chain_of(db, clip_details(db, service, clip_id))


def test_a_part_never_received_is_missing_and_the_next_says_so(ev):
    clip = uuid.uuid4()
    ev.record("cam-1", RECORDED, clip_id=clip, index=0)
    ev.seal("cam-1", RECORDED + timedelta(seconds=10), clip_id=clip, index=1)  # sealed, never uploaded
    ev.record("cam-1", RECORDED + timedelta(seconds=20), clip_id=clip, index=2)
    rows = chain(ev, str(clip))
    assert [(r.index, r.sequence, r.status) for r in rows] == [(0, 1, VERIFIED), (1, None, MISSING), (2, 3, VERIFIED)]
    assert "never reached the server" in rows[2].note and "1 segment" in rows[2].note
    assert rows[1].start is None and "Never received" in rows[1].note


def test_parts_the_sweep_deleted_are_gaps_deleted_by_policy(ev):
    clip = uuid.uuid4()
    ev.record("cam-2", RECORDED, clip_id=clip, index=0)
    ev.record("cam-2", RECORDED + timedelta(seconds=10), clip_id=clip, index=1)
    assert [r.status for r in chain(ev, str(clip))] == [VERIFIED, VERIFIED]
    report = Sweeper(ev.db, ev.blobs, POLICY).run(now=RECORDED + timedelta(days=60))
    assert report.deleted_clips == [str(clip)]
    rows = chain(ev, str(clip))
    assert [(r.index, r.sequence, r.status) for r in rows] == [(0, 1, GAP_DELETED), (1, 2, GAP_DELETED)]
    assert all("Deleted by the retention policy on" in r.note for r in rows)


def test_a_clip_whose_first_part_is_missing_starts_with_it(ev):
    clip = uuid.uuid4()
    ev.seal("cam-3", RECORDED, clip_id=clip, index=0)
    ev.record("cam-3", RECORDED + timedelta(seconds=10), clip_id=clip, index=1)
    assert [r.status for r in chain(ev, str(clip))] == [MISSING, VERIFIED]
