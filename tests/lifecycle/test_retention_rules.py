"""Retention rules (server/retention.py): when a clip may be deleted, and what keeps it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from openbwv.server.errors import ConfigError
from openbwv.server.geoindex import to_utc_us
from openbwv.server.retention import (DAY_US, ClipFacts, RetentionPolicy, decide, due_utc_us, releases,
                                     retention_start_us)

POLICY = RetentionPolicy()
RECORDED = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def clip(recorded: datetime = RECORDED, received: datetime | None = None, **kw) -> ClipFacts:
    received = received or recorded + timedelta(hours=8)
    return ClipFacts("c", kw.pop("category", "unmarked"), retention_start_us(to_utc_us(recorded), to_utc_us(received)),
                     to_utc_us(received), **kw)


def at(t: datetime) -> int:
    return to_utc_us(t)


def test_unmarked_footage_is_kept_on_day_30_and_deleted_by_day_32():
    assert not decide(POLICY, clip(), at(RECORDED + timedelta(days=30))).delete
    assert decide(POLICY, clip(), at(RECORDED + timedelta(days=32))).delete


def test_the_boundary_is_31_days_to_the_microsecond():
    due = RECORDED + timedelta(days=31)
    assert not decide(POLICY, clip(), at(due) - 1).delete
    assert decide(POLICY, clip(), at(due)).delete


def test_days_are_24_hours_of_utc_whatever_the_clocks_of_a_time_zone_do():
    # 2026-03-29 is the night British Summer Time begins: local days are not 24 h, ours are.
    london = timezone(timedelta(hours=1))
    recorded = datetime(2026, 3, 20, 23, 30, tzinfo=timezone.utc)
    c = clip(recorded)
    assert due_utc_us(POLICY, c) == to_utc_us(recorded) + 31 * DAY_US
    assert decide(POLICY, c, at((recorded + timedelta(days=31)).astimezone(london))).delete
    assert not decide(POLICY, c, at((recorded + timedelta(days=31)).astimezone(london)) - 1).delete


def test_a_camera_clock_running_ahead_cannot_postpone_deletion():
    ahead = clip(recorded=RECORDED + timedelta(days=5), received=RECORDED + timedelta(hours=8))
    assert due_utc_us(POLICY, ahead) == at(RECORDED + timedelta(hours=8)) + 31 * DAY_US


def test_a_camera_clock_running_behind_still_gives_a_week_on_the_due_list():
    behind = clip(recorded=RECORDED - timedelta(days=60), received=RECORDED)
    assert not decide(POLICY, behind, at(RECORDED + timedelta(days=6))).delete
    assert decide(POLICY, behind, at(RECORDED + timedelta(days=7))).delete


def test_a_camera_docked_weeks_late_is_not_deleted_the_hour_it_arrives():
    late = clip(received=RECORDED + timedelta(days=40))
    assert not decide(POLICY, late, at(RECORDED + timedelta(days=40, hours=1))).delete


def test_an_evidence_mark_keeps_a_clip_long_past_its_period():
    d = decide(POLICY, clip(active_marks=1), at(RECORDED + timedelta(days=400)))
    assert not d.delete and "evidence" in d.reason


def test_an_open_subject_access_request_keeps_a_clip():
    d = decide(POLICY, clip(open_requests=1), at(RECORDED + timedelta(days=400)))
    assert not d.delete and "subject access" in d.reason


def test_categories_and_periods_come_from_the_configuration():
    policy = RetentionPolicy.from_table({"unmarked_days": 14, "categories": {"training": 365}})
    assert decide(policy, clip(), at(RECORDED + timedelta(days=15))).delete
    assert not decide(policy, clip(category="training"), at(RECORDED + timedelta(days=300))).delete


@pytest.mark.parametrize("table, words", [
    ({"unmarked_days": 0}, "1 to"),
    ({"unmarked_days": "31"}, "whole number"),
    ({"categories": {"Bad Name": 3}}, "category name"),
    ({"notice_days": -1}, "notice_days"),
    ({"retain": 3}, "unknown setting"),
    ({"categories": 5}, "table"),
])
def test_a_bad_retention_table_is_refused_with_what_is_wrong(table, words):
    with pytest.raises(ConfigError, match=words):
        RetentionPolicy.from_table(table)


# A clip released long after its period ended (re-filed into a shorter category, its evidence mark
# lifted, or the subject access request that held it closed) still spends the notice on the due list.
RELEASED = RECORDED + timedelta(days=100)


def test_a_clip_released_after_its_period_is_kept_for_the_notice_period_to_the_microsecond():
    released = clip(released_utc_us=at(RELEASED))
    assert due_utc_us(POLICY, released) == at(RELEASED) + 7 * DAY_US
    assert not decide(POLICY, released, at(RELEASED + timedelta(days=7)) - 1).delete
    assert decide(POLICY, released, at(RELEASED + timedelta(days=7))).delete


def test_a_release_within_the_period_does_not_postpone_deletion():
    released = clip(released_utc_us=at(RECORDED + timedelta(days=3)))
    assert due_utc_us(POLICY, released) == at(RECORDED) + 31 * DAY_US


def test_a_clip_re_filed_into_a_shorter_category_is_released_and_into_a_longer_one_is_not():
    policy = RetentionPolicy.from_table({"categories": {"training": 365, "complaint": 750, "brief": 31}})
    assert releases(policy, "training", "unmarked")
    assert not releases(policy, "training", "complaint")
    assert not releases(policy, "unmarked", "brief")  # the same period: nothing goes sooner


def test_a_clip_re_filed_from_a_category_no_longer_configured_is_released():
    assert releases(POLICY, "training", "unmarked")


@given(st.integers(0, 400 * DAY_US), st.integers(-3 * DAY_US, 60 * DAY_US), st.integers(0, 500 * DAY_US),
       st.integers(0, 2), st.integers(0, 2), st.none() | st.integers(0, 500 * DAY_US))
def test_nothing_held_or_not_yet_due_is_ever_deleted(recorded, delay, now, marks, requests, released):
    base = to_utc_us(RECORDED)
    received = base + recorded + max(0, delay)
    released_us = None if released is None else base + released
    c = ClipFacts("c", "unmarked", retention_start_us(base + recorded, received), received, marks, requests,
                  released_us)
    d = decide(POLICY, c, base + now)
    if d.delete:
        assert marks == requests == 0
        assert base + now >= c.recorded_utc_us + 31 * DAY_US
        assert base + now >= received + 7 * DAY_US
        assert released_us is None or base + now >= released_us + 7 * DAY_US
