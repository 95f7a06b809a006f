"""Sound: the recording beeps and alarms, from a buzzer on a Pi or a sound card on a laptop.

Every output has the same small interface, :class:`Sound`: ``beep(frequency,
duration)`` queues a tone and returns at once (the firmware's state machine
must never stall on a beep), a worker thread plays the queue in order, and
each tone's start and stop go to the hardware trace.  Backends:

* :class:`BuzzerSound`: a PWM square wave on the buzzer pin (gpiozero
  ``PWMOutputDevice``); in emulation the pin is a mock PWM pin, so the tone
  shows up in the trace as the buzzer's level and frequency.
* :class:`SimpleaudioSound`: a sine tone through ALSA with simpleaudio.
* :class:`SilentSound`: nothing audible; keeps the timing and the trace.

With no sound card (CI), keep the real simpleaudio path and point ALSA's
default PCM at a file (:func:`write_alsa_file_sink_config`).  ALSA reads
``ALSA_CONFIG_PATH`` once, when libasound is first loaded: set it before
:class:`SimpleaudioSound` is first constructed in the process, which is the
moment simpleaudio (and so libasound) is imported.  In tests, play in a
subprocess given the variable in its environment.
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidTone, SoundError
from .trace import HardwareTrace

if TYPE_CHECKING:
    from gpiozero import PWMOutputDevice

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
SOUND_DEVICE = "sound"
MAX_TONE_SECONDS = 10.0


@dataclass(frozen=True)
class Tone:
    frequency: float
    duration: float


def tone_samples(frequency: float, duration: float, *, sample_rate: int = SAMPLE_RATE,
                 volume: float = 0.5, fade: float = 0.005) -> np.ndarray:
    """A mono signed 16-bit sine tone of exactly ``round(duration * sample_rate)`` samples.

    The ends fade in and out over ``fade`` seconds (a raised cosine): a tone
    cut off at a non-zero sample clicks, and a click is what officers learn
    to ignore.
    """
    n = int(round(duration * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = np.sin(2.0 * np.pi * frequency * t)
    ramp = min(int(fade * sample_rate), n // 2)
    if ramp > 0:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        wave[:ramp] *= edge
        wave[n - ramp:] *= edge[::-1]
    return np.round(wave * volume * 32767).astype("<i2")


class Sound(ABC):
    """A tone output with a queue, played by one worker thread.

    Tones play one after another in the order asked for (two quick calls
    make a two-tone signal).  The queue is bounded: if the firmware asks
    for more than ``max_pending`` tones while earlier ones still play, the
    extra ones are dropped and traced as ``beep_dropped`` rather than piling
    up into minutes of beeping.
    """

    #: Frequencies this output can make, in Hz.
    min_frequency: float = 20.0
    max_frequency: float = 20000.0

    def __init__(self, *, trace: HardwareTrace | None = None, device: str = SOUND_DEVICE,
                 max_pending: int = 8):
        self._trace = trace
        self._device = device
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: deque[Tone] = deque()
        self._busy = False
        self._closed = False
        self._stop = threading.Event()
        self.dropped = 0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"openbwv-{type(self).__name__}", daemon=True)
        self._thread.start()

    def beep(self, frequency: float, duration: float) -> None:
        """Queue a tone of ``frequency`` Hz for ``duration`` seconds; returns without waiting."""
        if not self.min_frequency <= frequency <= self.max_frequency:
            raise InvalidTone(f"frequency {frequency!r} Hz is outside what {type(self).__name__} plays "
                              f"({self.min_frequency:g} to {self.max_frequency:g} Hz)")
        if not 0 < duration <= MAX_TONE_SECONDS:
            raise InvalidTone(f"duration {duration!r} s is out of range; expected more than 0 and at most {MAX_TONE_SECONDS:g} s")
        with self._cond:
            if self._closed:
                raise SoundError(f"{type(self).__name__} is closed; beep({frequency}, {duration}) cannot play")
            if len(self._pending) >= self._max_pending:
                self.dropped += 1
                self._record(event="beep_dropped", frequency=float(frequency), duration=float(duration))
                return
            self._pending.append(Tone(float(frequency), float(duration)))
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued tone has played; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or bool(self._pending)

    def close(self) -> None:
        """Cut the current tone short, forget queued ones, stop the worker, release the output."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        self._stop.set()
        self._thread.join(timeout=MAX_TONE_SECONDS + 1)
        self._close_output()

    def __enter__(self) -> "Sound":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _play(self, tone: Tone, stop: threading.Event) -> None:
        """Play one tone, blocking for its length; return early once ``stop`` is set."""

    def _close_output(self) -> None:
        """Release the output device (after the worker has stopped)."""

    def _record(self, **fields: Any) -> None:
        if self._trace is not None:
            self._trace.record(self._device, **fields)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                tone = self._pending.popleft()
                self._busy = True
            try:
                self._record(event="beep_start", frequency=tone.frequency, duration=tone.duration)
                try:
                    self._play(tone, self._stop)
                except Exception as exc:  # the worker must survive a bad sound card
                    self.last_error = exc
                    log.error("%s could not play %s: %s", type(self).__name__, tone, exc)
                    self._record(event="beep_error", error=f"{type(exc).__name__}: {exc}")
                self._record(event="beep_stop")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


