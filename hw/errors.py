"""The exceptions of the hardware layer, in one tree.

Whoever reads these is often bringing up a camera on a bench, with a
multimeter in the other hand: every message says what was expected, what
was found, and where (board file, pin, device), so that the fix can be made
without reading this package's source.
"""

from __future__ import annotations


class HardwareError(Exception):
    """Anything wrong with the camera's hardware or with the way it was configured."""


class HardwareConfigError(HardwareError, ValueError):
    """The configuration asks for something that cannot be built as written."""


class UnknownBackend(HardwareConfigError):
    """A backend name (hardware, camera source, sound) that this build does not know."""

    def __init__(self, kind: str, name: object, known: tuple[str, ...]):
        self.kind = kind
        self.name = name
        self.known = known
        choices = ", ".join(repr(k) for k in known)
        super().__init__(f"{kind} backend {name!r} is not known; expected one of {choices}")


class BoardFileError(HardwareConfigError):
    """A board file is missing, is not TOML, or does not describe a usable wiring."""

    def __init__(self, message: str, *, path: str | None = None):
        self.reason = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class BackendUnavailable(HardwareError):
    """The chosen backend needs a library or a device that is not here (e.g. lgpio off a Pi)."""


class CameraError(HardwareError):
    """A camera source could not be opened or stopped delivering frames."""


class CameraOpenFailed(CameraError):
    """The device or file behind a camera source could not be opened."""


class EndOfStream(CameraError):
    """A finite source (a video file without looping) has no more frames; also raised after close()."""


class AudioError(HardwareError):
    """A microphone (audio source) could not be set up or stopped delivering samples."""


class AudioOpenFailed(AudioError):
    """The device or file behind an audio source could not be opened."""


class FuelGaugeError(HardwareError):
    """The fuel gauge is not the chip expected, does not answer, or was configured impossibly."""


class SoundError(HardwareError):
    """The sound output could not play a tone or was used after close()."""


class InvalidTone(SoundError, ValueError):
    """A tone outside what the sound output can play (frequency or duration out of range)."""


class GnssError(HardwareError):
    """The GNSS receiver could not be set up as configured."""


class GnssConfigError(GnssError, HardwareConfigError):
    """A GNSS choice that cannot be built: a serial source without a port, a log file that is not there."""


class TraceError(HardwareError):
    """A hardware trace could not be written, or a trace being read is not in the expected format."""


class TraceFormatError(TraceError, ValueError):
    """A line of a hardware trace is not the JSON object the format promises."""

    def __init__(self, message: str, *, line_number: int | None = None):
        self.reason = message
        self.line_number = line_number
        super().__init__(f"trace line {line_number}: {message}" if line_number else message)


class TraceAnalysisError(TraceError):
    """A trace does not hold enough of what an analysis needs (e.g. fewer than two LED flashes)."""
