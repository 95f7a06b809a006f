"""The hardware trace: what the emulated camera's LEDs, buzzer and inputs did, and when.

``bwv camera --hw-trace FILE`` writes one JSON object per line::

    {"t": 12.345678, "device": "record_led", "state": "on"}
    {"t": 12.401200, "device": "button", "state": "down"}
    {"t": 12.500000, "device": "sound", "event": "beep_start", "frequency": 2700.0, "duration": 0.1}

``t`` is ``time.monotonic()`` seconds, the clock gpiozero's mock pins stamp
their own state history with, so the trace and ``MockPin.states`` agree.
``state`` is a level (``on``/``off`` for outputs, ``down``/``up`` for the
button, ``docked``/``undocked``, ``active``/``inactive`` for triggers);
``event`` is a happening (``beep_start``, ``beep_stop``, ``beep_error``,
``beep_dropped``, and the first line's ``start``).  The first line for each
device carries ``"initial": true`` and gives its level when tracing began.

The lines come from the hardware itself, not from the firmware: pin levels
from the mock pins' state changes (see ``gpio.PinTracer``), beeps from the
sound output.  That is what makes the trace worth asserting on: firmware
that forgets to flash the LED cannot write a line saying it did.

Each line is flushed as it is written, so a test can read the file while the
camera runs and a crash loses nothing already traced.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Callable

from .errors import TraceError

TRACE_DEVICE = "trace"


class HardwareTrace:
    """Append-only JSON-lines recorder, safe to call from gpiozero's background threads."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise TraceError(f"cannot open hardware trace {self.path} for writing: {exc.strerror}") from None

    def start(self, **fields: object) -> None:
        """Write the first line: when (in UTC) monotonic time ``t`` was, and what was traced."""
        utc = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        self.record(TRACE_DEVICE, event="start", utc=utc, **fields)

    def record(self, device: str, *, t: float | None = None, state: str | None = None,
               event: str | None = None, **fields: object) -> None:
        """Write one line.  Lines arriving after :meth:`close` are dropped.

        Dropping rather than raising is deliberate: gpiozero's blink thread
        may switch an LED off while the camera is shutting down, and a trace
        must never be the reason a shutdown fails.
        """
        line: dict[str, object] = {"t": self._clock() if t is None else t, "device": device}
        if state is not None:
            line["state"] = state
        if event is not None:
            line["event"] = event
        line.update(fields)
        text = json.dumps(line, separators=(", ", ": ")) + "\n"
        with self._lock:
            if self._file is None:
                return
            self._file.write(text)
            self._file.flush()

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> "HardwareTrace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
