"""`bwv camera`: run the body-camera firmware (on a Pi, or emulated on a laptop)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path

from ..cli import EXIT_OK, EXIT_PROBLEMS, UsageError, command
from ..home import Home

log = logging.getLogger("bwv.camera")


def _configure(p: argparse.ArgumentParser) -> None:
    from ..hw.config import add_hardware_arguments

    p.add_argument("--device", metavar="ID", help="enrolled device id (default: config, else the only one enrolled)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="camera settings (TOML, table [camera]; default: BWV_HOME/camera.toml if present)")
    p.add_argument("--emulate", action="store_true", help="emulated hardware: mock GPIO pins, synthetic camera")
    p.add_argument("--headless", action="store_true", help="no preview window (always so on a Pi and in CI)")
    p.add_argument("--source", dest="camera", choices=["synthetic", "opencv", "picamera2", "none"],
                   help="camera source (same as --camera)")
    p.add_argument("--record", action="store_true", help="start recording at once (as if the button were pressed)")
    p.add_argument("--seconds", type=float, metavar="N",
                   help="with --record: record one clip of N seconds, then exit (default: until SIGTERM/SIGINT)")
    p.add_argument("--prebuffer-seconds", type=float, metavar="S", help="pre-event buffer, 0-120 s (default 30)")
    p.add_argument("--segment-seconds", type=float, metavar="S", help="segment length (default 10)")
    p.add_argument("--bitrate", type=int, metavar="BPS", help="H.264 bitrate in bit/s (default 8000000)")
    p.add_argument("--preset", metavar="NAME", help="libx264 preset (default veryfast)")
    p.add_argument("--flush-seconds", type=float, metavar="S",
                   help="durability interval, at most 1 s: what a power cut may lose (default 0.5)")
    p.add_argument("--dock-port", metavar="PATH",
                   help="serial port to the dock (USB gadget /dev/ttyGS0 on a Pi; the bay's pty link in emulation): "
                        "served whenever the camera is docked")
    p.add_argument("--docked", action="store_true", help="emulation: start with the camera in the dock")
    add_hardware_arguments(p)


@command(
    "camera",
    "run the body-camera firmware (real or emulated)",
    """
    Run the camera: capture, pre-event buffer, H.264 segments sealed on the
    camera's own storage (BWV_HOME/devices/ID/storage), the flashing red circle
    and the beep while recording, the record button and auto-start triggers.

    At start the camera first seals any segment a crash or power cut left open,
    so the chain carries on. While recording, the open segment is made durable
    at least every --flush-seconds; sealed segments wait for the dock.

    Button (see docs/camera-controls.md): press = start recording (at once, with
    the pre-event buffer), short press while recording = bookmark, hold 3 s =
    stop. Docking stops recording cleanly.

    Location: a GNSS fix at least once a second (receiver UTC, camera UTC,
    latitude, longitude, HDOP, quality) is sealed inside the encrypted part of
    each segment, never in its clear header; a segment without a fix says so.
    On a Pi the receiver is the board file's ([gnss]: the header UART), or
    --gnss serial --gnss-device /dev/ttyACM0 for a USB one, or --gnss gpsd.

    Sound: the microphone (--audio; ALSA on a Pi, e.g. --audio-device
    plughw:CARD=Device,DEV=0) is recorded as AAC-LC in the same sealed
    segments, in sync with the picture, from the moment recording starts; the
    pre-event seconds are picture only unless [camera.audio] pre_event = true,
    and [camera.audio] record = false records no sound at all.

    Battery: with a fuel gauge (--fuel-gauge max17048|ina219) the camera alarms
    at 10 % or 10 minutes left and stops cleanly, sealing the clip, when
    critical; the dock is told the level and the time left.

    Emulation (--emulate) uses gpiozero's mock pins, a synthetic picture and a
    synthetic walk from Westminster Bridge (--gnss FILE replays an NMEA log
    instead, through a pty, at its own pace; --gnss none: no receiver);
    --hw-trace FILE records every LED, beep and button change as JSON lines.
    """,
    """
    examples:
      bwv camera --emulate --headless --source synthetic --record --seconds 30
      bwv camera --emulate --video-size 1280x720 --hw-trace /tmp/trace.jsonl
      bwv camera --emulate --headless --gnss drive.nmea --record --seconds 60
      bwv camera --emulate --headless --audio speech.wav --battery-speedup 3600 --record
      bwv camera --config /etc/openbwv/camera.toml          (on a Pi, from systemd)

    exit status: 0 on a clean stop; 1 if the camera faulted or could not seal.
    """,
)(_configure)
def run_camera(args: argparse.Namespace, home: Home) -> int:
    from ..enrol import load_device
    from ..hw import open_hardware
    from ..hw.config import HardwareConfig, config_from_arguments
    from ..hw.errors import HardwareError
    from .camera import Camera, load_clock_state, open_camera_storage
    from .state import DockChanged
    from .config import ConfigError, load_config

    config_path = args.config
    if config_path is None and (home.root / "camera.toml").exists():
        config_path = home.root / "camera.toml"
    try:
        config = load_config(
            config_path,
            **{"prebuffer.seconds": args.prebuffer_seconds, "video.segment_seconds": args.segment_seconds,
               "video.bitrate": args.bitrate, "video.preset": args.preset, "flush_seconds": args.flush_seconds},
        )
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if args.seconds is not None and (args.seconds <= 0 or not args.record):
        raise UsageError("--seconds N needs --record and N > 0")

    device_id = args.device or config.device_id or _only_device(home)
    _key, server_pub = load_device(home, device_id)  # a clear error now if it is not enrolled
    try:
        base = HardwareConfig.from_mapping(config.hardware, where="[camera.hardware]") if config.hardware else None
        if args.emulate:
            args.hw_backend = "emulated"
            if not args.headless and args.sound is None and "sound" not in config.hardware:
                args.sound = "simpleaudio"  # on a desktop the beeps are heard, not just traced
        hw_config = config_from_arguments(args, base=base)
    except HardwareError as e:
        raise UsageError(str(e)) from None

    storage = open_camera_storage(home, device_id)
    for info in storage.recovered:
        print(f"recovered after power loss: {info.path.name} ({info.trailer.chunk_count} chunks kept)", flush=True)
    for problem in storage.problems:
        print(f"warning: {problem}", flush=True)

    try:
        hw = open_hardware(hw_config)
    except HardwareError as e:
        raise UsageError(f"cannot open the hardware: {e}") from None
    with hw:
        window = None
        if not args.headless and hw.emulator is not None:
            from .window import KEYS_HELP, PreviewWindow, WindowUnavailable

            try:
                window = PreviewWindow(hw)
                print(KEYS_HELP, flush=True)
            except WindowUnavailable as e:
                raise UsageError(str(e)) from None
        clock_path = home.device_dir(device_id) / "clock.json"
        dock = _dock_service(args.dock_port, storage, server_pub, device_id, clock_path,
                             lambda state: setattr(camera, "clock", state),
                             lambda: camera.status()) if args.dock_port else None
        camera = Camera(config, hw, storage, clock=load_clock_state(clock_path), on_frame=window,
                        on_mode=dock.mode_changed if dock else None)

        if args.docked:
            if hw.emulator is None:
                raise UsageError("--docked is for emulation; a real camera is docked by its dock contact")
            hw.emulator.set_docked(True)
        elif dock is not None and hw.dock_detect.is_active:  # booted in the dock: no edge will ever come
            camera.post(DockChanged(time.monotonic(), True))

        def on_signal(signum, _frame):
            log.warning("signal %d: closing the clip and stopping", signum)
            camera.stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        print(f"camera {device_id}: {hw.camera.width}x{hw.camera.height} at {hw.camera.fps:g} fps, "
              f"pre-event {config.prebuffer.seconds:g} s, segments {config.video.segment_seconds:g} s, "
              f"storage {storage.directory}", flush=True)
        print(f"gnss: {hw.gnss.name if hw.gnss is not None else 'none'}", flush=True)
        print(f"audio: {camera.audio_source.name if camera.audio_source is not None else 'none'}"
              f" (policy: record {'on' if config.audio.record else 'off'}, pre-event sound "
              f"{'on' if config.audio.pre_event else 'off'}); battery: "
              f"{hw.battery.name if hw.battery is not None else 'no fuel gauge'}", flush=True)
        if args.record:
            camera.record(True, "command")
        try:
            if window is None:
                report = camera.run(record_seconds=args.seconds, exit_after_clip=args.seconds is not None)
            else:  # Tk owns the main thread; the capture loop runs beside it
                result: dict = {}

                def capture() -> None:
                    try:
                        result["report"] = camera.run(record_seconds=args.seconds,
                                                      exit_after_clip=args.seconds is not None)
                    except BaseException as e:  # handed to the main thread below
                        result["error"] = e

                worker = threading.Thread(target=capture, name="capture")
                worker.start()
                window.run(until=worker)
                camera.stop()
                worker.join()
                if "error" in result:
                    raise result["error"]
                report = result["report"]
        finally:
            if dock is not None:
                dock.close()
        if window is not None:
            window.close()
        gnss_summary = _gnss_summary(hw.gnss) if hw.gnss is not None else None
    for info in report.sealed:
        print(f"sealed {info.path.name}  clip {str(info.preamble.clip_id)[:8]} part {info.preamble.segment_index}  "
              f"{info.path.stat().st_size / 1e6:.2f} MB", flush=True)
    print(f"{len(report.clips)} clip(s), {len(report.sealed)} segment(s) sealed, {report.frames} frames captured, "
          f"{report.bookmarks} bookmark(s)" + (f", warnings: {', '.join(report.warnings)}" if report.warnings else ""))
    if gnss_summary:
        print(gnss_summary)
    faulted = camera.machine.mode.name == "FAULT"
    return EXIT_PROBLEMS if faulted else EXIT_OK


def _gnss_summary(gnss) -> str:
    """One line on what the receiver sent: fixes, and what was dropped and why."""
    c = gnss.counters
    dropped = {"bad checksum": c.bad_checksum, "truncated": c.truncated, "malformed": c.malformed,
               "garbage bytes": c.garbage_bytes}
    problems = ", ".join(f"{n} {what}" for what, n in dropped.items() if n)
    return (f"gnss: {c.fixes} fix(es), {c.no_fix_epochs} epoch(s) without a fix, {c.sentences} sentence(s)"
            + (f"; skipped: {problems}" if problems else ""))


def _dock_service(port_path, storage, server_pub, device_id, clock_path, on_clock_set, status=None):
    """The dock link, served on `port_path` while the camera is in DOCKED mode (firmware/docklink.py).

    `status` is asked at each HELLO: battery level and time left from the fuel gauge (None without
    one), and the stealth changes since the camera last left a dock."""
    from .camera import FIRMWARE_VERSION
    from .docklink import CameraStatus, DockLink, DockPortService

    if status is None:
        fixed = CameraStatus(firmware=FIRMWARE_VERSION)
        status = lambda: fixed  # noqa: E731 - no camera to ask: firmware only, no gauge
    return DockPortService(port_path, lambda port: DockLink(port, storage, server_pub, device_id, clock_path,
                                                            status, on_clock_set=on_clock_set))


def _only_device(home: Home) -> str:
    devices = home.enrolled_devices()
    if len(devices) == 1:
        return devices[0]
    if not devices:
        raise UsageError(f"no device enrolled in {home.root}; enrol one with `bwv keys device --id ID`")
    raise UsageError(f"several devices enrolled ({', '.join(devices)}); choose one with --device")


__all__ = ["run_camera"]
