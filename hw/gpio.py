"""GPIO: the camera's LEDs, buzzer, button, dock contact and trigger inputs, through gpiozero.

gpiozero already has the seam we want: every device talks to a *pin*, and
pins come from a *pin factory*.  On a Pi the factory is lgpio (or RPi.GPIO on
a Pi 4); everywhere else it is :class:`EmulatedPinFactory`, a gpiozero
``MockFactory`` whose pins also report each change of level to a
:class:`PinTracer`.  The devices themselves (``LED``, ``Button``...) are
gpiozero's own, so the firmware runs the very same code on both.

Each :class:`~openbwv.hw.hardware.Hardware` gets its own factory, passed as
``pin_factory=`` to every device; nothing here touches gpiozero's global
``Device.pin_factory``, so tests (and two emulated cameras in one process)
cannot leak pins into each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from gpiozero import LED, Button, DigitalInputDevice, PWMOutputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from .board import PIN_FACTORIES, Board, PinSpec
from .errors import BackendUnavailable, HardwareConfigError, UnknownBackend
from .trace import HardwareTrace

# The buzzer idles at this PWM frequency; each beep sets its own.
BUZZER_IDLE_FREQUENCY = 2000

# What the trace calls the two levels of each input (outputs are on/off).
INPUT_WORDS: Mapping[str, tuple[str, str]] = {
    "button": ("down", "up"),
    "dock_detect": ("docked", "undocked"),
}
TRIGGER_WORDS = ("active", "inactive")
OUTPUT_WORDS = ("on", "off")

PinObserver = Callable[[MockPin, float, "bool | float"], None]


class _ObservedPinMixin:
    """Reports every change of level to the factory's observer, with the pin's own timestamp.

    ``MockPin._change_state`` is the single place a mock pin's level changes
    (outputs written by gpiozero, inputs driven by a test) and where it
    appends to ``MockPin.states``; hooking it means the trace sees exactly
    what that history records, at the same monotonic instant.
    """

    def _change_state(self, value):  # type: ignore[no-untyped-def]
        changed = super()._change_state(value)  # type: ignore[misc]
        if changed:
            observer = getattr(self.factory, "observer", None)  # type: ignore[attr-defined]
            if observer is not None:
                observer(self, self._last_change, self._state)  # type: ignore[attr-defined]
        return changed


class ObservedMockPin(_ObservedPinMixin, MockPin):
    """A digital mock pin whose level changes are observed."""


class ObservedMockPWMPin(_ObservedPinMixin, MockPWMPin):
    """A PWM mock pin (level = duty cycle) whose level changes are observed."""


class EmulatedPinFactory(MockFactory):
    """gpiozero's MockFactory, pretending to be the board's Pi, with observed pins.

    Pins listed in ``pwm_pins`` are made as PWM pins (the buzzer), all others
    as digital ones, so a PWM device on a digital line fails here just as it
    would on the real board.
    """

    def __init__(self, revision: str, pwm_pins: Iterable[str] = ()):
        super().__init__(revision=revision, pin_class=ObservedMockPin)
        self._pwm_pins = {self._canonical(name) for name in pwm_pins}
        self.observer: PinObserver | None = None

    def pin(self, name, pin_class=None, **kwargs):  # type: ignore[no-untyped-def]
        if pin_class is None and self._canonical(name) in self._pwm_pins:
            pin_class = ObservedMockPWMPin
        return super().pin(name, pin_class, **kwargs)

    def _canonical(self, name: object) -> str | None:
        for _header, info in self.board_info.find_pin(name):
            return info.name
        return None


def emulated_pin_factory(board: Board) -> EmulatedPinFactory:
    """A fresh mock factory for ``board`` (its own pins, its own reservations)."""
    pwm = [spec.gpio_name for spec in board.all_pins() if spec.pwm]
    return EmulatedPinFactory(board.mock_revision, pwm_pins=pwm)


def real_pin_factory(name: str) -> Factory:
    """The gpiozero pin factory for a real Pi, imported only when asked for.

    lgpio and RPi.GPIO exist only on a Pi (Raspberry Pi OS ships them as
    ``python3-lgpio`` / ``python3-rpi.gpio``); importing them anywhere else
    fails, which is why this is the only place that does.
    """
    if name not in PIN_FACTORIES:
        raise UnknownBackend("pin factory", name, PIN_FACTORIES)
    try:
        if name == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory as factory_class
        else:
            from gpiozero.pins.rpigpio import RPiGPIOFactory as factory_class
    except ImportError as exc:
        package = {"lgpio": "python3-lgpio", "rpigpio": "python3-rpi.gpio"}[name]
        raise BackendUnavailable(
            f"the 'pi' backend with pin factory {name!r} needs a library that is not importable here "
            f"({exc}); on Raspberry Pi OS install {package} and create the virtualenv with "
            "--system-site-packages, or use the 'emulated' backend off a Pi"
        ) from None
    try:
        return factory_class()
    except Exception as exc:  # lgpio raises its own error type, RPi.GPIO RuntimeError
        raise BackendUnavailable(
            f"pin factory {name!r} could not open the GPIO chip ({type(exc).__name__}: {exc}); "
            "expected to run on a Raspberry Pi as a user in the 'gpio' group"
        ) from None


class PinTracer:
    """Turns observed pin levels into trace lines named for the device on the pin.

    Only pins that were registered with :meth:`watch` are traced, so the
    pull resistor settling while a device is being built does not show up
    as a spurious button press.
    """

    def __init__(self, trace: HardwareTrace):
        self._trace = trace
        self._lock = threading.Lock()
        self._watched: dict[MockPin, tuple[PinSpec, tuple[str, str]]] = {}

    def watch(self, pin: MockPin, spec: PinSpec, words: tuple[str, str]) -> None:
        """Trace ``pin`` as ``spec.name``, writing its current level as the initial line."""
        with self._lock:
            self._watched[pin] = (spec, words)
        self._record(pin, spec, words, pin._last_change, pin.state, initial=True)

    def __call__(self, pin: MockPin, t: float, state: bool | float) -> None:
        with self._lock:
            entry = self._watched.get(pin)
        if entry is not None:
            self._record(pin, entry[0], entry[1], t, state, initial=False)

    def _record(self, pin: MockPin, spec: PinSpec, words: tuple[str, str], t: float,
                state: bool | float, *, initial: bool) -> None:
        level = float(state)
        value = level if spec.active_high else 1.0 - level
        fields: dict[str, object] = {}
        if initial:
            fields["initial"] = True
        if spec.pwm:
            fields["value"] = round(value, 6)
            fields["frequency"] = pin.frequency
        self._trace.record(spec.name, t=t, state=words[0] if value > 0 else words[1], **fields)


@dataclass
class GpioDevices:
    """The gpiozero devices of one camera, all on one pin factory."""

    record_led: LED
    status_led: LED
    buzzer: PWMOutputDevice
    button: Button
    dock_detect: DigitalInputDevice
    triggers: dict[str, DigitalInputDevice] = field(default_factory=dict)

    def all(self) -> list[tuple[str, object]]:
        return [("record_led", self.record_led), ("status_led", self.status_led), ("buzzer", self.buzzer),
                ("button", self.button), ("dock_detect", self.dock_detect), *self.triggers.items()]

    def close(self) -> None:
        """Switch the outputs off, then close every device (ending gpiozero's blink threads).

        Off first, explicitly: closing a gpiozero device only releases the
        pin, and a camera that shut down must not keep showing the red
        circle (or keep a tone on the buzzer) as if it were still recording.
        """
        for device in (self.record_led, self.status_led, self.buzzer):
            device.off()
        for _name, device in reversed(self.all()):
            device.close()  # type: ignore[attr-defined]


def open_gpio_devices(board: Board, factory: Factory, triggers: Iterable[str] = ()) -> GpioDevices:
    """Build the camera's devices from the board file on ``factory``.

    Triggers are opened only when named: an unfitted trigger line left
    floating (or pulled to its active level) must not start recordings.
    """
    wanted = list(dict.fromkeys(triggers))
    unknown = [name for name in wanted if name not in board.triggers]
    if unknown:
        known = ", ".join(map(repr, board.triggers)) or "none"
        raise HardwareConfigError(
            f"trigger(s) {', '.join(map(repr, unknown))} are not wired on board {board.name!r} "
            f"({board.source}); its triggers are {known}"
        )
    opened: list[object] = []
    try:
        def add(device):  # type: ignore[no-untyped-def]
            opened.append(device)
            return device

        pins = board.pins
        record_led = add(_led(pins["record_led"], factory))
        status_led = add(_led(pins["status_led"], factory))
        buzzer = add(PWMOutputDevice(pins["buzzer"].gpio_name, active_high=pins["buzzer"].active_high,
                                     initial_value=0, frequency=BUZZER_IDLE_FREQUENCY, pin_factory=factory))
        spec = pins["button"]
        button = add(Button(spec.gpio_name, pull_up=spec.pull_up,
                            active_state=None if spec.pull_up is not None else spec.active_high,
                            bounce_time=spec.bounce_time, pin_factory=factory))
        dock_detect = add(_input(pins["dock_detect"], factory))
        trigger_devices = {name: add(_input(board.triggers[name], factory)) for name in wanted}
    except Exception:
        for device in reversed(opened):
            device.close()  # type: ignore[attr-defined]
        raise
    return GpioDevices(record_led, status_led, buzzer, button, dock_detect, trigger_devices)


def trace_words(spec: PinSpec, *, is_trigger: bool) -> tuple[str, str]:
    """The (active, inactive) words the trace uses for a pin."""
    if spec.direction == "output":
        return OUTPUT_WORDS
    if is_trigger:
        return TRIGGER_WORDS
    return INPUT_WORDS.get(spec.name, TRIGGER_WORDS)


def _led(spec: PinSpec, factory: Factory) -> LED:
    return LED(spec.gpio_name, active_high=spec.active_high, initial_value=False, pin_factory=factory)


def _input(spec: PinSpec, factory: Factory) -> DigitalInputDevice:
    return DigitalInputDevice(spec.gpio_name, pull_up=spec.pull_up,
                              active_state=None if spec.pull_up is not None else spec.active_high,
                              bounce_time=spec.bounce_time, pin_factory=factory)