class SilentSound(Sound):
    """Plays nothing, for as long as the tone would last: timing and trace without noise."""

    def _play(self, tone: Tone, stop: threading.Event) -> None:
        stop.wait(tone.duration)


class BuzzerSound(Sound):
    """A square-wave tone on the buzzer's PWM pin (duty 50 %, the loudest for a transducer)."""

    min_frequency = 100.0
    # lgpio's software PWM tops out at 10 kHz; buzzers are loudest near 2-4 kHz anyway.
    max_frequency = 10000.0

    def __init__(self, buzzer: "PWMOutputDevice", *, duty: float = 0.5, **kwargs: Any):
        self._buzzer = buzzer
        self._duty = duty
        super().__init__(**kwargs)

    def _play(self, tone: Tone, stop: threading.Event) -> None:
        self._buzzer.frequency = tone.frequency
        self._buzzer.value = self._duty
        try:
            stop.wait(tone.duration)
        finally:
            self._buzzer.value = 0


class SimpleaudioSound(Sound):
    """A sine tone through ALSA's default PCM with simpleaudio (laptops, CI with a file sink).

    simpleaudio is imported here, not at module level, because importing it
    loads libasound, which fixes ALSA's configuration for the process.
    """

    def __init__(self, *, sample_rate: int = SAMPLE_RATE, volume: float = 0.5, **kwargs: Any):
        try:
            import simpleaudio
        except ImportError as exc:
            from .errors import BackendUnavailable
            raise BackendUnavailable(
                f"sound backend 'simpleaudio' needs the simpleaudio package ({exc}); "
                "it builds against Debian's libasound2-dev"
            ) from None
        self._sa = simpleaudio
        self._sample_rate = sample_rate
        self._volume = volume
        self.max_frequency = sample_rate / 2
        super().__init__(**kwargs)

    def _play(self, tone: Tone, stop: threading.Event) -> None:
        samples = tone_samples(tone.frequency, tone.duration, sample_rate=self._sample_rate, volume=self._volume)
        play = self._sa.play_buffer(samples.tobytes(), 1, 2, self._sample_rate)
        while play.is_playing():
            if stop.wait(0.005):
                play.stop()
                break


# --- ALSA file sink -----------------------------------------------------------

def alsa_file_sink_config(sink_path: str | Path, *, append: bool = True) -> str:
    """ALSA configuration text that routes the default PCM into ``sink_path``.

    The raw samples are written as the stream carries them (simpleaudio here:
    mono signed 16-bit little-endian at 44.1 kHz).  ``ALSA_CONFIG_PATH``
    replaces ALSA's whole configuration, so the slave PCM is spelled out
    inline (``slave.pcm "null"`` would refer to a definition that no longer
    exists: "Error opening PCM device").

    ALSA's file plugin reopens the file for every stream and writes from the
    start, so each beep would replace the last; with ``append`` the samples
    go through ``cat >>`` (the plugin's ``|command`` form) and the file
    accumulates every tone played.
    """
    path = str(Path(sink_path).resolve())
    if any(c in path for c in '"\\\n'):
        raise SoundError(f"ALSA file sink path {path!r} contains a quote, backslash or newline; choose a plainer path")
    target = f"|cat >> {shlex.quote(path)}" if append else path
    return (
        "# Written by openbwv.hw.sound: the default PCM plays into a file, not a sound card.\n"
        f'pcm.!default {{ type file; slave {{ pcm {{ type null }} }} file "{target}"; format "raw" }}\n'
    )


def write_alsa_file_sink_config(config_path: str | Path, sink_path: str | Path, *, append: bool = True) -> dict[str, str]:
    """Write the ALSA config for a file sink, empty the sink, and return the environment to use.

    Returns ``{"ALSA_CONFIG_PATH": ...}`` to merge into a subprocess's
    environment (or into ``os.environ`` before libasound is loaded; see
    :func:`route_default_pcm_to_file`).
    """
    config_path = Path(config_path)
    config_path.write_text(alsa_file_sink_config(sink_path, append=append), encoding="utf-8")
    Path(sink_path).write_bytes(b"")
    return {"ALSA_CONFIG_PATH": str(config_path.resolve())}


def libasound_loaded() -> bool:
    """Whether this process has already mapped libasound (and so read its configuration)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any("libasound" in line for line in maps)
    except OSError:
        return False


def route_default_pcm_to_file(config_path: str | Path, sink_path: str | Path, *, append: bool = True) -> None:
    """Point this process's ALSA default PCM at ``sink_path``; fails if ALSA was already loaded.

    Setting ``ALSA_CONFIG_PATH`` after libasound has loaded is silently
    ignored by ALSA, so beeps would go to the sound card (or fail) while the
    caller believes they go to the file; this refuses instead.
    """
    if libasound_loaded():
        raise SoundError("libasound is already loaded in this process, so ALSA_CONFIG_PATH would be ignored; "
                         "route the PCM before the first SimpleaudioSound, or play in a subprocess")
    os.environ.update(write_alsa_file_sink_config(config_path, sink_path, append=append))


def read_sink_samples(sink_path: str | Path) -> np.ndarray:
    """The signed 16-bit samples in a file sink (read it after the playing process has exited)."""
    return np.frombuffer(Path(sink_path).read_bytes(), dtype="<i2")
