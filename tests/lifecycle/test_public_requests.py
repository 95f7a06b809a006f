"""Requests from the public page (server/sar.py): held at once, but narrowly, until staff verify who asks.

Anyone can send the public form, so a request from it must not be able to freeze the retention
schedule.  While it is pending it is bounded (a few hours, a few hundred metres), it holds only the
clips recorded in its window that a fix places near its point or that no fix places at all, and each
client (and everyone together) may send only so many.  Once a disclosure officer has verified the
requester, it holds by time alone like a request staff logged.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest

from lifecycle.lifecycle_kit import UTC, Evidence, Held
from openbwv.server import audit, sar
from openbwv.server.errors import BadRequest, Conflict
from openbwv.server.geoindex import to_utc_us

# Each test once per metadata engine: SQLite, then PostgreSQL (conftest.py).
pytestmark = pytest.mark.usefixtures("db_engine")

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW_FROM = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW_TO = WINDOW_FROM + timedelta(hours=1)
STATION = (51.5007, -0.1246)
FAR = (51.5155, -0.0922)  # about 3 km away
LIMITS = sar.PublicLimits(max_window_hours=4, max_radius_m=500, per_client_per_day=3, per_hour=10)


@pytest.fixture
def ev(tmp_path):
    e = Evidence(tmp_path)
    yield e
    e.close()


def write(ev: Evidence, fn):
    with ev.db.transaction() as db:
        return fn(db)


def recorded_at(ev: Evidence, device_id: str, place: tuple[float, float] | None, *, minutes: int = 20) -> Held:
    """A clip recorded in the window, docked later; with `place`, its sealed GNSS track puts it there."""
    return ev.record(device_id, WINDOW_FROM + timedelta(minutes=minutes), received=WINDOW_TO + timedelta(hours=6),
                     place=place)


def details(*, hours: float = 1, point: tuple[float, float] | None = STATION, radius_m: float = 200,
            **kw) -> sar.RequestDetails:
    located = {} if point is None else {"lat": point[0], "lon": point[1], "radius_m": radius_m}
    return sar.RequestDetails("A. Member", "I was stopped outside the station", date(2026, 11, 24),
                              to_utc_us(WINDOW_FROM), to_utc_us(WINDOW_FROM + timedelta(hours=hours)),
                              contact="a.member@example.org", place="Westminster station", **located, **kw)


def submit(ev: Evidence, *, client: str = "client-1", at: datetime = NOW, **kw) -> tuple[str, list[str]]:
    return write(ev, lambda db: sar.log_public_request(db, details(**kw), client_tag=client, limits=LIMITS,
                                                       at=at.isoformat().replace("+00:00", "Z")))


def holding(ev: Evidence, request_id: str) -> set[str]:
    return set(sar.request(ev.db.reader(), request_id)["held_clips"])


# --------------------------------------------------------------------------- what a pending request holds
def test_a_pending_request_holds_clips_placed_near_it_and_clips_no_fix_places_but_not_those_far_away(ev):
    near = recorded_at(ev, "cam-1", STATION)
    unplaced = recorded_at(ev, "cam-2", None, minutes=30)
    far = recorded_at(ev, "cam-3", FAR, minutes=40)
    request_id, held = submit(ev)
    assert set(held) == {near.clip_id, unplaced.clip_id}
    view = sar.request(ev.db.reader(), request_id)
    assert view["pending"] and view["source"] == sar.SOURCE_PUBLIC and "client_tag" not in view
    assert far.clip_id not in holding(ev, request_id)


def test_without_a_point_a_pending_request_holds_its_bounded_window_alone(ev):
    near, far = recorded_at(ev, "cam-1", STATION), recorded_at(ev, "cam-3", FAR, minutes=40)
    _, held = submit(ev, point=None)
    assert set(held) == {near.clip_id, far.clip_id}


def test_a_clip_docked_later_is_held_for_a_pending_request_only_if_it_may_have_been_there(ev):
    request_id, _ = submit(ev)
    # The ingest indexes the sealed track before it holds (db.add_segment), so it knows where the clip was.
    near = recorded_at(ev, "cam-1", STATION)
    unplaced = recorded_at(ev, "cam-2", None, minutes=30)
    far = recorded_at(ev, "cam-3", FAR, minutes=40)
    assert holding(ev, request_id) == {near.clip_id, unplaced.clip_id}
    staff_id, _ = write(ev, lambda db: sar.log_request(db, details(), actor="user:dora", at=NOW.isoformat()))
    assert far.clip_id in holding(ev, staff_id)  # a staff request holds by time alone


def test_verifying_the_requester_holds_by_time_alone_like_a_staff_request(ev):
    near, far = recorded_at(ev, "cam-1", STATION), recorded_at(ev, "cam-3", FAR, minutes=40)
    request_id, _ = submit(ev)
    added = write(ev, lambda db: sar.verify_request(db, request_id, note="passport seen at the front counter",
                                                    actor="user:dora", at=NOW.isoformat()))
    assert added == [far.clip_id]
    assert holding(ev, request_id) == {near.clip_id, far.clip_id}
    assert not sar.request(ev.db.reader(), request_id)["pending"]
    verified = audit.query(ev.db.reader(), action="request_verified", limit=10)
    assert [(r.actor, r.target, json.loads(r.detail)["how"]) for r in verified] == [
        ("user:dora", f"request:{request_id}", "passport seen at the front counter")]
    with pytest.raises(Conflict, match="already verified"):
        write(ev, lambda db: sar.verify_request(db, request_id, note="again", actor="user:dora", at=NOW.isoformat()))


def test_only_a_request_from_the_public_page_is_verified_and_only_with_a_word_on_how(ev):
    staff_id, _ = write(ev, lambda db: sar.log_request(db, details(), actor="user:dora", at=NOW.isoformat()))
    with pytest.raises(Conflict, match="logged by staff"):
        write(ev, lambda db: sar.verify_request(db, staff_id, note="id seen", actor="user:dora", at=NOW.isoformat()))
    public_id, _ = submit(ev)
    with pytest.raises(BadRequest, match="how the requester's identity was checked"):
        write(ev, lambda db: sar.verify_request(db, public_id, note="  ", actor="user:dora", at=NOW.isoformat()))


# --------------------------------------------------------------------------- bounds and rate
@pytest.mark.parametrize("kw, message", [
    ({"hours": 5}, "at most 4 hours"),
    ({"radius_m": 800}, "at most 500 metres"),
])
def test_a_public_request_wider_than_a_pending_one_may_hold_is_refused_in_plain_words(ev, kw, message):
    with pytest.raises(BadRequest, match=message):
        submit(ev, **kw)
    assert sar.requests(ev.db.reader()) == []


def test_each_client_may_send_a_few_a_day_and_everyone_together_a_ceiling_an_hour(ev):
    for _ in range(LIMITS.per_client_per_day):
        submit(ev, client="client-1")
    with pytest.raises(sar.RateLimited, match="in the last 24 hours") as refused:
        submit(ev, client="client-1")
    assert refused.value.status == 429 and "Retry-After" in refused.value.headers
    submit(ev, client="client-1", at=NOW + timedelta(days=1, minutes=1))  # a day later the allowance is back
    for n in range(LIMITS.per_hour - 1):  # the one just sent is in this hour too
        submit(ev, client=f"other-{n}", at=NOW + timedelta(days=1, minutes=2))
    with pytest.raises(sar.RateLimited, match="many requests just now"):
        submit(ev, client="yet-another", at=NOW + timedelta(days=1, minutes=3))


def test_every_accepted_public_request_is_on_the_record_under_its_client_tag(ev):
    request_id, _ = submit(ev, client="0123456789abcdef0123")
    logged = audit.query(ev.db.reader(), action="request_logged", limit=10)
    assert [(r.actor, r.target, json.loads(r.detail)["source"]) for r in logged] == [
        ("public:0123456789abcdef", f"request:{request_id}", "public")]
