"""The camera's recording state machine: what each button press, trigger and report leads to.

Pure: `CameraStateMachine.handle` takes one event (with its monotonic time
``t``) and returns the actions the firmware must carry out, in order. It owns
no clock, thread, GPIO or file, so every rule below is tested exhaustively in
``tests/firmware/test_state.py``. ``docs/camera-controls.md`` is the same
rules written for the people who wear the camera.

Modes
-----
STANDBY    encoding into the pre-event buffer, not recording.
RECORDING  a clip is open; the red circle flashes and the camera beeps.
STOPPING   the recorder is closing and sealing the clip; waits for `ClipClosed`.
DOCKED     in the dock (charging, uploading); does not record.
FAULT      something is broken (camera, storage, recorder); cannot record.

Rules
-----
Button (through a `GestureDecoder`: "down" at once, then "press" < 3 s or "hold" >= 3 s):

* STANDBY, down: ``StartClip("button")`` at once, LED on. Evidence first: an
  accidental start costs a short clip, a missed start costs the incident.
  The press that started a recording is *consumed*: its own release or hold
  neither bookmarks nor stops.
* RECORDING, short press: ``Bookmark(t)`` with ``t`` the moment the button
  went down. Hold 3 s: ``StopClip("button")``, LED off, STOPPING.
  Only a press that *began* while recording counts; any change of mode
  cancels a press in progress.
* STOPPING, DOCKED: ignored, logged. FAULT: ``Warn("fault")``.

Triggers (holster, taser, lightbar) and ``RecordCommand(start=True)``:
STANDBY starts a clip (``"trigger:<source>"``, or the command's reason);
RECORDING logs them, no new clip; STOPPING *remembers* the request and starts
a new clip as soon as `ClipClosed` arrives (a sensor edge does not repeat,
unlike an officer who can see the LED is off and press again); DOCKED logs
and ignores; FAULT warns ``"fault"``.

``RecordCommand(start=False)`` stops like a hold (reason = the command's
reason); in STOPPING it cancels a remembered start.

Storage: ``"low"`` gives ``Warn("storage_low")`` once per change into low.
``"full"`` gives ``Warn("storage_full")`` once per change into full, and
while recording also ``StopClip("storage full")`` (before the warning). Any
attempt to start while full gives ``Warn("storage_full")`` and no clip.

Dock: inserted in STANDBY -> DOCKED. Inserted while RECORDING ->
``StopClip("docked")``, ``Warn("docked_while_recording")``, STOPPING, then
DOCKED when the clip is closed. Removed in DOCKED -> STANDBY. Entering DOCKED
ends stealth (the next shift must not inherit a silent camera) and forgets a
remembered start.

`ClipClosed`: STOPPING -> STANDBY (DOCKED if docked), then a remembered start
if there is one. Elsewhere it is logged.

`Fault`: from any mode -> FAULT with ``Warn("fault")``; if recording,
``StopClip("fault: <reason>")`` first. `FaultCleared`: FAULT -> STANDBY
(DOCKED if docked). Clearing a fault means whoever raised it has recovered
the recorder, including any clip it was closing; the machine does not wait
for a `ClipClosed` that may never come.

Indicators: ``Indicators(on=True)`` is emitted exactly when the LED must come
on (entering RECORDING, or stealth ending while recording) and
``Indicators(on=False)`` exactly when it must go off; the LED is on if and
only if the mode is RECORDING and stealth is off. This is enforced in one
place (`_sync_indicators`), after every step.

Stealth: ``StealthRequest(on)`` is honoured only if the machine was built
with ``stealth_allowed=True`` (an administrator's policy); it suppresses the
indicators and is logged. Otherwise an ``on`` request gives
``Warn("stealth_refused")`` and a log line. A request to turn stealth on
while DOCKED is logged and ignored, since docking is what ends stealth.
Every change of stealth is a `StealthChanged` action (a `Log` with the new
state and its cause: ``"request"``, ``"gesture"`` or ``"docked"``), which
the firmware seals into the clip and reports to the dock.

The stealth gesture: while RECORDING, three short presses whose downs fall
within `STEALTH_GESTURE_S` toggle stealth, exactly as a `StealthRequest`
would (policy-gated; refused with ``Warn("stealth_refused")``). Each press
is still a bookmark: the gesture costs two extra marks, never a missed one.

Time: event times are made non-decreasing (an event stamped earlier than one
already handled is treated as happening at the latest time seen), because
events from different sources can be queued out of order by a few
milliseconds, and every event's time also advances the button decoder so a
hold is never missed for want of a `Tick`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .gestures import DEFAULT_DEBOUNCE_SECONDS, DEFAULT_HOLD_SECONDS, Gesture, GestureDecoder

STORAGE_LEVELS = ("ok", "low", "full")

WARN_STORAGE_LOW = "storage_low"
WARN_STORAGE_FULL = "storage_full"
WARN_DOCKED_WHILE_RECORDING = "docked_while_recording"
WARN_STEALTH_REFUSED = "stealth_refused"
WARN_FAULT = "fault"
STEALTH_GESTURE_PRESSES = 3
STEALTH_GESTURE_S = 2.0  # the three downs within this many seconds

WARN_KINDS = (WARN_STORAGE_LOW, WARN_STORAGE_FULL, WARN_DOCKED_WHILE_RECORDING, WARN_STEALTH_REFUSED, WARN_FAULT)


class Mode(enum.Enum):
    """What the camera is doing; see the module docstring for what each mode allows."""

    STANDBY = "standby"
    RECORDING = "recording"
    STOPPING = "stopping"
    DOCKED = "docked"
    FAULT = "fault"


# --- Events: what happened, and when (monotonic seconds) -----------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every input; `t` is the device's monotonic time in seconds."""

    t: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.t):
            raise ValueError(f"{type(self).__name__}.t must be a finite number of seconds, got {self.t!r}")


