"""The notice rule over real ingested footage: a clip let go by whatever kept it spends the notice
period (7 days) on the due list before the sweep can delete it, however long ago its own period ended.

Three things let a clip go: it is re-filed into a category that keeps footage for less time, its
evidence mark is lifted, or the subject access request that held it is closed.  Each is checked
across the boundary: a sweep a microsecond before the notice ends deletes nothing, one at its end
deletes the clip.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta

import pytest

from lifecycle.lifecycle_kit import UTC, Evidence, Held
from openbwv.server import audit, lifecycle, sar
from openbwv.server.db import MIGRATIONS, MetadataStore, _run_sql
from openbwv.server.geoindex import to_utc_us
from openbwv.server.retention import RetentionPolicy, due_utc_us
from openbwv.server.sweep import Sweeper

# Each test once per metadata engine: SQLite, then PostgreSQL (conftest.py).
pytestmark = pytest.mark.usefixtures("db_engine")

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOTICE_ENDS = NOW + timedelta(days=7)
JUST_BEFORE = NOTICE_ENDS - timedelta(microseconds=1)
POLICY = RetentionPolicy.from_table({"categories": {"training": 365, "complaint": 750}})


@pytest.fixture
def ev(tmp_path):
    e = Evidence(tmp_path)
    yield e
    e.close()


def write(ev: Evidence, fn):
    with ev.db.transaction() as db:
        return fn(db)


def sweep(ev: Evidence, now: datetime) -> list[str]:
    return Sweeper(ev.db, ev.blobs, POLICY).run(now=now).deleted_clips


def due_this_week(ev: Evidence) -> list[str]:
    return [c.clip_id for c in lifecycle.due_between(ev.db.reader(), POLICY, to_utc_us(NOTICE_ENDS))]


def old_clip(ev: Evidence) -> Held:
    """A clip recorded 60 days ago: its 31 days as "unmarked" ended long ago."""
    return ev.record("cam-1", NOW - timedelta(days=60))


def assert_kept_for_the_notice_then_deleted(ev: Evidence, held: Held) -> None:
    assert due_this_week(ev) == [held.clip_id]  # supervisors see it coming
    assert sweep(ev, NOW) == []
    assert sweep(ev, JUST_BEFORE) == []
    assert ev.blob_digest(held.segment_hash) is not None
    assert sweep(ev, NOTICE_ENDS) == [held.clip_id]


# --------------------------------------------------------------------------- (a) re-filed shorter
def test_a_clip_re_filed_into_a_shorter_category_after_its_period_gets_the_full_notice(ev):
    held = old_clip(ev)
    write(ev, lambda db: lifecycle.set_category(db, POLICY, held.clip_id, "training", actor="user:eve",
                                                reason="probationer training", at=(NOW - timedelta(days=50)).isoformat()))
    assert sweep(ev, NOW) == []  # training keeps it for a year
    write(ev, lambda db: lifecycle.set_category(db, POLICY, held.clip_id, "unmarked", actor="user:eve",
                                                reason="not used for training after all", at=NOW.isoformat()))
    assert_kept_for_the_notice_then_deleted(ev, held)


def test_a_clip_re_filed_into_a_longer_category_keeps_its_own_due_date(ev):
    held = ev.record("cam-1", NOW - timedelta(days=400))
    write(ev, lambda db: lifecycle.set_category(db, POLICY, held.clip_id, "training", actor="user:eve",
                                                reason="probationer training", at=(NOW - timedelta(days=395)).isoformat()))
    write(ev, lambda db: lifecycle.set_category(db, POLICY, held.clip_id, "complaint", actor="user:eve",
                                                reason="a complaint was made", at=NOW.isoformat()))
    assert lifecycle.clip(ev.db.reader(), held.clip_id).released_utc_us is None
    assert sweep(ev, NOW) == []  # 750 days: not a release, and not due


# --------------------------------------------------------------------------- (b) mark lifted
def test_a_clip_whose_evidence_mark_is_lifted_after_its_period_gets_the_full_notice(ev):
    held = old_clip(ev)
    mark = write(ev, lambda db: lifecycle.mark_evidence(db, held.clip_id, case_ref="CR-7", reason="assault",
                                                        actor="user:eve", at=(NOW - timedelta(days=55)).isoformat()))
    write(ev, lambda db: lifecycle.lift_mark(db, held.clip_id, mark, reason="no further action",
                                             actor="user:eve", at=NOW.isoformat()))
    assert_kept_for_the_notice_then_deleted(ev, held)


def test_a_clip_still_marked_by_another_case_is_not_on_the_due_list_when_one_mark_is_lifted(ev):
    held = old_clip(ev)
    first = write(ev, lambda db: lifecycle.mark_evidence(db, held.clip_id, case_ref="CR-7", reason="assault",
                                                         actor="user:eve", at=(NOW - timedelta(days=55)).isoformat()))
    write(ev, lambda db: lifecycle.mark_evidence(db, held.clip_id, case_ref="CR-8", reason="public order",
                                                 actor="user:eve", at=(NOW - timedelta(days=54)).isoformat()))
    write(ev, lambda db: lifecycle.lift_mark(db, held.clip_id, first, reason="no further action",
                                             actor="user:eve", at=NOW.isoformat()))
    assert due_this_week(ev) == []
    assert sweep(ev, NOTICE_ENDS + timedelta(days=30)) == []


# --------------------------------------------------------------------------- (c) request closed
def test_a_clip_whose_subject_access_request_closes_after_its_period_gets_the_full_notice(ev):
    held = old_clip(ev)
    start = lifecycle.clip(ev.db.reader(), held.clip_id).camera_start_us
    details = sar.RequestDetails("A. Person", "stopped in the street", date(2026, 10, 20), start - 60_000_000,
                                 start + 60_000_000)
    request_id, holding = write(ev, lambda db: sar.log_request(db, details, actor="user:dora",
                                                               at=(NOW - timedelta(days=35)).isoformat()))
    assert holding == [held.clip_id]
    write(ev, lambda db: sar.close(db, request_id, outcome="disclosed", actor="user:dora", at=NOW.isoformat()))
    assert_kept_for_the_notice_then_deleted(ev, held)


def test_the_due_list_explains_the_later_date_a_release_gives(ev):
    held = old_clip(ev)
    mark = write(ev, lambda db: lifecycle.mark_evidence(db, held.clip_id, case_ref="CR-7", reason="r",
                                                        actor="user:eve", at=(NOW - timedelta(days=55)).isoformat()))
    write(ev, lambda db: lifecycle.lift_mark(db, held.clip_id, mark, reason="nfa", actor="user:eve",
                                             at=NOW.isoformat()))
    (listed,) = lifecycle.due_between(ev.db.reader(), POLICY, to_utc_us(NOTICE_ENDS))
    assert listed.released_utc_us == to_utc_us(NOW)
    assert due_utc_us(POLICY, listed.facts()) == to_utc_us(NOTICE_ENDS)


def test_a_release_recorded_with_a_clock_that_stepped_back_cannot_shorten_the_notice(ev):
    held = old_clip(ev)
    write(ev, lambda db: lifecycle.record_release(db, [held.clip_id], NOW.isoformat()))
    write(ev, lambda db: lifecycle.record_release(db, [held.clip_id], (NOW - timedelta(days=20)).isoformat()))
    assert lifecycle.clip(ev.db.reader(), held.clip_id).released_utc_us == to_utc_us(NOW)


# --------------------------------------------------------------------------- the migration
def test_upgrading_a_database_notes_the_releases_it_already_recorded(tmp_path):
    path = tmp_path / "evidence.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    raw.execute("INSERT INTO schema_version (version) VALUES (6)")
    raw.execute("BEGIN")
    for version, migration in MIGRATIONS[:6]:
        migration(raw) if callable(migration) else _run_sql(raw, migration)
    for clip_id in ("lifted", "closed", "refiled", "untouched"):
        raw.execute("INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, received_utc_us, "
                    "last_utc_us) VALUES (?, 'cam-1', 0, 0, 0, 10)", (clip_id,))
    raw.execute("INSERT INTO evidence_marks (clip_id, case_ref, reason, marked_by, marked_utc, lifted_by, "
                "lifted_utc) VALUES ('lifted', 'CR-1', 'r', 'user:e', '2026-11-01T00:00:00+00:00', 'user:e', "
                "'2026-11-20T09:30:00.250000+00:00')")
    raw.execute("INSERT INTO subject_requests (id, requester, received_date, logged_by, logged_utc, window_from_us, "
                "window_to_us, description, status, due_date, closed_utc) VALUES ('SAR-2026-00001', 'A', "
                "'2026-10-01', 'user:d', '2026-10-01T00:00:00Z', 0, 10, 'd', 'closed', '2026-11-01', "
                "'2026-11-21T10:00:00Z')")
    raw.execute("INSERT INTO sar_holds (sar_id, clip_id, added_by, added_utc, why) "
                "VALUES ('SAR-2026-00001', 'closed', 'user:d', '2026-10-01T00:00:00Z', 'w')")
    audit.append(raw, actor="user:e", action="category_set", target="clip:refiled",
                 detail={"from": "training", "to": "unmarked", "reason": "r"},
                 at=datetime(2026, 11, 22, 8, 0, tzinfo=UTC))
    raw.execute("COMMIT")
    raw.close()

    db = MetadataStore(path)
    try:
        released = dict(db.reader().execute("SELECT clip_id, released_utc_us FROM clips"))
    finally:
        db.close()
    assert released == {
        "lifted": to_utc_us(datetime(2026, 11, 20, 9, 30, 0, 250000, tzinfo=UTC)),
        "closed": to_utc_us(datetime(2026, 11, 21, 10, 0, tzinfo=UTC)),
        "refiled": to_utc_us(datetime(2026, 11, 22, 8, 0, tzinfo=UTC)),
        "untouched": None,
    }
