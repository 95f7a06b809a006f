"""What the public sees and hears: the red circle flashes and the camera beeps while it records.

The promise is "while recording, and only then": `recording(True)` starts the
red LED flashing (gpiozero's own blink thread) and a beep every
`beep_interval_s`, the first at once; `recording(False)` stops both before it
returns.  Warnings use the status LED and a lower double tone, so they cannot
be mistaken for the recording signal.  The battery alarm is a third pattern:
a falling three-tone chime (1400, 1000, 700 Hz) and two long flashes of the
status LED; critical adds a fourth, lower tone (500 Hz) and five long flashes.
In stealth the battery alarm shows on the status LED only: no tone gives the
officer away.
"""

from __future__ import annotations

import logging
import threading

from .config import IndicatorConfig

log = logging.getLogger("bwv.camera.indicators")

WARN_TONE_HZ = 600.0
BATTERY_TONES_HZ = (1400.0, 1000.0, 700.0)
BATTERY_CRITICAL_TONE_HZ = 500.0
BATTERY_TONE_S = 0.12


class Indicators:
    def __init__(self, hw, config: IndicatorConfig):
        self.hw = hw
        self.config = config
        self._lock = threading.Lock()
        self._beeper: threading.Thread | None = None
        self._stop_beeps = threading.Event()
        self.on = False
        self.stealth = False
        self.beeps = 0

    def recording(self, on: bool) -> None:
        with self._lock:
            if on == self.on:
                return
            self.on = on
            if on and not self.stealth:
                self._start()
            elif not on:
                self._stop()

    def set_stealth(self, stealth: bool) -> None:
        """Policy-gated by the state machine; here only carried out (and logged)."""
        with self._lock:
            self.stealth = stealth
            log.warning("stealth %s: indicators %s", "ON" if stealth else "off",
                        "suppressed" if stealth else "restored")
            if self.on:
                self._stop() if stealth else self._start()

    def _start(self) -> None:
        c = self.config
        period = 1.0 / c.flash_hz
        self.hw.record_led.blink(on_time=period * c.duty, off_time=period * (1 - c.duty), background=True)
        self._stop_beeps.clear()
        self._beeper = threading.Thread(target=self._beep_loop, name="beep-loop", daemon=True)
        self._beeper.start()

    def _stop(self) -> None:
        self._stop_beeps.set()
        if self._beeper is not None:
            self._beeper.join()
            self._beeper = None
        self.hw.record_led.off()

    def _beep_loop(self) -> None:
        c = self.config
        while True:
            self.hw.sound.beep(c.beep_hz, c.beep_ms / 1000)
            self.beeps += 1
            if self._stop_beeps.wait(c.beep_interval_s):
                return

    def warn(self, kind: str) -> None:
        """A distinct pattern: three quick status-LED flashes and a low double tone."""
        log.warning("warning: %s", kind.replace("_", " "))
        self.hw.status_led.blink(on_time=0.1, off_time=0.1, n=3, background=True)
        self.hw.sound.beep(WARN_TONE_HZ, 0.15)
        self.hw.sound.beep(WARN_TONE_HZ, 0.15)

    def battery_alarm(self, critical: bool) -> None:
        """The battery pattern: falling chime and long status flashes (LED only in stealth)."""
        log.warning("battery %s", "CRITICAL: stopping to seal the clip" if critical else "low")
        self.hw.status_led.blink(on_time=0.6, off_time=0.3, n=5 if critical else 2, background=True)
        if self.stealth:
            return
        for hz in BATTERY_TONES_HZ + ((BATTERY_CRITICAL_TONE_HZ,) if critical else ()):
            self.hw.sound.beep(hz, BATTERY_TONE_S)

    def close(self) -> None:
        self.recording(False)