@dataclass(frozen=True, slots=True)
class ButtonDown(Event):
    """The record button's contact closed."""


@dataclass(frozen=True, slots=True)
class ButtonUp(Event):
    """The record button's contact opened."""


@dataclass(frozen=True, slots=True)
class Tick(Event):
    """Time passed with nothing else happening (lets a hold be noticed while the button is down)."""


@dataclass(frozen=True, slots=True)
class Trigger(Event):
    """An automatic start input fired: e.g. ``"holster"``, ``"taser"``, ``"lightbar"``."""

    source: str


@dataclass(frozen=True, slots=True)
class DockChanged(Event):
    """The camera was put into (`docked` true) or taken out of a dock."""

    docked: bool


@dataclass(frozen=True, slots=True)
class StorageLevel(Event):
    """The storage watcher's verdict: ``"ok"``, ``"low"`` (nearly full) or ``"full"``."""

    level: str

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if self.level not in STORAGE_LEVELS:
            raise ValueError(f"storage level must be one of {', '.join(STORAGE_LEVELS)}; got {self.level!r}")


@dataclass(frozen=True, slots=True)
class ClipClosed(Event):
    """The recorder finished closing and sealing the clip it was asked to stop."""


@dataclass(frozen=True, slots=True)
class Fault(Event):
    """Something the camera cannot record without is broken; `reason` says what."""

    reason: str


@dataclass(frozen=True, slots=True)
class FaultCleared(Event):
    """The fault is fixed and the recorder is ready again (any clip it was closing is dealt with)."""


@dataclass(frozen=True, slots=True)
class RecordCommand(Event):
    """Start or stop asked for by software (command line, SIGTERM), not by the officer's hand."""

    start: bool
    reason: str


@dataclass(frozen=True, slots=True)
class StealthRequest(Event):
    """Turn the recording indicators off (`on` true) or back on; honoured only if policy allows."""

    on: bool


