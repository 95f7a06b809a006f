"""Microphones: where sound comes from, behind one interface.

Every source yields :class:`AudioChunk` objects: mono signed 16-bit samples
at 48 kHz (what AAC-LC and every body-worn camera record), each chunk its own
array, stamped with the ``time.monotonic()`` instant of its *first sample*:
the same clock the camera sources stamp frames with, which is what lets the
firmware give audio and video presentation times from one clock so that an
opened clip plays in sync.  ``first_sample`` counts samples since the source
started; a jump in it means samples were lost (an overrun), never silently
closed up.

Sources:

* :class:`SyntheticAudioSource`: a known pattern (clicks on the monotonic
  clock's multiples of ``period_s``, or tones), for tests and laptops.  With
  :class:`~openbwv.hw.camera_source.SyntheticSource`'s ``flash_period_s``
  set to the same period, a click and a white flash happen at the same
  instant: the A/V sync test's subject.
* :class:`FileAudioSource`: any file FFmpeg decodes (e.g. speech made with
  Debian's ``espeak-ng`` by :func:`make_speech_wav`), resampled to 48 kHz mono.
* :class:`AlsaAudioSource`: a USB or I2S microphone through ALSA, read with
  PyAV's ``alsa`` input format (the wheel bundles FFmpeg's ALSA input and its
  own libasound; see the class for the one setting that needs).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import AudioError, AudioOpenFailed, BackendUnavailable, EndOfStream

SAMPLE_RATE = 48_000
CHANNELS = 1
CHUNK_SAMPLES = 1024  # one AAC-LC frame: 21.3 ms
PATTERNS = ("clicks", "tones", "silence")
# Where Debian's (and Raspberry Pi OS's) libasound keeps its configuration.
SYSTEM_ALSA_CONFIG = Path("/usr/share/alsa/alsa.conf")


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """Consecutive samples from a microphone and when the first of them was captured."""

    samples: np.ndarray  # int16, shape (n,)
    first_sample: int
    monotonic: float
    utc_ns: int
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def sample_time(self, i: int) -> float:
        """The monotonic capture time of ``samples[i]``."""
        return self.monotonic + i / self.sample_rate


class AudioSource(ABC):
    """A microphone: :meth:`read` blocks until the next chunk; iterate for all of them."""

    sample_rate: int = SAMPLE_RATE
    channels: int = CHANNELS
    name: str = "audio"

    @abstractmethod
    def read(self) -> AudioChunk:
        """The next chunk; raises :class:`EndOfStream` when a finite source is done or closed."""

    def close(self) -> None:
        """Release the device.  Idempotent."""

    def __iter__(self) -> Iterator[AudioChunk]:
        while True:
            try:
                yield self.read()
            except EndOfStream:
                return

    def __enter__(self) -> "AudioSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SampleClock:
    """Monotonic capture times for a stream of samples whose own clock is the sound card's crystal.

    Pure: the caller passes each chunk's sample count and the monotonic time
    it arrived.  A chunk's first sample is stamped from the sample count
    (so stamps advance by exactly ``n / rate``: no jitter from the scheduler
    reaches the presentation times), anchored to the arrivals and pulled
    towards them by ``gain`` per chunk, because a 50 ppm crystal drifts 2 s
    from the monotonic clock over a 12-hour shift.  A gap larger than
    ``resync_s`` (samples lost to an overrun, a stalled device) re-anchors at
    once, and :attr:`resyncs` counts it.
    """

    def __init__(self, rate: int = SAMPLE_RATE, *, gain: float = 0.01, resync_s: float = 0.1):
        if rate <= 0:
            raise AudioError(f"sample rate {rate!r} is not usable; expected a positive number like 48000")
        self.rate = rate
        self.gain = gain
        self.resync_s = resync_s
        self._anchor: float | None = None  # monotonic time of sample 0
        self.samples = 0
        self.resyncs = 0

    def stamp(self, n: int, arrival_mono: float) -> tuple[int, float]:
        """(index of the chunk's first sample, its monotonic capture time) for ``n`` samples that arrived now."""
        observed_first = arrival_mono - n / self.rate  # the chunk was complete when it arrived
        if self._anchor is None:
            self._anchor = observed_first
        predicted_first = self._anchor + self.samples / self.rate
        error = observed_first - predicted_first
        if abs(error) > self.resync_s:
            self._anchor += error
            self.resyncs += 1
        else:
            self._anchor += error * self.gain
        first = self.samples
        self.samples += n
        return first, self._anchor + first / self.rate


class _Pacer:
    """Releases sample ``n`` no earlier than ``start + n / rate`` (real time)."""

    def __init__(self, rate: int):
        self._rate = rate
        self.start: float | None = None

    def wait_until_sample(self, n: int) -> float:
        now = time.monotonic()
        if self.start is None:
            self.start = now - n / self._rate
        due = self.start + n / self._rate
        if due > now:
            time.sleep(due - now)
        return self.start


def _utc_ns_at(mono: float) -> int:
    return time.time_ns() - int((time.monotonic() - mono) * 1e9)


class SyntheticAudioSource(AudioSource):
    """A known pattern, generated sample by sample from each sample's monotonic time.

    ``"clicks"``: silence with a click (a 3 kHz tone burst, ``click_ms`` long,
    full onset at its first sample) at every multiple of ``period_s`` on the
    monotonic clock; ``"tones"``: a continuous tone stepping through 440, 660
    and 880 Hz every ``period_s`` with the clicks on top; ``"silence"``.

    Paced (the default), chunk ``k`` is released when its last sample has
    been "heard", as a real microphone delivers; unpaced, chunks come as fast
    as read, stamped where they would have been (benchmarks).
    """

    CLICK_HZ = 3000.0

    def __init__(self, pattern: str = "clicks", *, period_s: float = 2.0, click_ms: float = 10.0,
                 chunk_samples: int = CHUNK_SAMPLES, paced: bool = True, level: float = 0.8,
                 sample_limit: int | None = None):
        if pattern not in PATTERNS:
            raise AudioError(f"synthetic audio pattern {pattern!r} is not known; expected one of {', '.join(PATTERNS)}")
        if not 0.05 <= period_s <= 3600:
            raise AudioError(f"synthetic audio period {period_s!r} s is out of range; expected 0.05 to 3600")
        if not 0.5 <= click_ms <= 0.5 * period_s * 1000:
            raise AudioError(f"click length {click_ms!r} ms is out of range; expected 0.5 ms to half the period")
        if not 64 <= chunk_samples <= SAMPLE_RATE:
            raise AudioError(f"chunk of {chunk_samples!r} samples is out of range; expected 64 to {SAMPLE_RATE}")
        self.pattern, self.period_s, self.click_s = pattern, float(period_s), click_ms / 1000
        self.chunk_samples = chunk_samples
        self.level = level
        self.sample_limit = sample_limit
        self.name = f"synthetic:{pattern}"
        self._pacer = _Pacer(SAMPLE_RATE)
        self._paced = paced
        self._next = 0
        self._closed = False

    def render(self, start_mono: float, first: int, n: int) -> np.ndarray:
        """Samples ``first .. first + n`` of a stream whose sample 0 is at ``start_mono`` (pure)."""
        t = start_mono + (first + np.arange(n, dtype=np.float64)) / SAMPLE_RATE
        phase = np.mod(t, self.period_s)
        wave = np.zeros(n, dtype=np.float64)
        if self.pattern == "tones":
            step = np.floor(t / self.period_s).astype(np.int64) % 3
            freq = np.array([440.0, 660.0, 880.0])[step]
            wave += 0.25 * np.sin(2 * np.pi * freq * t)
        if self.pattern in ("clicks", "tones"):
            click = phase < self.click_s
            wave[click] = np.sin(2 * np.pi * self.CLICK_HZ * phase[click] + np.pi / 2)  # starts at full level
        return np.round(np.clip(wave * self.level, -1, 1) * 32767).astype(np.int16)

    def read(self) -> AudioChunk:
        if self._closed:
            raise EndOfStream("synthetic audio source is closed")
        first = self._next
        n = self.chunk_samples
        if self.sample_limit is not None:
            n = min(n, self.sample_limit - first)
            if n <= 0:
                raise EndOfStream(f"synthetic audio source reached its limit of {self.sample_limit} samples")
        if self._paced:
            start = self._pacer.wait_until_sample(first + n)
        else:
            if self._pacer.start is None:
                self._pacer.start = time.monotonic()
            start = self._pacer.start
        self._next = first + n
        mono = start + first / SAMPLE_RATE
        return AudioChunk(self.render(start, first, n), first, mono, _utc_ns_at(mono))

    def close(self) -> None:
        self._closed = True


def _to_mono_s16(frames: list[Any]) -> np.ndarray:
    """PyAV audio frames already resampled to s16 mono, as one int16 array."""
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


class FileAudioSource(AudioSource):
    """A recording played as if it were the microphone: any file FFmpeg decodes, made 48 kHz mono.

    Paced by default (real time), ending with :class:`EndOfStream` unless
    ``loop``.  The whole file is decoded at construction, so a file that is
    missing or holds no audio is an error now, not half-way through a clip.
    """

    def __init__(self, path: str | Path, *, paced: bool = True, loop: bool = False,
                 chunk_samples: int = CHUNK_SAMPLES):
        import av

        self.path = Path(path)
        self.name = f"file:{self.path.name}"
        try:
            container = av.open(str(self.path))
        except (OSError, av.FFmpegError) as exc:
            raise AudioOpenFailed(f"could not open audio file {str(self.path)!r} ({exc}); "
                                  "expected a WAV, FLAC, MP3, ... file that FFmpeg can decode") from None
        with container:
            if not container.streams.audio:
                raise AudioOpenFailed(f"{str(self.path)!r} has no audio stream; expected a sound file")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            out: list[Any] = []
            for frame in container.decode(audio=0):
                out.extend(resampler.resample(frame))
            out.extend(resampler.resample(None))
        self._samples = _to_mono_s16(out)
        if len(self._samples) == 0:
            raise AudioOpenFailed(f"{str(self.path)!r} decoded to no samples; expected some sound")
        self.chunk_samples = chunk_samples
        self._loop = loop
        self._paced = paced
        self._pacer = _Pacer(SAMPLE_RATE)
        self._next = 0  # samples delivered
        self._closed = False

    @property
    def seconds(self) -> float:
        return len(self._samples) / SAMPLE_RATE

    def read(self) -> AudioChunk:
        if self._closed:
            raise EndOfStream(f"audio file source {self.path.name} is closed")
        total = len(self._samples)
        first = self._next
        if not self._loop and first >= total:
            raise EndOfStream(f"audio file {self.path.name} ended after {total} samples")
        n = self.chunk_samples if self._loop else min(self.chunk_samples, total - first)
        idx = (first + np.arange(n)) % total
        samples = self._samples[idx]
        if self._paced:
            start = self._pacer.wait_until_sample(first + n)
        else:
            if self._pacer.start is None:
                self._pacer.start = time.monotonic()
            start = self._pacer.start
        self._next = first + n
        mono = start + first / SAMPLE_RATE
        return AudioChunk(samples, first, mono, _utc_ns_at(mono))

    def close(self) -> None:
        self._closed = True


def prepare_alsa_environment(environ: dict[str, str] | None = None) -> str | None:
    """Point PyAV's bundled libasound at the system's ALSA configuration, unless already pointed.

    The PyAV wheel carries its own libasound, built to look for its
    configuration under a build directory that does not exist on any
    installed system; without ``ALSA_CONFIG_PATH`` it knows no PCM at all and
    every device, even ``hw:1,0``, is an "Unknown PCM".  ALSA reads the
    variable at its first PCM open, so this must run before the first
    microphone is opened.  Returns the path in force (None: no system file).
    """
    env = os.environ if environ is None else environ
    if env.get("ALSA_CONFIG_PATH"):
        return env["ALSA_CONFIG_PATH"]
    if SYSTEM_ALSA_CONFIG.exists():
        env["ALSA_CONFIG_PATH"] = str(SYSTEM_ALSA_CONFIG)
        return str(SYSTEM_ALSA_CONFIG)
    return None


class AlsaAudioSource(AudioSource):
    """A microphone through ALSA, with PyAV's ``alsa`` input format.

    ``device`` is an ALSA PCM name: ``plughw:CARD=Device,DEV=0`` for a USB
    microphone, ``plughw:CARD=sndrpii2scard,DEV=0`` (or the name your
    overlay gives) for an I2S MEMS microphone; ``plughw`` rather than ``hw``
    lets ALSA convert the card's native format (I2S microphones deliver
    32-bit stereo) to the 48 kHz mono 16-bit asked for.  ``arecord -L`` lists
    the names.  Chunks are whatever ALSA delivers (a period), stamped by a
    :class:`SampleClock`: FFmpeg's own ALSA timestamps are wall-clock time,
    which the dock may step, so they are not used.
    """

    def __init__(self, device: str = "default", *, sample_rate: int = SAMPLE_RATE):
        try:
            import av
        except ImportError as exc:  # pragma: no cover - av is a dependency
            raise BackendUnavailable(f"audio source 'alsa' needs PyAV ({exc})") from None
        if "alsa" not in av.formats_available:
            raise BackendUnavailable("audio source 'alsa' needs FFmpeg's alsa input format, "
                                     "which this PyAV build does not have")
        prepare_alsa_environment()
        self.device = device
        self.name = f"alsa:{device}"
        try:
            self._container: Any = av.open(device, format="alsa",
                                           options={"sample_rate": str(sample_rate), "channels": str(CHANNELS)})
        except (OSError, av.FFmpegError) as exc:
            raise AudioOpenFailed(
                f"could not open ALSA capture device {device!r} through PyAV ({exc}); expected a microphone "
                "that `arecord -L` lists (e.g. plughw:CARD=Device,DEV=0 for a USB one), not in use by another "
                "program, and a user in the 'audio' group"
            ) from None
        stream = self._container.streams.audio[0]
        self._stream = stream
        # A pass-through when the card already gives 48 kHz mono s16; a conversion when it does not.
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._packets = self._container.demux(stream)
        self._clock = SampleClock(SAMPLE_RATE)

    @property
    def resyncs(self) -> int:
        """How often the stream had a gap (lost samples) and its stamps were re-anchored."""
        return self._clock.resyncs

    def read(self) -> AudioChunk:
        if self._container is None:
            raise EndOfStream(f"ALSA source {self.device!r} is closed")
        import av

        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                raise AudioError(f"ALSA device {self.device!r} stopped delivering samples") from None
            except (OSError, av.FFmpegError) as exc:
                raise AudioError(f"ALSA device {self.device!r} failed while capturing ({exc})") from None
            frames = [r for f in packet.decode() for r in self._resampler.resample(f)]
            samples = _to_mono_s16(frames)
            if len(samples):
                break
        arrived = time.monotonic()
        first, mono = self._clock.stamp(len(samples), arrived)
        return AudioChunk(samples, first, mono, _utc_ns_at(mono))

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None


def make_speech_wav(path: str | Path, text: str = "Police. Stop where you are. This encounter is being recorded.",
                    *, voice: str = "en-gb") -> Path:
    """Speech for an emulated microphone, made with Debian's espeak-ng (scripts/system-packages.sh installs it)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BackendUnavailable("espeak-ng is not installed (Debian package espeak-ng); it makes the speech "
                                 "an emulated microphone plays")
    path = Path(path)
    result = subprocess.run([exe, "-v", voice, "-w", str(path), text], capture_output=True, text=True, timeout=60)
    if result.returncode != 0 or not path.exists():
        raise AudioError(f"espeak-ng could not write {path} (exit {result.returncode}): {result.stderr.strip()[-300:]}")
    return path


def onset_times(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, threshold: float = 0.3,
                refractory_s: float = 0.2) -> list[float]:
    """Seconds (from sample 0) at which the level first rises above ``threshold`` of full scale.

    For measuring where clicks landed in a recording; a new onset is counted
    only ``refractory_s`` after the previous one.
    """
    x = np.abs(samples.astype(np.float64))
    if samples.dtype == np.int16:
        x /= 32768.0
    above = np.nonzero(x > threshold)[0]
    out: list[float] = []
    last = -math.inf
    for i in above:
        t = i / sample_rate
        if t - last >= refractory_s:
            out.append(t)
            last = t
    return out
