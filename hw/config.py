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
``--gnss SOURCE|FILE``     ``BWV_GNSS``           emulated: ``synthetic``; pi: the board's receiver
``--gnss-device PORT``     ``BWV_GNSS_DEVICE``    (serial: the board file's; gpsd: ``127.0.0.1:2947``)
``--gnss-baud N``          ``BWV_GNSS_BAUD``      the board file's, else 9600
``--audio SOURCE|FILE``    ``BWV_AUDIO``          emulated: ``synthetic``; pi: ``alsa``
``--audio-device PCM``     ``BWV_AUDIO_DEVICE``   (alsa: ``default``)
``--fuel-gauge NAME``      ``BWV_FUEL_GAUGE``     emulated: ``emulated``; pi: ``none``
``--battery-speedup X``    ``BWV_BATTERY_SPEEDUP`` ``1`` (emulated gauge only)
``--hw-trace FILE``        ``BWV_HW_TRACE``       no trace
=========================  =====================  ===============================

``--fuel-gauge`` is ``max17048``, ``ina219`` (I2C, ``[hardware.battery]``
gives bus, address, shunt and capacity), ``emulated`` (a 12-hour battery) or
``none``; the reference board has no gauge, so a Pi defaults to ``none``.

``--audio`` takes a source name (``alsa``, ``synthetic``, ``file``,
``none``) or the path of a sound file, which means ``file``.  Like the
emulated GNSS sources, ``synthetic`` and ``file`` are refused on the real
backend: a camera must never seal invented sound as evidence.  Whether sound
is *recorded* at all is the camera policy's ([camera.audio]), not this.

``--gnss`` takes a source name (``serial``, ``gpsd``, ``synthetic``,
``replay``, ``none``) or the path of an NMEA log, which means ``replay`` of
that file.  ``synthetic`` and ``replay`` invent or repeat positions, so they
are refused on the real backend: a camera must never seal an emulated place
as evidence.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

from .errors import GnssConfigError, HardwareConfigError, UnknownBackend
from .fuel_gauge import FUEL_GAUGES

BACKENDS = ("emulated", "pi")
CAMERA_SOURCES = ("synthetic", "opencv", "picamera2", "none")
SOUND_OUTPUTS = ("buzzer", "simpleaudio", "silent")
AUDIO_SOURCES = ("alsa", "synthetic", "file", "none")
EMULATED_AUDIO_SOURCES = ("synthetic", "file")
GNSS_SOURCES = ("serial", "gpsd", "synthetic", "replay", "none")
EMULATED_GNSS_SOURCES = ("synthetic", "replay")
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
    flash_period_s: float | None = None  # synthetic: a white frame at each multiple (A/V sync tests)

    def check(self) -> None:
        if self.source is not None and self.source not in CAMERA_SOURCES:
            raise UnknownBackend("camera source", self.source, CAMERA_SOURCES)
        if self.width <= 0 or self.height <= 0:
            raise HardwareConfigError(f"video size {self.width}x{self.height} is not usable; expected positive sizes like 1920x1080")
        if not 0 < self.fps <= 240:
            raise HardwareConfigError(f"fps {self.fps!r} is out of range; expected more than 0 and at most 240")


@dataclass(frozen=True)
class GnssConfig:
    """Which GNSS receiver, how to reach it, and (emulation) where the synthetic wearer walks."""

    source: str | None = None  # None: the backend's default (emulated: synthetic; pi: the board file's receiver, if any)
    device: str | None = None  # serial: port or pyserial URL; replay: NMEA log file; gpsd: HOST:PORT
    baud: int | None = None  # serial: None = the board file's, else 9600
    start_lat: float = 51.5007  # synthetic: start point (Westminster Bridge), speed and heading
    start_lon: float = -0.1246
    speed_mps: float = 1.4  # walking; 13.4 is 30 mph
    heading_deg: float = 90.0

    def check(self, backend: str) -> None:
        if self.source is not None and self.source not in GNSS_SOURCES:
            raise UnknownBackend("GNSS source", self.source, GNSS_SOURCES)
        if self.source in EMULATED_GNSS_SOURCES and backend != "emulated":
            raise GnssConfigError(
                f"GNSS source {self.source!r} invents or repeats positions; backend {backend!r} was chosen, "
                f"expected 'emulated' (a camera must never seal an emulated place as evidence)"
            )
        if self.baud is not None and (isinstance(self.baud, bool) or not isinstance(self.baud, int)
                                      or not 300 <= self.baud <= 921_600):
            raise GnssConfigError(f"GNSS baud rate {self.baud!r} is not usable; expected 300 to 921600, e.g. 9600")
        if not (-90 < self.start_lat < 90 and -180 <= self.start_lon <= 180):
            raise GnssConfigError(f"synthetic GNSS start {self.start_lat}, {self.start_lon} is not a latitude "
                                  "and longitude; expected e.g. 51.5007, -0.1246")
        if not 0 <= self.speed_mps <= 100:
            raise GnssConfigError(f"synthetic GNSS speed {self.speed_mps} m/s out of range; expected 0 to 100")


@dataclass(frozen=True)
class AudioConfig:
    """Which microphone, and (emulation) what it hears."""

    source: str | None = None  # None: the backend's default (emulated: synthetic; pi: alsa)
    device: str | None = None  # alsa: PCM name (default "default"); file: the sound file
    pattern: str = "clicks"  # synthetic: clicks, tones, silence
    period_s: float = 2.0  # synthetic: a click at every multiple of this on the monotonic clock
    paced: bool = True  # synthetic and file: real time (True) or as fast as read
    loop: bool = True  # file: start over at the end

    def check(self, backend: str) -> None:
        if self.source is not None and self.source not in AUDIO_SOURCES:
            raise UnknownBackend("audio source", self.source, AUDIO_SOURCES)
        if self.source in EMULATED_AUDIO_SOURCES and backend != "emulated":
            raise HardwareConfigError(
                f"audio source {self.source!r} invents or repeats sound; backend {backend!r} was chosen, "
                f"expected 'emulated' (a camera must never seal invented sound as evidence)"
            )
        if self.source == "file" and not self.device:
            raise HardwareConfigError("audio source 'file' needs the sound file: --audio FILE or [hardware.audio] device")
        if self.pattern not in ("clicks", "tones", "silence"):
            raise HardwareConfigError(f"synthetic audio pattern {self.pattern!r} is not known; "
                                      "expected 'clicks', 'tones' or 'silence'")
        if not 0.05 <= self.period_s <= 3600:
            raise HardwareConfigError(f"synthetic audio period {self.period_s!r} s is out of range; expected 0.05 to 3600")


@dataclass(frozen=True)
class BatteryConfig:
    """Which fuel gauge, how it is wired, and (emulation) how fast the battery runs down."""

    gauge: str | None = None  # None: the backend's default (emulated: emulated; pi: none)
    bus: int = 1  # I2C bus: /dev/i2c-1 is the header's SDA/SCL (BCM 2/3)
    address: int | None = None  # None: the chip's usual address (MAX17048 0x36, INA219 0x40)
    shunt_ohms: float = 0.1  # ina219
    capacity_mah: float = 10_000.0  # ina219: the pack's capacity, for minutes left
    cells: int = 1  # ina219: cells in series
    hours: float = 12.0  # emulated: a full battery lasts this long
    speedup: float = 1.0  # emulated: how much faster than real time it runs down
    start_pct: float = 100.0  # emulated

    def check(self) -> None:
        if self.gauge is not None and self.gauge not in FUEL_GAUGES:
            raise UnknownBackend("fuel gauge", self.gauge, FUEL_GAUGES)
        if not 0 <= self.bus <= 31 or (self.address is not None and not 0x03 <= self.address <= 0x77):
            raise HardwareConfigError(f"I2C bus {self.bus} address {self.address!r}: expected bus 0-31 and a "
                                      "7-bit address 0x03-0x77")
        if not 0 < self.speedup <= 1e6:
            raise HardwareConfigError(f"battery speed-up {self.speedup!r} is out of range; expected more than 0, "
                                      "at most 1000000 (3600: an hour a second)")
        if not 0.1 <= self.hours <= 100 or not 0 <= self.start_pct <= 100:
            raise HardwareConfigError(f"emulated battery of {self.hours} h from {self.start_pct} %: expected "
                                      "0.1-100 h and 0-100 %")


@dataclass(frozen=True)
class HardwareConfig:
    """Everything :func:`openbwv.hw.open_hardware` needs to build a camera's hardware."""

    backend: str = "emulated"
    board: str = "auto"
    camera: CameraConfig = field(default_factory=CameraConfig)
    gnss: GnssConfig = field(default_factory=GnssConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    battery: BatteryConfig = field(default_factory=BatteryConfig)
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
        self.gnss.check(self.backend)
        self.audio.check(self.backend)
        self.battery.check()
        if self.battery.gauge == "emulated" and self.backend != "emulated":
            raise HardwareConfigError(f"fuel gauge 'emulated' invents a battery; backend {self.backend!r} was "
                                      "chosen, expected 'emulated' (choose max17048, ina219 or none)")
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

    @property
    def audio_source(self) -> str:
        """The audio source in effect, after the backend's default."""
        if self.audio.source is not None:
            return self.audio.source
        return "alsa" if self.backend == "pi" else "synthetic"

    @property
    def fuel_gauge(self) -> str:
        """The fuel gauge in effect, after the backend's default."""
        if self.battery.gauge is not None:
            return self.battery.gauge
        return "emulated" if self.backend == "emulated" else "none"

    @property
    def gnss_source(self) -> str | None:
        """The GNSS source in effect; None on the real backend means "the board file's receiver, if it has one"."""
        if self.gnss.source is not None:
            return self.gnss.source
        return "synthetic" if self.backend == "emulated" else None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, where: str = "[hardware]") -> "HardwareConfig":
        """Build from a config-file table, e.g. a ``[hardware]`` section read with tomllib.

        ``camera``, ``gnss`` and ``audio`` may be sub-tables with the keys of
        :class:`CameraConfig`, :class:`GnssConfig` and :class:`AudioConfig`.
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
        gnss = values.pop("gnss", {})
        if not isinstance(gnss, Mapping):
            raise HardwareConfigError(f"{where} gnss is {gnss!r}; expected a table")
        gnss_allowed = {f.name for f in fields(GnssConfig)}
        unknown = set(gnss) - gnss_allowed
        if unknown:
            raise HardwareConfigError(f"{where}.gnss has unknown key(s) {sorted(unknown)}; expected some of {sorted(gnss_allowed)}")
        audio = values.pop("audio", {})
        if not isinstance(audio, Mapping):
            raise HardwareConfigError(f"{where} audio is {audio!r}; expected a table")
        audio_allowed = {f.name for f in fields(AudioConfig)}
        unknown = set(audio) - audio_allowed
        if unknown:
            raise HardwareConfigError(f"{where}.audio has unknown key(s) {sorted(unknown)}; expected some of {sorted(audio_allowed)}")
        battery = values.pop("battery", {})
        if not isinstance(battery, Mapping):
            raise HardwareConfigError(f"{where} battery is {battery!r}; expected a table")
        battery_allowed = {f.name for f in fields(BatteryConfig)}
        unknown = set(battery) - battery_allowed
        if unknown:
            raise HardwareConfigError(f"{where}.battery has unknown key(s) {sorted(unknown)}; expected some of {sorted(battery_allowed)}")
        if "triggers" in values:
            triggers = values["triggers"]
            if not isinstance(triggers, (list, tuple)) or not all(isinstance(t, str) for t in triggers):
                raise HardwareConfigError(f"{where} triggers is {triggers!r}; expected a list of trigger names")
            values["triggers"] = tuple(triggers)
        if values.get("trace_path") is not None:
            values["trace_path"] = Path(str(values["trace_path"]))
        config = cls(camera=CameraConfig(**camera), gnss=GnssConfig(**gnss), audio=AudioConfig(**audio),
                     battery=BatteryConfig(**battery), **values)  # type: ignore[arg-type]
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
    group.add_argument("--gnss", metavar="SOURCE|FILE",
                       help="GNSS receiver: serial, gpsd, synthetic, none, or an NMEA log FILE to replay "
                            "(emulation); default: synthetic walk emulated, the board's receiver on a Pi (BWV_GNSS)")
    group.add_argument("--gnss-device", metavar="PORT",
                       help="GNSS port: /dev/serial0, /dev/ttyACM0, a pyserial URL; gpsd: HOST:PORT (BWV_GNSS_DEVICE)")
    group.add_argument("--gnss-baud", type=int, metavar="N", help="GNSS serial speed (default 9600) (BWV_GNSS_BAUD)")
    group.add_argument("--audio", metavar="SOURCE|FILE",
                       help="microphone: alsa, synthetic, none, or a sound FILE to play as the microphone "
                            "(emulation); default: synthetic clicks emulated, alsa on a Pi (BWV_AUDIO)")
    group.add_argument("--audio-device", metavar="PCM",
                       help="ALSA capture device, e.g. plughw:CARD=Device,DEV=0 (see arecord -L) (BWV_AUDIO_DEVICE)")
    group.add_argument("--fuel-gauge", choices=FUEL_GAUGES,
                       help="battery fuel gauge: max17048, ina219 (I2C), emulated (a 12-hour battery), none "
                            "(BWV_FUEL_GAUGE)")
    group.add_argument("--battery-speedup", type=float, metavar="X",
                       help="emulated battery: run down X times faster than real time, e.g. 3600 (BWV_BATTERY_SPEEDUP)")
    group.add_argument("--hw-trace", metavar="FILE", help="write every emulated LED, beep and button change to FILE as JSON lines (BWV_HW_TRACE)")


def config_from_arguments(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, *, base: HardwareConfig | None = None
) -> HardwareConfig:
    """The config for parsed arguments: options over environment over `base` (a config file's table) over defaults."""
    values = _env_values(os.environ if environ is None else environ)
    cli = {
        "backend": args.hw_backend, "board": args.board, "source": args.camera, "device": args.camera_device,
        "video_size": args.video_size, "fps": args.fps, "sound": args.sound, "triggers": args.triggers,
        "trace_path": args.hw_trace, "gnss_device": getattr(args, "gnss_device", None),
        "gnss_baud": getattr(args, "gnss_baud", None), "gnss": getattr(args, "gnss", None),
        "audio": getattr(args, "audio", None), "audio_device": getattr(args, "audio_device", None),
        "fuel_gauge": getattr(args, "fuel_gauge", None), "battery_speedup": getattr(args, "battery_speedup", None),
    }
    values.update({k: v for k, v in cli.items() if v is not None})
    return _apply(base or HardwareConfig(), values)


_ENV = {
    "BWV_HW_BACKEND": "backend", "BWV_BOARD": "board", "BWV_CAMERA": "source", "BWV_CAMERA_DEVICE": "device",
    "BWV_VIDEO_SIZE": "video_size", "BWV_FPS": "fps", "BWV_SOUND": "sound", "BWV_TRIGGERS": "triggers",
    "BWV_HW_TRACE": "trace_path", "BWV_GNSS_DEVICE": "gnss_device", "BWV_GNSS_BAUD": "gnss_baud",
    "BWV_GNSS": "gnss", "BWV_AUDIO": "audio", "BWV_AUDIO_DEVICE": "audio_device",
    "BWV_FUEL_GAUGE": "fuel_gauge", "BWV_BATTERY_SPEEDUP": "battery_speedup",
}


def _env_values(environ: Mapping[str, str]) -> dict[str, object]:
    return {key: environ[var] for var, key in _ENV.items() if environ.get(var)}


def _apply(config: HardwareConfig, values: Mapping[str, object]) -> HardwareConfig:
    top: dict[str, object] = {}
    camera: dict[str, object] = {}
    gnss: dict[str, object] = {}
    audio: dict[str, object] = {}
    battery: dict[str, object] = {}
    # "gnss" and "audio" last: "--gnss FILE" names the log, whatever BWV_GNSS_DEVICE says (audio alike).
    for key, value in sorted(values.items(), key=lambda kv: kv[0] in ("gnss", "audio")):
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
        elif key == "gnss":
            if str(value) in GNSS_SOURCES:
                gnss["source"] = str(value)
            else:
                gnss["source"], gnss["device"] = "replay", str(value)
        elif key == "audio":
            if str(value) in AUDIO_SOURCES:
                audio["source"] = str(value)
            else:
                audio["source"], audio["device"] = "file", str(value)
        elif key == "audio_device":
            audio["device"] = str(value)
        elif key == "fuel_gauge":
            battery["gauge"] = str(value)
        elif key == "battery_speedup":
            try:
                battery["speedup"] = float(value)  # type: ignore[arg-type]
            except ValueError:
                raise HardwareConfigError(f"battery speed-up is {value!r}; expected a number like 3600") from None
        elif key == "gnss_device":
            gnss["device"] = str(value)
        elif key == "gnss_baud":
            try:
                gnss["baud"] = int(value)  # type: ignore[arg-type]
            except ValueError:
                raise GnssConfigError(f"GNSS baud rate is {value!r}; expected a number like 9600") from None
    config = replace(config, camera=replace(config.camera, **camera), gnss=replace(config.gnss, **gnss),
                     audio=replace(config.audio, **audio), battery=replace(config.battery, **battery), **top)  # type: ignore[arg-type]
    config.check()
    return config


def _video_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise HardwareConfigError(f"video size is {text!r}; expected WIDTHxHEIGHT like 1920x1080")
    return int(width), int(height)
