"""Choosing the hardware: which backend, board, camera source and sound output.

Like gpiozero's ``GPIOZERO_PIN_FACTORY``, the choice is made once, from the
command line, the environment, or a config file section, and everything
else is built from it.  Precedence: command-line option, then environment
variable, then the backend's default.

=========================  =====================  ===============================
setting                    environment            default
=========================  =====================  ===============================
``--hw-backend``           ``BWV_HW_BACKEND``     ``emulated``
``--board``                ``BWV_BOARD``          ``auto`` (emulated: ``pi5``)
``--camera``               ``BWV_CAMERA``         emulated: ``synthetic``; pi: ``picamera2``
``--camera-device``        ``BWV_CAMERA_DEVICE``  (opencv: ``0``)
``--video-size``           ``BWV_VIDEO_SIZE``     ``1920x1080``
``--fps``                  ``BWV_FPS``            ``30``
``--sound``                ``BWV_SOUND``          ``buzzer``
``--triggers``             ``BWV_TRIGGERS``       none (comma-separated names)
``--hw-trace FILE``        ``BWV_HW_TRACE``       no trace
=========================  =====================  ===============================
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

from .errors import HardwareConfigError, UnknownBackend

BACKENDS = ("emulated", "pi")
CAMERA_SOURCES = ("synthetic", "opencv", "picamera2", "none")
SOUND_OUTPUTS = ("buzzer", "simpleaudio", "silent")
DEFAULT_EMULATED_BOARD = "pi5"


@dataclass(frozen=True)
class CameraConfig:
    """Which camera source, and the picture it should deliver."""

    source: str | None = None  # None: the backend's default
    width: int = 1920
    height: int = 1080
    fps: float = 30.0
    device: str | None = None  # opencv: device index ("0") or path to a device or file
    paced: bool = True  # synthetic and file sources: real time (True) or as fast as read
    loop: bool = False  # opencv files: start over at the end

    def check(self) -> None:
        if self.source is not None and self.source not in CAMERA_SOURCES:
            raise UnknownBackend("camera source", self.source, CAMERA_SOURCES)
        if self.width <= 0 or self.height <= 0:
            raise HardwareConfigError(f"video size {self.width}x{self.height} is not usable; expected positive sizes like 1920x1080")
        if not 0 < self.fps <= 240:
            raise HardwareConfigError(f"fps {self.fps!r} is out of range; expected more than 0 and at most 240")


@dataclass(frozen=True)
class HardwareConfig:
    """Everything :func:`openbwv.hw.open_hardware` needs to build a camera's hardware."""

    backend: str = "emulated"
    board: str = "auto"
    camera: CameraConfig = field(default_factory=CameraConfig)
    sound: str = "buzzer"
    triggers: tuple[str, ...] = ()
    trace_path: Path | None = None
    pin_factory: str | None = None  # pi backend: override the board file's ("lgpio", "rpigpio")

    def check(self) -> None:
        """Reject unknown names early, with the list of known ones."""
        if self.backend not in BACKENDS:
            raise UnknownBackend("hardware", self.backend, BACKENDS)
        if self.sound not in SOUND_OUTPUTS:
            raise UnknownBackend("sound", self.sound, SOUND_OUTPUTS)
        self.camera.check()
        if self.trace_path is not None and self.backend != "emulated":
            raise HardwareConfigError(
                f"a hardware trace ({self.trace_path}) records the emulated hardware's pins; "
                f"backend {self.backend!r} was chosen, expected 'emulated'"
            )

    @property
    def camera_source(self) -> str:
        """The camera source in effect, after the backend's default."""
        if self.camera.source is not None:
            return self.camera.source
        return "picamera2" if self.backend == "pi" else "synthetic"

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, where: str = "[hardware]") -> "HardwareConfig":
        """Build from a config-file table, e.g. a ``[hardware]`` section read with tomllib.

        ``camera`` may be a sub-table with the keys of :class:`CameraConfig`.
        Unknown keys are errors: a misspelt ``trigers`` must not silently
        leave auto-start disabled.
        """
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise HardwareConfigError(f"{where} has unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
        values = dict(data)
        camera = values.pop("camera", {})
        if not isinstance(camera, Mapping):
            raise HardwareConfigError(f"{where} camera is {camera!r}; expected a table")
        camera_allowed = {f.name for f in fields(CameraConfig)}
        unknown = set(camera) - camera_allowed
        if unknown:
            raise HardwareConfigError(f"{where}.camera has unknown key(s) {sorted(unknown)}; expected some of {sorted(camera_allowed)}")
        if "triggers" in values:
            triggers = values["triggers"]
            if not isinstance(triggers, (list, tuple)) or not all(isinstance(t, str) for t in triggers):
                raise HardwareConfigError(f"{where} triggers is {triggers!r}; expected a list of trigger names")
            values["triggers"] = tuple(triggers)
        if values.get("trace_path") is not None:
            values["trace_path"] = Path(str(values["trace_path"]))
        config = cls(camera=CameraConfig(**camera), **values)  # type: ignore[arg-type]
        config.check()
        return config

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "HardwareConfig":
        """The defaults, overridden by any ``BWV_*`` variables that are set."""
        return _apply(cls(), _env_values(os.environ if environ is None else environ))


def add_hardware_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the hardware options (``--hw-backend``, ``--board``, ``--hw-trace``...) to a command's parser."""
    group = parser.add_argument_group("hardware")
    group.add_argument("--hw-backend", choices=BACKENDS, help="real Pi hardware or the emulated camera (BWV_HW_BACKEND)")
    group.add_argument("--board", help="board file name (pi4, pi5), path to one, or 'auto' (BWV_BOARD)")
    group.add_argument("--camera", choices=CAMERA_SOURCES, help="camera source (BWV_CAMERA)")
    group.add_argument("--camera-device", help="opencv source: device index, /dev/videoN or a video file (BWV_CAMERA_DEVICE)")
    group.add_argument("--video-size", help="WIDTHxHEIGHT, e.g. 1920x1080 (BWV_VIDEO_SIZE)")
    group.add_argument("--fps", type=float, help="frames per second (BWV_FPS)")
    group.add_argument("--sound", choices=SOUND_OUTPUTS, help="sound output (BWV_SOUND)")
    group.add_argument("--triggers", help="comma-separated auto-start triggers to enable, e.g. holster,taser (BWV_TRIGGERS)")
    group.add_argument("--hw-trace", metavar="FILE", help="write every emulated LED, beep and button change to FILE as JSON lines (BWV_HW_TRACE)")


def config_from_arguments(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, *, base: HardwareConfig | None = None
) -> HardwareConfig:
    """The config for parsed arguments: options over environment over `base` (a config file's table) over defaults."""
    values = _env_values(os.environ if environ is None else environ)
    cli = {
        "backend": args.hw_backend, "board": args.board, "source": args.camera, "device": args.camera_device,
        "video_size": args.video_size, "fps": args.fps, "sound": args.sound, "triggers": args.triggers,
        "trace_path": args.hw_trace,
    }
    values.update({k: v for k, v in cli.items() if v is not None})
    return _apply(base or HardwareConfig(), values)


_ENV = {
    "BWV_HW_BACKEND": "backend", "BWV_BOARD": "board", "BWV_CAMERA": "source", "BWV_CAMERA_DEVICE": "device",
    "BWV_VIDEO_SIZE": "video_size", "BWV_FPS": "fps", "BWV_SOUND": "sound", "BWV_TRIGGERS": "triggers",
    "BWV_HW_TRACE": "trace_path",
}


def _env_values(environ: Mapping[str, str]) -> dict[str, object]:
    return {key: environ[var] for var, key in _ENV.items() if environ.get(var)}


def _apply(config: HardwareConfig, values: Mapping[str, object]) -> HardwareConfig:
    top: dict[str, object] = {}
    camera: dict[str, object] = {}
    for key, value in values.items():
        if key in ("backend", "board", "sound"):
            top[key] = str(value)
        elif key == "triggers":
            top[key] = tuple(t.strip() for t in str(value).split(",") if t.strip()) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
        elif key == "trace_path":
            top[key] = Path(str(value))
        elif key in ("source", "device"):
            camera[key] = str(value)
        elif key == "fps":
            try:
                camera["fps"] = float(value)  # type: ignore[arg-type]
            except ValueError:
                raise HardwareConfigError(f"fps is {value!r}; expected a number like 30") from None
        elif key == "video_size":
            camera["width"], camera["height"] = _video_size(str(value))
    config = replace(config, camera=replace(config.camera, **camera), **top)  # type: ignore[arg-type]
    config.check()
    return config


def _video_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise HardwareConfigError(f"video size is {text!r}; expected WIDTHxHEIGHT like 1920x1080")
    return int(width), int(height)
