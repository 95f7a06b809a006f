"""Refusals of callers with no token are all counted, but cannot grow the audit log without limit."""

from __future__ import annotations

import pytest

from openbwv.server.denials import DenialThrottle


def test_refusals_are_written_one_by_one_up_to_the_rate_then_counted():
    throttle = DenialThrottle(window_s=60, per_window=3)
    assert [throttle.admit(t).write for t in (0, 1, 2, 3, 4)] == [True, True, True, False, False]
    assert throttle.flush(59) == 0  # the window is still open


def test_the_suppressed_are_summarised_when_the_window_ends_whoever_asks_first():
    throttle = DenialThrottle(window_s=60, per_window=2)
    for t in range(5):
        throttle.admit(t)
    next_one = throttle.admit(61)
    assert next_one.write and next_one.suppressed_before == 3  # a new window, and the old one's count
    assert throttle.flush(200) == 0  # told once

    for t in range(300, 305):
        throttle.admit(t)
    assert throttle.flush(361) == 3  # a flood that stops is summarised by the periodic checkpoint


def test_on_the_way_out_the_open_window_is_counted_too():
    throttle = DenialThrottle(window_s=60, per_window=1)
    for t in range(4):
        throttle.admit(t)
    assert throttle.flush(5, final=True) == 3 and throttle.flush(6, final=True) == 0


@pytest.mark.parametrize("window_s,per_window", [(0, 1), (60, 0)])
def test_a_throttle_that_would_write_nothing_is_refused(window_s, per_window):
    with pytest.raises(ValueError):
        DenialThrottle(window_s=window_s, per_window=per_window)
