"""The camera's hardware in one object, built from a :class:`HardwareConfig`.

The firmware asks for ``open_hardware(config)`` and gets buttons, LEDs, a
sound output, a camera source and a GNSS receiver; whether they are a Raspberry Pi's or an
emulation is decided by the config alone, and the firmware code is the same
either way.  In emulation, ``hw.emulator`` gives tests the other side: press
the button, dock the camera, read the pins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from gpiozero import LED, Button, DigitalInputDevice, PWMOutputDevice
from gpiozero.pins import Factory

from .audio_source import AlsaAudioSource, AudioSource, FileAudioSource, SyntheticAudioSource
from .board import Board, detect_board, load_board
from .fuel_gauge import EmulatedGauge, FuelGauge, Ina219Gauge, Max17048Gauge
from .camera_source import FrameSource, OpenCvSource, Picamera2Source, SyntheticSource
from .config import DEFAULT_EMULATED_BOARD, HardwareConfig
from .emulator import Emulator
from .errors import HardwareConfigError
from .gnss import GnssSource, open_gnss
from .gpio import (
    GpioDevices,
    PinTracer,
    emulated_pin_factory,
    open_gpio_devices,
    real_pin_factory,
    trace_words,
)
from .sound import BuzzerSound, SilentSound, SimpleaudioSound, Sound
from .trace import HardwareTrace


@dataclass
class Hardware:
    """Everything the firmware touches, ready to use; ``close()`` (or ``with``) releases it all.

    ``record_led``, ``status_led`` are gpiozero ``LED`` s (``on()``, ``off()``,
    ``blink(on_time, off_time)`` in a background thread, ``is_lit``);
    ``button`` a gpiozero ``Button`` (``when_pressed``, ``when_released``,
    ``is_pressed``); ``dock_detect`` and each of ``triggers`` a
    ``DigitalInputDevice`` (``when_activated``, ``when_deactivated``,
    ``is_active``); ``buzzer`` the raw PWM device under ``sound`` (use
    ``sound.beep``); ``camera`` a :class:`FrameSource` or None; ``gnss`` a
    :class:`~openbwv.hw.gnss.GnssSource` (``take_fixes()``) or None.
    """

    backend: str
    board: Board
    config: HardwareConfig
    button: Button
    record_led: LED
    status_led: LED
    buzzer: PWMOutputDevice
    sound: Sound
    dock_detect: DigitalInputDevice
    triggers: Mapping[str, DigitalInputDevice]
    camera: FrameSource | None
    pin_factory: Factory
    emulator: Emulator | None = None
    gnss: GnssSource | None = None
    audio: AudioSource | None = None
    battery: FuelGauge | None = None
    trace: HardwareTrace | None = None
    _gpio: GpioDevices | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Stop sound, camera and blink threads, release the pins, then close the trace (last, so it sees it all)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.gnss is not None:
                self.gnss.close()
            if self.audio is not None:
                self.audio.close()
            if self.battery is not None:
                self.battery.close()
            self.sound.close()
            if self.camera is not None:
                self.camera.close()
            if self._gpio is not None:
                self._gpio.close()
            self.pin_factory.close()
        finally:
            if self.trace is not None:
                self.trace.close()

    def __enter__(self) -> "Hardware":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_hardware(config: HardwareConfig | None = None) -> Hardware:
    """Build the camera's hardware as ``config`` says (defaults: emulated, from the environment).

    Raises :class:`~openbwv.hw.errors.UnknownBackend` for a backend name not
    known, :class:`~openbwv.hw.errors.BoardFileError` for a bad board file,
    :class:`~openbwv.hw.errors.BackendUnavailable` when the real backend's
    libraries or devices are not here.  Nothing is left open on failure.
    """
    if config is None:
        config = HardwareConfig.from_environment()
    config.check()
    board = load_board(_board_name(config))

    trace: HardwareTrace | None = None
    factory: Factory | None = None
    gpio: GpioDevices | None = None
    sound: Sound | None = None
    camera: FrameSource | None = None
    gnss: GnssSource | None = None
    audio: AudioSource | None = None
    battery: FuelGauge | None = None
    try:
        if config.backend == "emulated":
            if config.trace_path is not None:
                trace = HardwareTrace(config.trace_path)
                trace.start(backend=config.backend, board=board.name, sound=config.sound,
                            camera=config.camera_source)
            factory = emulated_pin_factory(board)
        else:
            factory = real_pin_factory(config.pin_factory or board.pin_factory)

        gpio = open_gpio_devices(board, factory, config.triggers)
        emulator: Emulator | None = None
        if config.backend == "emulated":
            emulator = Emulator(factory, board, gpio)  # type: ignore[arg-type]
            emulator.settle_inputs()
            if trace is not None:
                tracer = PinTracer(trace)
                factory.observer = tracer  # type: ignore[union-attr]
                for name, _device in gpio.all():
                    spec = board.pin(name)
                    tracer.watch(emulator.pin(name), spec, trace_words(spec, is_trigger=name in board.triggers))

        sound = _open_sound(config, gpio, trace)
        camera = _open_camera(config)
        gnss = open_gnss(config, board)
        audio = _open_audio(config)
        battery = _open_battery(config)
    except BaseException:
        if audio is not None:
            audio.close()
        if gnss is not None:
            gnss.close()
        if camera is not None:
            camera.close()
        if sound is not None:
            sound.close()
        if gpio is not None:
            gpio.close()
        if factory is not None:
            factory.close()
        if trace is not None:
            trace.close()
        raise

    return Hardware(
        backend=config.backend,
        board=board,
        config=config,
        button=gpio.button,
        record_led=gpio.record_led,
        status_led=gpio.status_led,
        buzzer=gpio.buzzer,
        sound=sound,
        dock_detect=gpio.dock_detect,
        triggers=dict(gpio.triggers),
        camera=camera,
        pin_factory=factory,
        emulator=emulator,
        gnss=gnss,
        audio=audio,
        battery=battery,
        trace=trace,
        _gpio=gpio,
    )


def _board_name(config: HardwareConfig) -> str | Path:
    if config.board != "auto":
        return config.board
    return DEFAULT_EMULATED_BOARD if config.backend == "emulated" else detect_board()


def _open_sound(config: HardwareConfig, gpio: GpioDevices, trace: HardwareTrace | None) -> Sound:
    if config.sound == "buzzer":
        return BuzzerSound(gpio.buzzer, trace=trace)
    if config.sound == "simpleaudio":
        return SimpleaudioSound(trace=trace)
    return SilentSound(trace=trace)


def _open_camera(config: HardwareConfig) -> FrameSource | None:
    cam = config.camera
    source = config.camera_source
    if source == "none":
        return None
    if source == "synthetic":
        return SyntheticSource(cam.width, cam.height, cam.fps, paced=cam.paced, flash_period_s=cam.flash_period_s)
    if source == "opencv":
        device: int | str = cam.device if cam.device is not None else "0"
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        return OpenCvSource(device, width=cam.width, height=cam.height, fps=cam.fps, paced=cam.paced, loop=cam.loop)
    if source == "picamera2":
        return Picamera2Source(cam.width, cam.height, cam.fps)
    raise HardwareConfigError(f"camera source {source!r} has no builder")  # check() makes this unreachable


def _open_audio(config: HardwareConfig) -> AudioSource | None:
    a = config.audio
    source = config.audio_source
    if source == "none":
        return None
    if source == "synthetic":
        return SyntheticAudioSource(a.pattern, period_s=a.period_s, paced=a.paced)
    if source == "file":
        return FileAudioSource(a.device or "", paced=a.paced, loop=a.loop)
    if source == "alsa":
        return AlsaAudioSource(a.device or "default")
    raise HardwareConfigError(f"audio source {source!r} has no builder")  # check() makes this unreachable


def _open_battery(config: HardwareConfig) -> FuelGauge | None:
    b = config.battery
    gauge = config.fuel_gauge
    if gauge == "none":
        return None
    if gauge == "emulated":
        return EmulatedGauge(hours=b.hours, speedup=b.speedup, start_pct=b.start_pct)
    if gauge == "max17048":
        return Max17048Gauge(b.bus, b.address)
    if gauge == "ina219":
        return Ina219Gauge(b.bus, b.address, shunt_ohms=b.shunt_ohms, capacity_mah=b.capacity_mah, cells=b.cells)
    raise HardwareConfigError(f"fuel gauge {gauge!r} has no builder")  # check() makes this unreachable
