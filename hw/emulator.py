"""The hands of a test: pressing the emulated button, docking the emulated camera.

Inputs are driven the way the wiring would drive them, honouring each line's
active level from the board file: "press the button" pulls its pulled-up
line to ground, exactly as the switch does.  gpiozero's ``Button`` then
fires ``when_pressed`` in the calling thread, and the trace records the edge
from the pin itself.
"""

from __future__ import annotations

import time

from gpiozero.pins.mock import MockPin

from .board import Board
from .errors import HardwareConfigError
from .gpio import EmulatedPinFactory, GpioDevices


class Emulator:
    """Drives the inputs and reads the outputs of an emulated camera."""

    def __init__(self, factory: EmulatedPinFactory, board: Board, devices: GpioDevices):
        self._factory = factory
        self._board = board
        self._devices = devices

    def pin(self, name: str) -> MockPin:
        """The mock pin behind a device, e.g. to read ``pin("record_led").states``."""
        return self._factory.pin(self._board.pin(name).gpio_name)

    def set_input(self, name: str, active: bool) -> None:
        """Drive an input to its active or inactive level."""
        spec = self._board.pin(name)
        if spec.direction != "input":
            raise HardwareConfigError(f"{name!r} is an output on board {self._board.name!r}; only inputs can be driven")
        if name in self._board.triggers and name not in self._devices.triggers:
            enabled = ", ".join(map(repr, self._devices.triggers)) or "none"
            raise HardwareConfigError(f"trigger {name!r} is not enabled in this configuration (enabled: {enabled})")
        pin = self.pin(name)
        if active == spec.active_high:
            pin.drive_high()
        else:
            pin.drive_low()

    def settle_inputs(self) -> None:
        """Put every opened input at its inactive level: button up, out of the dock, triggers idle.

        A real line rests where its pull resistor holds it; a mock line with
        an external resistor (``pull = "none"``) would otherwise rest low,
        which for an active-low line reads as active.
        """
        for name in ("button", "dock_detect", *self._devices.triggers):
            self.set_input(name, False)

    def press_button(self) -> None:
        self.set_input("button", True)

    def release_button(self) -> None:
        self.set_input("button", False)

    def click_button(self, hold: float = 0.05) -> None:
        """Press, hold for ``hold`` seconds, release (blocks for ``hold``)."""
        self.press_button()
        time.sleep(hold)
        self.release_button()

    def set_docked(self, docked: bool) -> None:
        self.set_input("dock_detect", docked)

    def set_trigger(self, name: str, active: bool) -> None:
        if name not in self._board.triggers:
            known = ", ".join(map(repr, self._board.triggers)) or "none"
            raise HardwareConfigError(f"no trigger named {name!r} on board {self._board.name!r}; it has {known}")
        self.set_input(name, active)

    def output_is_on(self, name: str) -> bool:
        """Whether an output (LED, buzzer) is on, read from the device's pin and active level."""
        spec = self._board.pin(name)
        if spec.direction != "output":
            raise HardwareConfigError(f"{name!r} is an input on board {self._board.name!r}; use the device's is_active")
        level = float(self.pin(name).state)
        return (level if spec.active_high else 1.0 - level) > 0
