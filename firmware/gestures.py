"""Turning the record button's raw edges into gestures: down, press, hold.

A body-worn camera has one button and two things to say with it: "record"
and, while recording, "mark this moment" (a short press) or "stop" (a long
hold). Telling a press from a hold means waiting for the release, but the
officer must see the red LED come on the instant the button goes down. So,
as real cameras do, the decoder reports three gestures:

``"down"``
    at every accepted down edge, immediately: the state machine starts
    recording on it without waiting.
``"press"``
    at the release, if the button was down for less than `hold_seconds`.
``"hold"``
    once, as soon as the button has been down for `hold_seconds` (on the
    first `tick`, `down` or `up` call at or after that instant). A hold is
    never also a press: the release that ends it reports nothing.

Every down is followed by exactly one press or one hold, once the button is
released or held long enough.

**Times.** Each `Gesture.t` is the instant on the button's own timeline, not
the moment the call happened: a down or press carries its edge's time, and a
hold carries ``down time + hold_seconds``. So the gestures do not depend on
how often `tick` is called, only *when they are reported* does.

Times given to the decoder are made non-decreasing: a call whose ``t`` is
earlier than one already seen is treated as happening at the latest time seen.
Events from several sources (button thread, timer, dock watcher) are
time-stamped where they arise and may reach the decoder slightly out of
order; a camera must not crash over that.

**Debounce.** A mechanical switch bounces for a few milliseconds. An edge that
comes less than `debounce_s` after the previous accepted edge is not acted on
at once; an edge that merely repeats the current level is ignored outright.
But the *level* such a bounced edge leaves behind is honoured once the
debounce window has passed: if, after the window, the button is not where the
decoder last accepted it, that change is accepted then, with the time of the
edge that produced it. Without this, a tap shorter than the window would leave
the decoder believing the button is still down, and three seconds later it
would report a hold nobody made, stopping a recording.

Pure: no clock, no thread, no GPIO. The caller passes monotonic seconds in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

GestureKind = Literal["down", "press", "hold"]

DEFAULT_HOLD_SECONDS = 3.0
DEFAULT_DEBOUNCE_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Gesture:
    """What the officer did with the button, and when (monotonic seconds).

    `kind` is ``"down"``, ``"press"`` or ``"hold"`` (see the module docstring);
    `t` is the instant on the button's timeline: the edge for down and
    press, ``down + hold_seconds`` for hold.
    """

    kind: GestureKind
    t: float


class GestureDecoder:
    """Decodes one button's edges; `down`, `up` and `tick` return the gestures they complete.

    Call `tick` regularly (every 50 ms is plenty) so that a hold is reported
    while the button is still down; `down` and `up` also advance time.
    """

    def __init__(self, hold_seconds: float = DEFAULT_HOLD_SECONDS, debounce_s: float = DEFAULT_DEBOUNCE_SECONDS):
        if not (math.isfinite(hold_seconds) and hold_seconds > 0):
            raise ValueError(f"hold_seconds must be a positive number of seconds, got {hold_seconds!r}")
        if not (math.isfinite(debounce_s) and 0 <= debounce_s < hold_seconds):
            raise ValueError(
                f"debounce_s must be at least 0 and shorter than hold_seconds ({hold_seconds!r}), got {debounce_s!r}"
            )
        self._hold = float(hold_seconds)
        self._debounce = float(debounce_s)
        self._now = -math.inf
        self._pressed = False  # the accepted level
        self._raw_pressed = False  # the level the last edge reported, accepted or not
        self._raw_t = -math.inf  # when the raw level last changed
        self._edge_t = -math.inf  # when the accepted level last changed
        self._down_t = -math.inf  # when the current press began (valid while pressed)
        self._hold_sent = False

    @property
    def hold_seconds(self) -> float:
        return self._hold

    @property
    def debounce_s(self) -> float:
        return self._debounce

    @property
    def pressed(self) -> bool:
        """Whether the decoder currently takes the button to be down (debounced)."""
        return self._pressed

    def down(self, t: float) -> list[Gesture]:
        """The button's contact closed at `t`."""
        return self._edge(True, t)

    def up(self, t: float) -> list[Gesture]:
        """The button's contact opened at `t`."""
        return self._edge(False, t)

    def tick(self, t: float) -> list[Gesture]:
        """Time has reached `t` with no edge: reports a hold that has come due, or a settled bounce."""
        out: list[Gesture] = []
        self._advance(t, out)
        return out

    def _advance(self, t: float, out: list[Gesture]) -> float:
        t = max(t, self._now)
        self._now = t
        if self._raw_pressed != self._pressed and t >= self._edge_t + self._debounce:
            self._accept(self._raw_pressed, self._raw_t, out)
        if self._pressed and not self._hold_sent and t >= self._down_t + self._hold:
            self._hold_sent = True
            out.append(Gesture("hold", self._down_t + self._hold))
        return t

    def _edge(self, pressed: bool, t: float) -> list[Gesture]:
        out: list[Gesture] = []
        t = self._advance(t, out)
        if pressed == self._raw_pressed:
            return out  # repeats the level we already have: carries no information
        self._raw_pressed = pressed
        self._raw_t = t
        if pressed != self._pressed and t >= self._edge_t + self._debounce:
            self._accept(pressed, t, out)
        # Otherwise it is a bounce: either it returned the raw level to the accepted
        # one (nothing pending), or `_advance` will settle it after the window.
        return out

    def _accept(self, pressed: bool, t: float, out: list[Gesture]) -> None:
        self._pressed = pressed
        self._edge_t = t
        if pressed:
            self._down_t = t
            self._hold_sent = False
            out.append(Gesture("down", t))
        elif not self._hold_sent:
            out.append(Gesture("press", t))
