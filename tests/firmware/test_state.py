"""The recording state machine, as a specification: what each press, trigger and report does.

Helpers: `Camera` feeds events at increasing times and keeps the LED state
the actions asked for; `effects` drops the log lines so that tests say what
the camera *does*.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.firmware.state import (
    Action,
    Bookmark,
    ButtonDown,
    ButtonUp,
    CameraStateMachine,
    ClipClosed,
    DockChanged,
    Event,
    Fault,
    FaultCleared,
    Indicators,
    Log,
    Mode,
    RecordCommand,
    StartClip,
    StealthChanged,
    StealthRequest,
    StopClip,
    StorageLevel,
    Tick,
    Trigger,
    Warn,
)


def effects(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


class Camera:
    """A state machine driven by a test: events at a clock the test moves, the LED as the actions left it."""

    def __init__(self, **options):
        self.sm = CameraStateMachine(**options)
        self.t = 100.0
        self.led = False

    def send(self, make, *args, after: float = 0.0) -> list[Action]:
        self.t += after
        actions = self.sm.handle(make(self.t, *args))
        for a in actions:
            if isinstance(a, Indicators):
                self.led = a.on
        return effects(actions)

    def press(self, duration: float = 0.2, after: float = 1.0) -> list[Action]:
        return self.send(ButtonDown, after=after) + self.send(ButtonUp, after=duration)

    def hold(self, seconds: float = 3.0, after: float = 1.0) -> list[Action]:
        out = self.send(ButtonDown, after=after)
        waited = 0.0
        while waited + 0.05 <= seconds + 1e-9:
            out += self.send(Tick, after=0.05)
            waited += 0.05
        return out + self.send(ButtonUp, after=0.1)

    def recording(self) -> Camera:
        self.press()
        assert self.sm.mode is Mode.RECORDING
        return self


# --- the button ----------------------------------------------------------------------------


def test_press_in_standby_starts_recording_at_once():
    cam = Camera()
    assert cam.sm.mode is Mode.STANDBY

    # on the down edge itself: the LED must not wait for the release
    assert cam.send(ButtonDown) == [StartClip("button"), Indicators(True)]
    assert cam.sm.recording and cam.led

    # the release of the press that started the recording does nothing more: it is consumed
    assert cam.send(ButtonUp, after=0.3) == []
    assert cam.sm.recording


def test_short_press_while_recording_adds_a_bookmark():
    cam = Camera().recording()

    down_at = cam.t + 2.0
    assert cam.send(ButtonDown, after=2.0) == []
    assert cam.send(ButtonUp, after=0.4) == [Bookmark(down_at)]  # marks when the button went down
    assert cam.sm.recording and cam.led


def test_holding_three_seconds_stops_the_clip():
    cam = Camera().recording()

    cam.send(ButtonDown, after=5.0)
    assert cam.send(Tick, after=2.9) == []
    assert cam.send(Tick, after=0.15) == [StopClip("button"), Indicators(False)]  # while still held
    assert cam.sm.mode is Mode.STOPPING and not cam.led
    assert cam.sm.stop_reason == "button"
    assert cam.send(ButtonUp, after=1.0) == []  # the release of a hold is not also a bookmark

    assert cam.send(ClipClosed, after=0.2) == []
    assert cam.sm.mode is Mode.STANDBY


def test_holding_the_button_that_started_the_recording_does_not_stop_it():
    cam = Camera()
    actions = cam.hold(5.0)
    assert actions == [StartClip("button"), Indicators(True)]
    assert cam.sm.recording


def test_a_press_that_began_before_recording_neither_bookmarks_nor_stops():
    cam = Camera()
    cam.send(DockChanged, True)
    cam.send(ButtonDown, after=1.0)  # ignored in the dock
    cam.send(DockChanged, False, after=0.5)
    assert cam.send(Trigger, "holster", after=0.5) == [StartClip("trigger:holster"), Indicators(True)]
    cam.send(Tick, after=3.0)  # the old press is now 4 s long: a hold, but not one made while recording
    assert cam.sm.recording
    assert cam.send(ButtonUp, after=0.5) == []


def test_contact_bounce_does_not_become_a_second_press():
    cam = Camera()
    out = cam.send(ButtonDown) + cam.send(ButtonUp, after=0.003) + cam.send(ButtonDown, after=0.003)
    out += cam.send(ButtonUp, after=0.3) + cam.send(ButtonDown, after=0.004) + cam.send(Tick, after=0.1)
    assert out == [StartClip("button"), Indicators(True)]  # no bookmark, no second clip


def test_button_is_ignored_but_logged_while_the_clip_is_being_sealed():
    cam = Camera().recording()
    cam.hold(3.0)
    assert cam.sm.mode is Mode.STOPPING

    actions = cam.sm.handle(ButtonDown(cam.t + 0.1))
    assert effects(actions) == []
    assert any(isinstance(a, Log) and "sealed" in a.message for a in actions)
    assert cam.sm.mode is Mode.STOPPING


# --- triggers and commands -------------------------------------------------------------------


def test_trigger_starts_recording():
    cam = Camera()
    assert cam.send(Trigger, "taser") == [StartClip("trigger:taser"), Indicators(True)]
    assert cam.sm.recording


def test_triggers_while_recording_are_logged_not_a_new_clip():
    cam = Camera().recording()
    actions = cam.sm.handle(Trigger(cam.t + 1, "lightbar"))
    assert effects(actions) == []
    assert any(isinstance(a, Log) and "lightbar" in a.message for a in actions)


def test_a_trigger_while_sealing_starts_a_new_clip_once_sealed():
    # A holster edge does not repeat; an officer who sees the LED off can press again.
    cam = Camera().recording()
    cam.send(RecordCommand, False, "cli")
    assert cam.send(Trigger, "holster", after=0.1) == []
    assert cam.sm.pending_start == "trigger:holster"
    assert cam.send(ClipClosed, after=0.2) == [StartClip("trigger:holster"), Indicators(True)]


def test_record_command_starts_and_stops():
    cam = Camera()
    assert cam.send(RecordCommand, True, "cli") == [StartClip("cli"), Indicators(True)]
    assert cam.send(RecordCommand, False, "SIGTERM", after=5) == [StopClip("SIGTERM"), Indicators(False)]
    assert cam.sm.stop_reason == "SIGTERM"
    assert cam.sm.mode is Mode.STOPPING


# --- dock ------------------------------------------------------------------------------------


def test_docking_stops_recording_cleanly_then_docked():
    cam = Camera().recording()

    assert cam.send(DockChanged, True, after=10) == [
        StopClip("docked"),
        Warn("docked_while_recording"),
        Indicators(False),
    ]
    assert cam.sm.mode is Mode.STOPPING  # the clip is sealed before the camera counts as docked
    assert cam.send(ClipClosed, after=0.5) == []
    assert cam.sm.mode is Mode.DOCKED


def test_docked_camera_ignores_the_button_and_returns_to_standby_when_taken_out():
    cam = Camera()
    cam.send(DockChanged, True)
    assert cam.sm.mode is Mode.DOCKED
    assert cam.press() == []
    assert cam.send(Trigger, "holster") == []
    assert cam.send(DockChanged, False, after=1) == []
    assert cam.sm.mode is Mode.STANDBY
    assert cam.press() == [StartClip("button"), Indicators(True)]


# --- storage ---------------------------------------------------------------------------------


def test_full_storage_stops_recording_and_says_why():
    cam = Camera().recording()
    assert cam.send(StorageLevel, "full", after=60) == [
        StopClip("storage full"),
        Warn("storage_full"),
        Indicators(False),
    ]
    assert cam.sm.stop_reason == "storage full"


def test_cannot_start_when_storage_is_full():
    cam = Camera()
    assert cam.send(StorageLevel, "full") == [Warn("storage_full")]
    assert cam.press() == [Warn("storage_full")]
    assert cam.send(Trigger, "holster") == [Warn("storage_full")]
    assert cam.send(RecordCommand, True, "cli") == [Warn("storage_full")]
    assert cam.sm.mode is Mode.STANDBY and not cam.led

    cam.send(StorageLevel, "ok", after=1)
    assert cam.press() == [StartClip("button"), Indicators(True)]


def test_low_storage_warns_once_per_change_into_low():
    cam = Camera()
    assert cam.send(StorageLevel, "low") == [Warn("storage_low")]
    assert cam.send(StorageLevel, "low", after=1) == []
    assert cam.send(StorageLevel, "ok", after=1) == []
    assert cam.send(StorageLevel, "low", after=1) == [Warn("storage_low")]


def test_low_storage_does_not_stop_a_recording():
    cam = Camera().recording()
    assert cam.send(StorageLevel, "low") == [Warn("storage_low")]
    assert cam.sm.recording


def test_unknown_storage_level_is_refused_when_the_event_is_made():
    with pytest.raises(ValueError, match="ok, low, full"):
        StorageLevel(1.0, "nearly")


# --- faults ----------------------------------------------------------------------------------


def test_fault_while_recording_stops_the_clip_first():
    cam = Camera().recording()
    assert cam.send(Fault, "sensor timeout") == [StopClip("fault: sensor timeout"), Warn("fault"), Indicators(False)]
    assert cam.sm.mode is Mode.FAULT and cam.sm.fault_reason == "sensor timeout"
    assert cam.press() == [Warn("fault")]


def test_a_start_attempt_during_a_fault_warns_again():
    cam = Camera()
    cam.send(Fault, "storage unmounted")
    assert cam.send(ButtonDown, after=1) == [Warn("fault")]
    assert cam.send(Trigger, "holster", after=1) == [Warn("fault")]


def test_fault_cleared_returns_to_standby_or_to_the_dock():
    cam = Camera()
    cam.send(Fault, "x")
    assert cam.send(FaultCleared, after=1) == []
    assert cam.sm.mode is Mode.STANDBY

    cam.send(Fault, "y", after=1)
    cam.send(DockChanged, True, after=1)
    cam.send(FaultCleared, after=1)
    assert cam.sm.mode is Mode.DOCKED


# --- stealth ---------------------------------------------------------------------------------


def test_stealth_is_refused_unless_policy_allows():
    cam = Camera().recording()
    actions = cam.sm.handle(StealthRequest(cam.t + 1, True))
    assert effects(actions) == [Warn("stealth_refused")]
    assert any(isinstance(a, Log) and "stealth" in a.message for a in actions)
    assert cam.led and not cam.sm.stealth


def test_stealth_when_allowed_turns_the_indicators_off_and_is_logged():
    cam = Camera(stealth_allowed=True).recording()
    actions = cam.sm.handle(StealthRequest(cam.t + 1, True))
    assert effects(actions) == [Indicators(False)]
    assert any(isinstance(a, Log) and "stealth on" in a.message for a in actions)

    cam.hold(3.0)
    cam.send(ClipClosed, after=0.2)
    assert cam.press() == [StartClip("button")]  # no Indicators(on) in stealth
    assert cam.send(StealthRequest, False) == [Indicators(True)]


def test_docking_ends_stealth():
    cam = Camera(stealth_allowed=True)
    cam.send(StealthRequest, True)
    cam.send(DockChanged, True, after=1)
    cam.send(DockChanged, False, after=1)
    assert not cam.sm.stealth
    assert cam.press() == [StartClip("button"), Indicators(True)]


def test_stealth_cannot_be_set_in_the_dock_for_the_next_wearer():
    cam = Camera(stealth_allowed=True)
    cam.send(DockChanged, True)
    cam.send(StealthRequest, True, after=1)
    cam.send(DockChanged, False, after=1)
    assert not cam.sm.stealth
    assert cam.press() == [StartClip("button"), Indicators(True)]


def test_events_stamped_slightly_out_of_order_are_handled_as_now():
    # A release queued behind a tick reaches the machine with an older stamp: it counts as "now".
    cam = Camera().recording()
    cam.send(ButtonDown, after=1.0)
    down_at = cam.t
    cam.send(Tick, after=1.0)
    assert cam.sm.handle(ButtonUp(down_at + 0.5)) == [Bookmark(down_at)]
    assert cam.sm.recording


# --- any sequence of events ------------------------------------------------------------------

event_kinds = st.one_of(
    st.just((ButtonDown,)),
    st.just((ButtonUp,)),
    st.just((Tick,)),
    st.tuples(st.just(Trigger), st.sampled_from(["holster", "taser", "lightbar"])),
    st.tuples(st.just(DockChanged), st.booleans()),
    st.tuples(st.just(StorageLevel), st.sampled_from(["ok", "low", "full"])),
    st.just((ClipClosed,)),
    st.tuples(st.just(Fault), st.just("test fault")),
    st.just((FaultCleared,)),
    st.tuples(st.just(RecordCommand), st.booleans(), st.just("cli")),
    st.tuples(st.just(StealthRequest), st.booleans()),
)
timelines = st.lists(
    st.tuples(st.sampled_from([0.0, 0.005, 0.05, 0.3, 1.0, 2.0, 3.0, 3.5, 10.0]), event_kinds),
    max_size=60,
)


def play(sm: CameraStateMachine, timeline, *, recorder_honest: bool):
    """Feed `timeline` to `sm`, yielding (event, actions, recorder state) and checking the recorder's protocol.

    With `recorder_honest`, ClipClosed is sent only when a clip is being
    closed (as the real recorder does) and the recorder's protocol is
    checked; otherwise it is sent whenever the timeline says, and the machine
    must still keep its own promises (the LED).
    """
    t = 0.0
    recorder = "idle"  # idle -> recording (StartClip) -> closing (StopClip) -> idle (ClipClosed)
    for dt, (make, *args) in timeline:
        t += dt
        if make is ClipClosed and recorder_honest and recorder != "closing":
            make, args = Tick, []
        was = sm.mode
        event: Event = make(t, *args)
        actions = sm.handle(event)
        if make is ClipClosed and recorder == "closing":
            recorder = "idle"
        if make is FaultCleared and was is Mode.FAULT:
            recorder = "idle"  # clearing a fault includes the recorder's recovery
        for a in actions:
            if isinstance(a, StartClip):
                if recorder_honest:
                    assert recorder == "idle", "a clip was started while another was open or closing"
                recorder = "recording"
            elif isinstance(a, StopClip):
                if recorder_honest:
                    assert recorder == "recording", "a clip was stopped that was not open"
                recorder = "closing"
            elif isinstance(a, Bookmark) and recorder_honest:
                assert recorder == "recording", "a bookmark with no clip open"
        yield event, actions, recorder


@settings(max_examples=400, deadline=None)
@given(timeline=timelines, stealth_allowed=st.booleans())
def test_indicators_only_while_recording(timeline, stealth_allowed):
    sm = CameraStateMachine(stealth_allowed=stealth_allowed)
    led = False
    for _, actions, _ in play(sm, timeline, recorder_honest=False):
        for a in actions:
            if isinstance(a, Indicators):
                assert a.on != led, "Indicators sent without a change"
                led = a.on
        assert led == (sm.mode is Mode.RECORDING and not sm.stealth)
        assert led == sm.indicators_on
        if not stealth_allowed:
            assert led == sm.recording


@settings(max_examples=400, deadline=None)
@given(timeline=timelines, stealth_allowed=st.booleans())
def test_clips_open_and_close_in_order_and_only_when_allowed(timeline, stealth_allowed):
    sm = CameraStateMachine(stealth_allowed=stealth_allowed)
    storage, docked = "ok", False
    for event, actions, recorder in play(sm, timeline, recorder_honest=True):
        if isinstance(event, StorageLevel):
            storage = event.level
        if isinstance(event, DockChanged):
            docked = event.docked
        kinds = [type(a) for a in actions]
        if StartClip in kinds:
            assert storage != "full" and not docked
        assert sm.recording == (recorder == "recording")
        assert (sm.mode is Mode.STOPPING) <= (recorder == "closing")
        if sm.mode is Mode.DOCKED:
            assert docked
        for a in actions:
            if isinstance(a, Warn):
                assert a.kind in ("storage_low", "storage_full", "docked_while_recording", "stealth_refused", "fault")


@settings(max_examples=200, deadline=None)
@given(timeline=timelines)
def test_every_recording_is_stopped_with_a_reason(timeline):
    sm = CameraStateMachine()
    for _, actions, _ in play(sm, timeline, recorder_honest=True):
        for a in actions:
            if isinstance(a, StopClip):
                assert a.reason and sm.stop_reason == a.reason
    # and whatever happened, software can always stop it
    sm.handle(RecordCommand(1e6, False, "end of test"))
    assert not sm.recording


# --- the stealth gesture ---------------------------------------------------------------------


def test_three_quick_presses_while_recording_turn_stealth_on_and_three_more_turn_it_off():
    cam = Camera(stealth_allowed=True).recording()
    actions = []
    for _ in range(3):
        cam.t += 0.3
        actions += cam.sm.handle(ButtonDown(cam.t))
        cam.t += 0.1
        actions += cam.sm.handle(ButtonUp(cam.t))
    assert cam.sm.stealth
    assert sum(isinstance(a, Bookmark) for a in actions) == 3  # every press still marks its moment
    changes = [a for a in actions if isinstance(a, StealthChanged)]
    assert [(c.on, c.cause) for c in changes] == [(True, "gesture")]
    assert Indicators(False) in actions
    for _ in range(3):
        cam.press(duration=0.1, after=0.3)
    assert not cam.sm.stealth and cam.sm.indicators_on


def test_presses_spread_out_are_bookmarks_not_the_stealth_gesture():
    cam = Camera(stealth_allowed=True).recording()
    for _ in range(3):
        cam.press(duration=0.1, after=1.5)
    assert not cam.sm.stealth


def test_the_stealth_gesture_is_refused_without_the_policy():
    cam = Camera(stealth_allowed=False).recording()
    out = []
    for _ in range(3):
        out += cam.press(duration=0.1, after=0.3)
    assert Warn("stealth_refused") in out
    assert not cam.sm.stealth and cam.sm.indicators_on


def test_docking_in_stealth_says_why_stealth_ended():
    cam = Camera(stealth_allowed=True).recording()
    cam.sm.handle(StealthRequest(cam.t + 0.1, True))
    actions = cam.sm.handle(DockChanged(cam.t + 1, True)) + cam.sm.handle(ClipClosed(cam.t + 2))
    assert [(a.on, a.cause) for a in actions if isinstance(a, StealthChanged)] == [(False, "docked")]