# --- Actions: what the firmware must do, in order -----------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """Base of every output of `CameraStateMachine.handle`."""


@dataclass(frozen=True, slots=True)
class StartClip(Action):
    """Open a clip that begins with the drained pre-event buffer."""

    reason: str


@dataclass(frozen=True, slots=True)
class StopClip(Action):
    """Close and seal the open clip; the recorder answers with `ClipClosed`."""

    reason: str


@dataclass(frozen=True, slots=True)
class Bookmark(Action):
    """Mark the moment `t` (monotonic seconds) in the open clip."""

    t: float


@dataclass(frozen=True, slots=True)
class Indicators(Action):
    """Turn the recording indicators (flashing red circle, beep loop) on or off."""

    on: bool


@dataclass(frozen=True, slots=True)
class Warn(Action):
    """Tell the officer something is wrong (a distinct tone or LED pattern per `kind`)."""

    kind: str


@dataclass(frozen=True, slots=True)
class Log(Action):
    """A line for the camera's log: decisions that leave no other trace."""

    message: str


@dataclass(frozen=True, slots=True)
class StealthChanged(Log):
    """Stealth went on or off (`cause`: "request", "gesture" or "docked"); sealed in the clip, told to the dock."""

    on: bool = False
    cause: str = "request"


class CameraStateMachine:
    """Decides, event by event, when the camera records; see the module docstring for the rules.

    ``stealth_allowed`` is the administrator's policy on turning the
    indicators off; `hold_seconds` and `debounce_s` configure the button.
    """

    def __init__(
        self,
        *,
        stealth_allowed: bool = False,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
        debounce_s: float = DEFAULT_DEBOUNCE_SECONDS,
    ):
        self._stealth_allowed = stealth_allowed
        self._decoder = GestureDecoder(hold_seconds=hold_seconds, debounce_s=debounce_s)
        self._mode = Mode.STANDBY
        self._now = -math.inf
        self._docked = False
        self._storage = "ok"
        self._stealth = False
        self._indicators = False
        self._stop_reason: str | None = None
        self._fault_reason: str | None = None
        self._pending_start: str | None = None
        # The current press counts towards a bookmark or a stop only if it began in
        # RECORDING; cleared on every change of mode, which also consumes the press
        # that started the recording.
        self._armed = False
        self._armed_down_t = 0.0
        self._gesture_downs: list[float] = []  # downs of the recent short presses, for the stealth gesture

    # --- what the rest of the firmware may read ------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def recording(self) -> bool:
        return self._mode is Mode.RECORDING

    @property
    def stop_reason(self) -> str | None:
        """Why the most recent clip was stopped (None before the first stop)."""
        return self._stop_reason

    @property
    def fault_reason(self) -> str | None:
        """What the current fault is (None when not in FAULT)."""
        return self._fault_reason

    @property
    def docked(self) -> bool:
        return self._docked

    @property
    def storage(self) -> str:
        return self._storage

    @property
    def stealth(self) -> bool:
        """Whether stealth is in force (the indicators are suppressed while recording)."""
        return self._stealth

    @property
    def indicators_on(self) -> bool:
        """The indicator state the machine has asked for: RECORDING and not stealth."""
        return self._indicators

    @property
    def pending_start(self) -> str | None:
        """The reason of a start that will happen when the clip being closed is sealed."""
        return self._pending_start

    # --- the one entry point ---------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return the actions to carry out, in order."""
        if not isinstance(event, Event):
            raise TypeError(f"expected an Event, got {type(event).__name__}")
        t = max(event.t, self._now)
        self._now = t
        out: list[Action] = []

        if isinstance(event, ButtonDown):
            gestures = self._decoder.down(t)
        elif isinstance(event, ButtonUp):
            gestures = self._decoder.up(t)
        else:
            gestures = self._decoder.tick(t)
        for gesture in gestures:
            self._on_gesture(gesture, out)
            self._sync_indicators(out)

        match event:
            case ButtonDown() | ButtonUp() | Tick():
                pass
            case Trigger(source=source):
                self._request_start(f"trigger:{source}", out, deferrable=True)
            case RecordCommand(start=True, reason=reason):
                self._request_start(reason, out, deferrable=True)
            case RecordCommand(start=False, reason=reason):
                self._request_stop(reason, out)
            case DockChanged(docked=docked):
                self._on_dock(docked, out)
            case StorageLevel(level=level):
                self._on_storage(level, out)
            case ClipClosed():
                self._on_clip_closed(out)
            case Fault(reason=reason):
                self._on_fault(reason, out)
            case FaultCleared():
                self._on_fault_cleared(out)
            case StealthRequest(on=on):
                self._on_stealth(on, out)
            case _:
                raise TypeError(f"no rule for event type {type(event).__name__}")
        self._sync_indicators(out)
        return out

    # --- rules -----------------------------------------------------------------------------

    def _on_gesture(self, gesture: Gesture, out: list[Action]) -> None:
        mode = self._mode
        if gesture.kind == "down":
            if mode is Mode.RECORDING:
                self._armed = True
                self._armed_down_t = gesture.t
            elif mode is Mode.STANDBY:
                self._start("button", out)  # changing mode leaves this press unarmed: consumed
            elif mode is Mode.FAULT:
                out.append(Warn(WARN_FAULT))
                out.append(Log(f"button ignored: camera fault ({self._fault_reason})"))
            elif mode is Mode.STOPPING:
                out.append(Log("button ignored: the previous clip is still being sealed"))
            else:
                out.append(Log("button ignored: camera is docked"))
            return
        armed, self._armed = self._armed, False
        if not armed or mode is not Mode.RECORDING:
            return
        if gesture.kind == "press":
            out.append(Bookmark(self._armed_down_t))
            downs = [d for d in self._gesture_downs if self._armed_down_t - d <= STEALTH_GESTURE_S]
            downs.append(self._armed_down_t)
            if len(downs) >= STEALTH_GESTURE_PRESSES:
                downs = []
                self._on_stealth(not self._stealth, out, cause="gesture")
            self._gesture_downs = downs
        elif gesture.kind == "hold":
            self._stop("button", out)

    def _request_start(self, reason: str, out: list[Action], *, deferrable: bool) -> None:
        mode = self._mode
        if mode is Mode.STANDBY:
            self._start(reason, out)
        elif mode is Mode.RECORDING:
            out.append(Log(f"already recording; {reason} noted, no new clip"))
        elif mode is Mode.STOPPING and deferrable:
            self._pending_start = reason
            out.append(Log(f"{reason}: will start a new clip once the previous one is sealed"))
        elif mode is Mode.FAULT:
            out.append(Warn(WARN_FAULT))
            out.append(Log(f"cannot start ({reason}): camera fault ({self._fault_reason})"))
        else:
            out.append(Log(f"{reason} ignored: camera is {mode.value}"))

    def _request_stop(self, reason: str, out: list[Action]) -> None:
        if self._mode is Mode.RECORDING:
            self._stop(reason, out)
        elif self._mode is Mode.STOPPING and self._pending_start is not None:
            out.append(Log(f"{reason}: cancelled the pending start ({self._pending_start})"))
            self._pending_start = None
        else:
            out.append(Log(f"stop ({reason}) ignored: not recording"))

    def _start(self, reason: str, out: list[Action]) -> None:
        if self._storage == "full":
            out.append(Warn(WARN_STORAGE_FULL))
            out.append(Log(f"cannot start ({reason}): storage is full"))
            return
        out.append(StartClip(reason))
        self._enter(Mode.RECORDING, out)

    def _stop(self, reason: str, out: list[Action]) -> None:
        out.append(StopClip(reason))
        self._stop_reason = reason
        self._enter(Mode.STOPPING, out)

    def _on_dock(self, docked: bool, out: list[Action]) -> None:
        if docked == self._docked:
            out.append(Log(f"dock report repeated (docked={docked})"))
            return
        self._docked = docked
        mode = self._mode
        if docked:
            if mode is Mode.STANDBY:
                self._enter(Mode.DOCKED, out)
            elif mode is Mode.RECORDING:
                self._stop("docked", out)
                out.append(Warn(WARN_DOCKED_WHILE_RECORDING))
            elif mode is Mode.STOPPING:
                out.append(Log("docked while the clip is being sealed: docking once it is"))
            else:
                out.append(Log("docked during a fault: the camera counts as docked once it is cleared"))
        elif mode is Mode.DOCKED:
            self._enter(Mode.STANDBY, out)
        else:
            out.append(Log(f"undocked while {mode.value}"))

    def _on_storage(self, level: str, out: list[Action]) -> None:
        previous, self._storage = self._storage, level
        if level == "full":
            if self._mode is Mode.RECORDING:
                self._stop("storage full", out)
            if previous != "full":
                out.append(Warn(WARN_STORAGE_FULL))
        elif level == "low" and previous != "low":
            out.append(Warn(WARN_STORAGE_LOW))

    def _on_clip_closed(self, out: list[Action]) -> None:
        if self._mode is not Mode.STOPPING:
            out.append(Log(f"clip closed reported while {self._mode.value}: nothing to do"))
            return
        pending, self._pending_start = self._pending_start, None
        self._enter(Mode.DOCKED if self._docked else Mode.STANDBY, out)
        if pending is not None:
            self._request_start(pending, out, deferrable=False)

    def _on_fault(self, reason: str, out: list[Action]) -> None:
        if self._mode is Mode.RECORDING:
            self._stop(f"fault: {reason}", out)
        self._fault_reason = reason
        self._pending_start = None
        out.append(Warn(WARN_FAULT))
        out.append(Log(f"fault: {reason}"))
        self._enter(Mode.FAULT, out)

    def _on_fault_cleared(self, out: list[Action]) -> None:
        if self._mode is not Mode.FAULT:
            out.append(Log(f"fault cleared while {self._mode.value}: nothing to do"))
            return
        out.append(Log(f"fault cleared ({self._fault_reason})"))
        self._fault_reason = None
        self._enter(Mode.DOCKED if self._docked else Mode.STANDBY, out)

    def _on_stealth(self, on: bool, out: list[Action], *, cause: str = "request") -> None:
        if not self._stealth_allowed:
            if on:
                out.append(Warn(WARN_STEALTH_REFUSED))
                out.append(Log("stealth refused: not allowed by policy; indicators stay on while recording"))
            else:
                out.append(Log("stealth off requested: stealth is not in use"))
            return
        if on and self._mode is Mode.DOCKED:
            out.append(Log("stealth request ignored while docked: the dock readies the camera for its next wearer"))
            return
        if on == self._stealth:
            out.append(Log(f"stealth already {'on' if on else 'off'}"))
            return
        self._stealth = on
        out.append(StealthChanged("stealth on: recording indicators suppressed" if on
                                  else "stealth off: indicators restored", on=on, cause=cause))

    def _enter(self, mode: Mode, out: list[Action]) -> None:
        if mode is self._mode:
            return
        self._mode = mode
        self._armed = False
        self._gesture_downs = []
        if mode is Mode.DOCKED:
            self._pending_start = None
            if self._stealth:
                self._stealth = False
                out.append(StealthChanged("stealth ended on docking", on=False, cause="docked"))

    def _sync_indicators(self, out: list[Action]) -> None:
        wanted = self._mode is Mode.RECORDING and not self._stealth
        if wanted != self._indicators:
            self._indicators = wanted
            out.append(Indicators(wanted))
