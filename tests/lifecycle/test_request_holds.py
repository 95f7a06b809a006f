"""What a subject access request holds (server/sar.py): every clip recorded during its window.

DPA 2018 s.173 makes erasing data once a request has arrived an offence, so a hold is decided by
time alone: every device, whether or not a GNSS fix places the clip, however many clips there are,
and whether the clip was docked before the request was logged or after.  The place, device and
officer the requester names narrow only the search staff use to choose what to export.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from lifecycle.lifecycle_kit import UTC, Evidence, Held
from openbwv.server import audit, lifecycle, sar
from openbwv.server.db import MetadataStore, SegmentRecord
from openbwv.server.geoindex import iso_utc, to_utc_us
from openbwv.server.retention import RetentionPolicy
from openbwv.server.sweep import Sweeper

# Each test once per metadata engine: SQLite, then PostgreSQL (conftest.py).
pytestmark = pytest.mark.usefixtures("db_engine")

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW_FROM = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW_TO = WINDOW_FROM + timedelta(hours=1)
MARGIN = timedelta(microseconds=sar.CLOCK_MARGIN_US)
CLIP_LENGTH = timedelta(seconds=10)  # what lifecycle_kit seals
US = timedelta(microseconds=1)
POLICY = RetentionPolicy()


@pytest.fixture
def ev(tmp_path):
    e = Evidence(tmp_path)
    yield e
    e.close()


def write(ev: Evidence, fn):
    with ev.db.transaction() as db:
        return fn(db)


def request_details(**kw) -> sar.RequestDetails:
    return sar.RequestDetails("A. Person", "stopped and searched outside the station", date(2026, 11, 24),
                              to_utc_us(WINDOW_FROM), to_utc_us(WINDOW_TO), **kw)


def log(ev: Evidence, **kw) -> tuple[str, list[str]]:
    return write(ev, lambda db: sar.log_request(db, request_details(**kw), actor="user:dora", at=NOW.isoformat()))


def holding(ev: Evidence, request_id: str) -> list[str]:
    return sar.request(ev.db.reader(), request_id)["held_clips"]


def in_window(ev: Evidence, device_id: str, *, minutes: int = 20, received: datetime | None = None) -> Held:
    return ev.record(device_id, WINDOW_FROM + timedelta(minutes=minutes),
                     received=received or WINDOW_TO + timedelta(hours=6))


# --------------------------------------------------------------------------- when the request is logged
def test_a_request_holds_a_clip_in_its_window_that_no_gnss_fix_places(ev):
    unplaced = in_window(ev, "cam-1")  # sealed without a track: no fix, anywhere
    request_id, held = log(ev, place="outside the station", lat=51.5, lon=-0.12, radius_m=100)
    assert held == [unplaced.clip_id]
    assert sar.find_candidates(ev.db.reader(), to_utc_us(WINDOW_FROM), to_utc_us(WINDOW_TO),
                               lat=51.5, lon=-0.12, radius_m=100) == []  # the place narrows the search only
    assert Sweeper(ev.db, ev.blobs, POLICY).run(now=NOW + timedelta(days=60)).deleted_clips == []


def test_a_request_holds_clips_of_every_device_whatever_device_or_officer_it_names(ev):
    worn = in_window(ev, "cam-1", minutes=5)
    nearby = in_window(ev, "cam-2", minutes=40)
    elsewhere_in_time = ev.record("cam-3", WINDOW_TO + timedelta(days=1))
    from openbwv.server import users

    write(ev, lambda db: users.add_user(db, "pc-smith", users.OFFICER, "a long enough passphrase", actor="user:admin"))
    write(ev, lambda db: lifecycle.assign_device(db, "cam-1", "pc-smith", to_utc_us(WINDOW_FROM) - 3_600_000_000,
                                                 None, actor="user:admin", at=NOW.isoformat()))
    request_id, held = log(ev, device_id="cam-1", officer="pc-smith")
    assert set(held) == {worn.clip_id, nearby.clip_id}
    assert elsewhere_in_time.clip_id not in holding(ev, request_id)
    search = sar.find_candidates(ev.db.reader(), to_utc_us(WINDOW_FROM), to_utc_us(WINDOW_TO), device_id="cam-1",
                                 officer="pc-smith")
    assert [c.clip_id for c in search] == [worn.clip_id]


def test_a_request_holds_every_clip_in_its_window_however_many(ev):
    many = 5_050  # more than the candidate search ever lists
    start = to_utc_us(WINDOW_FROM)
    with ev.db.transaction() as db:
        for n in range(many):
            lifecycle.record_segment(db, f"clip-{n:05d}", f"cam-{n % 50}", start + n * 500_000,
                                     start + n * 500_000 + 10_000_000, start + 86_400_000_000)
    request_id, held = log(ev)
    assert len(held) == many
    assert len(holding(ev, request_id)) == many
    assert len(audit.query(ev.db.reader(), action="hold", limit=10_000)) == many


def test_a_clip_an_interrupted_sweep_left_deleting_is_held_and_the_sweep_can_ask(ev):
    caught = in_window(ev, "cam-1")
    write(ev, lambda db: db.execute("UPDATE clips SET state = 'deleting', sweep_id = 'sweep-killed' "
                                    "WHERE clip_id = ?", (caught.clip_id,)))  # what a SIGKILL leaves
    assert not lifecycle.is_held(ev.db.reader(), caught.clip_id)
    request_id, held = log(ev)
    assert held == [caught.clip_id]
    assert lifecycle.is_held(ev.db.reader(), caught.clip_id)


def test_staff_can_add_a_clip_an_interrupted_sweep_left_deleting(ev):
    request_id, _ = log(ev)
    outside = ev.record("cam-1", WINDOW_TO + timedelta(days=2))
    write(ev, lambda db: db.execute("UPDATE clips SET state = 'deleting', sweep_id = 'sweep-killed' "
                                    "WHERE clip_id = ?", (outside.clip_id,)))
    added = write(ev, lambda db: sar.add_holds(db, request_id, [outside.clip_id], actor="user:dora",
                                               at=NOW.isoformat(), why="the requester says they were there later"))
    assert added == [outside.clip_id] and lifecycle.is_held(ev.db.reader(), outside.clip_id)


def test_is_held_counts_an_evidence_mark_and_forgets_a_closed_request(ev):
    marked, requested = in_window(ev, "cam-1"), ev.record("cam-2", WINDOW_TO + timedelta(days=3))
    write(ev, lambda db: lifecycle.mark_evidence(db, marked.clip_id, case_ref="CR-1", reason="r", actor="user:eve",
                                                 at=NOW.isoformat()))
    request_id, _ = write(ev, lambda db: sar.log_request(db, sar.RequestDetails(
        "B. Person", "d", date(2026, 11, 24), to_utc_us(WINDOW_TO + timedelta(days=3)),
        to_utc_us(WINDOW_TO + timedelta(days=3, minutes=5))), actor="user:dora", at=NOW.isoformat()))
    assert lifecycle.is_held(ev.db.reader(), marked.clip_id) and lifecycle.is_held(ev.db.reader(), requested.clip_id)
    write(ev, lambda db: sar.close(db, request_id, outcome="disclosed", actor="user:dora", at=NOW.isoformat()))
    assert not lifecycle.is_held(ev.db.reader(), requested.clip_id)


# --------------------------------------------------------------------------- docked after the request
def test_a_clip_docked_after_the_request_is_held_by_it(ev):
    request_id, held = log(ev)
    assert held == []
    late = in_window(ev, "cam-7", received=NOW + timedelta(days=3))  # the camera sat in a locker
    assert holding(ev, request_id) == [late.clip_id]
    (record,) = audit.query(ev.db.reader(), action="hold", target=f"clip:{late.clip_id}")
    assert record.actor == sar.INGEST_ACTOR and f'"request":"{request_id}"' in record.detail.replace(" ", "")
    assert Sweeper(ev.db, ev.blobs, POLICY).run(now=NOW + timedelta(days=90)).deleted_clips == []
    assert ev.blob_digest(late.segment_hash) is not None


def test_a_late_segment_of_a_clip_already_held_adds_no_second_hold(ev):
    clip = uuid.uuid4()
    first = ev.record("cam-1", WINDOW_FROM + timedelta(minutes=1), clip_id=clip, received=NOW)
    request_id, _ = log(ev)
    ev.record("cam-1", WINDOW_FROM + timedelta(minutes=1, seconds=10), clip_id=clip, index=1,
              received=NOW + timedelta(days=1))
    assert holding(ev, request_id) == [first.clip_id]
    assert len(audit.query(ev.db.reader(), action="hold", target=f"clip:{first.clip_id}")) == 1


def test_a_clip_docked_while_the_request_is_extended_is_held_by_it(ev):
    request_id, _ = log(ev)
    write(ev, lambda db: sar.extend(db, request_id, 2, reason="complex: many officers", actor="user:dora",
                                    at=NOW.isoformat()))
    late = in_window(ev, "cam-7", received=NOW + timedelta(days=40))
    assert holding(ev, request_id) == [late.clip_id]


def test_a_clip_docked_after_the_request_was_closed_is_not_held(ev):
    request_id, _ = log(ev)
    write(ev, lambda db: sar.close(db, request_id, outcome="nothing held", actor="user:dora", at=NOW.isoformat()))
    late = in_window(ev, "cam-7", received=NOW + timedelta(days=3))
    assert holding(ev, request_id) == []
    assert not lifecycle.is_held(ev.db.reader(), late.clip_id)


def test_a_clip_docked_after_the_request_outside_its_window_is_not_held(ev):
    request_id, _ = log(ev)
    ev.record("cam-7", WINDOW_TO + timedelta(days=1), received=NOW + timedelta(days=3))
    assert holding(ev, request_id) == []


# --------------------------------------------------------------------------- clocks: the margin
EDGES = [
    pytest.param(WINDOW_FROM - MARGIN - CLIP_LENGTH, True, id="ends-at-the-margin-before"),
    pytest.param(WINDOW_FROM - MARGIN - CLIP_LENGTH - US, False, id="ends-a-microsecond-earlier"),
    pytest.param(WINDOW_TO + MARGIN, True, id="starts-at-the-margin-after"),
    pytest.param(WINDOW_TO + MARGIN + US, False, id="starts-a-microsecond-later"),
]


@pytest.mark.parametrize("recorded, held", EDGES)
def test_a_request_logged_after_the_clip_holds_it_within_the_clock_margin(ev, recorded, held):
    clip = ev.record("cam-1", recorded, received=WINDOW_TO + timedelta(days=1))
    _, holds = log(ev)
    assert (clip.clip_id in holds) is held


@pytest.mark.parametrize("recorded, held", EDGES)
def test_a_clip_docked_after_the_request_is_held_within_the_same_clock_margin(ev, recorded, held):
    request_id, _ = log(ev)
    clip = ev.record("cam-1", recorded, received=NOW + timedelta(days=1))
    assert (clip.clip_id in holding(ev, request_id)) is held


def test_a_camera_clock_running_ahead_is_held_when_it_docked_within_the_margin(ev):
    # Recorded at 10:30 with a clock six hours fast (it says 16:30); docked at 12:30.
    ahead = ev.record("cam-1", WINDOW_FROM + timedelta(hours=6, minutes=30),
                      received=WINDOW_TO + timedelta(hours=1, minutes=30))
    request_id, held = log(ev)
    assert held == [ahead.clip_id]
    docked_later = ev.record("cam-2", WINDOW_FROM + timedelta(hours=6, minutes=30),
                             received=WINDOW_TO + timedelta(hours=1, minutes=45))
    assert docked_later.clip_id in holding(ev, request_id)


# --------------------------------------------------------------------------- one rule, either order
HOUR_US = 3_600_000_000


@settings(max_examples=60, deadline=None)
@given(window_from=st.integers(0, 48 * HOUR_US), window_length=st.integers(0, 3 * HOUR_US),
       start=st.integers(-6 * HOUR_US, 60 * HOUR_US), length=st.integers(0, HOUR_US),
       arrival=st.integers(-10 * HOUR_US, 72 * HOUR_US))
def test_a_clip_is_held_whether_it_was_docked_before_or_after_the_request_was_logged(
        window_from, window_length, start, length, arrival):
    base = to_utc_us(WINDOW_FROM)
    start, received = base + start, base + start + arrival
    window = (base + window_from, base + window_from + window_length)
    with tempfile.TemporaryDirectory() as tmp:
        store = MetadataStore(Path(tmp) / "evidence.db")
        try:
            store.add_segment(segment("before", 1, start, start + length, received))
            with store.transaction() as db:
                request_id, held = sar.log_request(db, sar.RequestDetails(
                    "A. Person", "d", date(2026, 11, 24), *window), actor="user:dora", at=NOW.isoformat())
            store.add_segment(segment("after", 2, start, start + length, received))
            after = sar.request(store.reader(), request_id)["held_clips"]
        finally:
            store.close()
    expected = sar.covers(*window, min(start, received), start + length)
    assert ("before" in held) is expected
    assert ("after" in after) is expected


def segment(clip_id: str, sequence: int, start_us: int, end_us: int, received_us: int) -> SegmentRecord:
    h = f"{sequence:064x}"
    return SegmentRecord(h, "cam-1", sequence, "00" * 32, clip_id, 0, start_us, end_us, 100, False, "linked",
                         iso_utc(received_us).replace("Z", "+00:00"), "dock-1", h, "{}")


def test_a_camera_cannot_be_assigned_to_a_name_that_is_nobodys_account(ev):
    from openbwv.server.errors import NotFound

    with pytest.raises(NotFound, match="no user 'pc-smiht'"):
        write(ev, lambda db: lifecycle.assign_device(db, "cam-1", "pc-smiht", 0, None, actor="local:ops",
                                                     at=NOW.isoformat()))
    assert ev.db.reader().execute("SELECT COUNT(*) FROM device_assignments").fetchone() == (0,)
