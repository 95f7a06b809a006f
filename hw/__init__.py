"""OpenBWV hardware layer: the only code that touches hardware.

Each part sits behind a small interface with a real backend and an emulated
one, chosen by configuration (gpiozero's pin-factory pattern, applied to the
camera source and the sound output too)::

    from openbwv.hw import HardwareConfig, open_hardware

    with open_hardware(HardwareConfig(backend="emulated", trace_path="hw.jsonl")) as hw:
        hw.button.when_pressed = start_recording
        hw.record_led.blink(0.25, 0.25)       # the red circle, 2 Hz
        hw.sound.beep(2700, 0.1)              # returns at once
        frame = hw.camera.read()              # BGR uint8, with capture times
        hw.emulator.press_button()            # emulation only: the test's hand
        for item in hw.gnss.take_fixes():     # Fix and FixEvent since the last call
            ...

Modules: ``board`` (board files), ``gpio`` (pin factories, devices, pin
tracing), ``emulator``, ``camera_source``, ``audio_source`` (microphones), ``sound``, ``nmea`` (NMEA 0183 to
fixes, pure), ``gnss`` (GNSS receivers), ``gnss_emulator`` (log replay and
synthetic tracks through a pty), ``trace`` and ``trace_analysis``,
``config``, ``hardware`` (this facade), ``errors``.
Picamera2, lgpio, RPi.GPIO and simpleaudio are imported only when the
backend that needs them is chosen.
"""

from .audio_source import AlsaAudioSource, AudioChunk, AudioSource, FileAudioSource, SyntheticAudioSource
from .board import Board, PinSpec, available_boards, load_board
from .camera_source import Frame, FrameSource, OpenCvSource, Picamera2Source, SyntheticSource
from .config import AudioConfig, CameraConfig, GnssConfig, HardwareConfig, add_hardware_arguments, config_from_arguments
from .emulator import Emulator
from .errors import (
    AudioError,
    AudioOpenFailed,
    BackendUnavailable,
    BoardFileError,
    CameraError,
    CameraOpenFailed,
    EndOfStream,
    GnssConfigError,
    GnssError,
    HardwareConfigError,
    HardwareError,
    InvalidTone,
    SoundError,
    TraceAnalysisError,
    TraceError,
    TraceFormatError,
    UnknownBackend,
)
from .gnss import GnssSource, GpsdReceiver, NmeaReceiver, open_gnss
from .hardware import Hardware, open_hardware
from .nmea import Fix, FixEvent, NmeaCounters, NmeaDecoder
from .sound import BuzzerSound, SilentSound, SimpleaudioSound, Sound
from .trace import HardwareTrace

__all__ = [
    "AlsaAudioSource", "AudioChunk", "AudioConfig", "AudioError", "AudioOpenFailed", "AudioSource",
    "FileAudioSource", "SyntheticAudioSource",
    "BackendUnavailable", "Board", "BoardFileError", "BuzzerSound", "CameraConfig", "CameraError",
    "CameraOpenFailed", "Emulator", "EndOfStream", "Fix", "FixEvent", "Frame", "FrameSource", "GnssConfig",
    "GnssConfigError", "GnssError", "GnssSource", "GpsdReceiver", "Hardware", "HardwareConfig",
    "HardwareConfigError", "HardwareError", "HardwareTrace", "InvalidTone", "OpenCvSource", "Picamera2Source",
    "NmeaCounters", "NmeaDecoder", "NmeaReceiver", "PinSpec", "SilentSound", "SimpleaudioSound", "Sound", "SoundError", "SyntheticSource", "TraceAnalysisError",
    "TraceError", "TraceFormatError", "UnknownBackend", "add_hardware_arguments", "available_boards",
    "config_from_arguments", "load_board", "open_gnss", "open_hardware",
]
