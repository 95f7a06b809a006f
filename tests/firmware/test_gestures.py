"""The record button: "down" at once, then exactly one "press" (short) or "hold" (3 s) per down."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.firmware.gestures import Gesture, GestureDecoder


def kinds(gestures: list[Gesture]) -> list[str]:
    return [g.kind for g in gestures]


def test_down_is_reported_on_the_edge_itself():
    dec = GestureDecoder()
    assert dec.down(10.0) == [Gesture("down", 10.0)]
    assert dec.pressed


def test_short_press_is_reported_on_release():
    dec = GestureDecoder()
    dec.down(10.0)
    assert dec.tick(10.5) == []
    assert dec.up(10.8) == [Gesture("press", 10.8)]


def test_hold_is_reported_once_while_the_button_is_still_down():
    dec = GestureDecoder(hold_seconds=3.0)
    dec.down(10.0)
    assert dec.tick(12.9) == []
    assert dec.tick(13.05) == [Gesture("hold", 13.0)]  # stamped when it became a hold
    assert dec.tick(14.0) == []
    assert dec.tick(20.0) == []


def test_a_hold_is_not_also_a_press():
    dec = GestureDecoder()
    dec.down(0.0)
    dec.tick(3.1)
    assert dec.up(4.0) == []


def test_a_hold_is_noticed_by_the_release_when_no_tick_came():
    dec = GestureDecoder()
    dec.down(0.0)
    assert dec.up(5.0) == [Gesture("hold", 3.0)]


def test_exactly_hold_seconds_is_a_hold():
    dec = GestureDecoder(hold_seconds=3.0)
    dec.down(1.0)
    assert dec.up(4.0) == [Gesture("hold", 4.0)]


def test_contact_bounce_is_one_press():
    dec = GestureDecoder(debounce_s=0.02)
    out = dec.down(1.000) + dec.up(1.003) + dec.down(1.006) + dec.up(1.009) + dec.down(1.012)
    out += dec.tick(1.5) + dec.up(1.6) + dec.down(1.605) + dec.up(1.61) + dec.tick(2.0)
    assert out == [Gesture("down", 1.0), Gesture("press", 1.6)]


def test_a_tap_shorter_than_the_debounce_window_is_still_a_press_not_a_phantom_hold():
    # If the release were simply ignored the decoder would think the button was
    # still down and report a hold three seconds later: a recording stopped by nobody.
    dec = GestureDecoder(debounce_s=0.02)
    assert dec.down(5.0) == [Gesture("down", 5.0)]
    assert dec.up(5.01) == []  # inside the window: not acted on yet
    assert dec.tick(5.05) == [Gesture("press", 5.01)]  # settled afterwards, with the edge's own time
    assert dec.tick(9.0) == []
    assert not dec.pressed


def test_repeated_edges_of_the_same_level_are_ignored():
    dec = GestureDecoder()
    assert dec.up(1.0) == []
    dec.down(2.0)
    assert dec.down(2.5) == []
    assert dec.up(2.7) == [Gesture("press", 2.7)]


def test_time_that_goes_backwards_is_treated_as_now():
    # An edge queued behind a tick reaches the decoder late; it happened "now", not in the past.
    dec = GestureDecoder()
    dec.down(10.0)
    dec.tick(11.0)
    assert dec.up(10.5) == [Gesture("press", 11.0)]


@pytest.mark.parametrize(
    "hold, debounce", [(0, 0.02), (-1, 0.02), (3.0, -0.01), (3.0, 3.0), (float("nan"), 0.02), (3.0, float("inf"))]
)
def test_impossible_settings_are_refused(hold, debounce):
    with pytest.raises(ValueError):
        GestureDecoder(hold_seconds=hold, debounce_s=debounce)


# --- any sequence of edges and ticks ------------------------------------------------------
# Times are multiples of 1/1024 s, which floats hold exactly, so that a press of
# exactly hold_seconds or an edge exactly one debounce window later is tested
# as such and not as whatever the rounding makes of it.

UNIT = 1 / 1024
DEBOUNCE = 20 * UNIT
HOLD = 3.0
GAPS = [0, 1, 5, 19, 20, 21, 50, 300, 1024, 2970, 3072, 3584, 10240]

steps = st.lists(
    st.tuples(st.sampled_from(["down", "up", "tick"]), st.sampled_from(GAPS).map(lambda n: n * UNIT)),
    max_size=80,
)


def decoder() -> GestureDecoder:
    return GestureDecoder(hold_seconds=HOLD, debounce_s=DEBOUNCE)


def finish(dec: GestureDecoder, seq: list[tuple[str, float]]) -> list[Gesture]:
    """Run `seq` from t=100, then release the button and wait, so that every down is resolved."""
    out: list[Gesture] = []
    t = 100.0
    for kind, dt in seq:
        t += dt
        out += getattr(dec, kind)(t)
    return out + dec.up(t + 1.0) + dec.tick(t + 100.0)


@settings(max_examples=500, deadline=None)
@given(seq=steps)
def test_every_down_gets_exactly_one_press_or_hold(seq):
    out = finish(decoder(), seq)

    ks = kinds(out)
    # down, then press or hold, then down, ...: never a press and a hold for the same down
    assert ks[0::2] == ["down"] * len(ks[0::2])
    assert all(k in ("press", "hold") for k in ks[1::2])
    assert len(ks) % 2 == 0
    for down, end in zip(out[0::2], out[1::2]):
        if end.kind == "hold":
            assert end.t == down.t + HOLD
        else:
            assert down.t <= end.t < down.t + HOLD


@settings(max_examples=500, deadline=None)
@given(seq=steps)
def test_gestures_come_in_time_order_and_a_bounce_never_makes_two_presses(seq):
    out = finish(decoder(), seq)

    assert [g.t for g in out] == sorted(g.t for g in out)
    downs = [g.t for g in out if g.kind == "down"]
    releases = [g.t for g in out if g.kind == "press"]
    assert all(b - a >= DEBOUNCE for a, b in zip(downs, downs[1:]))
    assert all(b - a >= DEBOUNCE for a, b in zip(releases, releases[1:]))


@settings(max_examples=500, deadline=None)
@given(seq=steps, split=st.sets(st.integers(0, 79), max_size=20))
def test_ticks_change_when_gestures_are_reported_never_what_they_are(seq, split):
    # The same edges at the same times, once with extra ticks in the gaps and once with no ticks at all.
    with_ticks: list[tuple[str, float]] = []
    for i, (kind, dt) in enumerate(seq):
        if i in split:
            with_ticks += [("tick", dt / 2), (kind, dt / 2)]
        else:
            with_ticks.append((kind, dt))
    edges_only: list[tuple[str, float]] = []
    carry = 0.0
    for kind, dt in with_ticks:
        carry += dt
        if kind != "tick":
            edges_only.append((kind, carry))
            carry = 0.0
    edges_only.append(("tick", carry))  # end at the same time, so the final release is the same

    assert finish(decoder(), with_ticks) == finish(decoder(), edges_only)


@settings(max_examples=300, deadline=None)
@given(gaps=st.lists(st.sampled_from([g for g in GAPS if g >= 21]), max_size=40))
def test_clean_edges_outside_the_debounce_window_all_count(gaps):
    # Alternating down/up, each edge more than the debounce after the last: nothing added, nothing lost.
    dec = decoder()
    t = 0.0
    expected: list[Gesture] = []
    out: list[Gesture] = []
    down_at = 0.0
    for i, gap in enumerate(gaps):
        t += gap * UNIT
        if i % 2 == 0:
            out += dec.down(t)
            expected.append(Gesture("down", t))
            down_at = t
        else:
            out += dec.up(t)
            expected.append(Gesture("press", t) if t - down_at < HOLD else Gesture("hold", down_at + HOLD))
    assert out == expected
