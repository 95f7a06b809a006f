"""`bwv demo`: the main job end to end on embedded defaults, narrated.

Grows with the project: today it makes footage, seals it as an enrolled
camera, verifies it and opens it as the server would.
"""

from __future__ import annotations

import time
from .enrol import device_storage, enrol_device, ensure_server_keys
from .home import Home
from .hw.trace_analysis import beeps, flash_stats, read_trace
from .opener import open_paths
from .registry import DeviceRegistry
from .sealed.keys import ServerKeyPair
from .verification import verify_paths

DEMO_DEVICE = "demo-cam-01"


def record_clip(storage, *, seconds: float, trace_path):
    """Record one clip with the emulated camera, as `bwv camera --emulate --headless --record --seconds N`."""
    from .firmware.camera import Camera
    from .firmware.config import load_config
    from .hw import open_hardware
    from .hw.config import CameraConfig, HardwareConfig

    config = load_config(None, **{"prebuffer.seconds": 0, "video.segment_seconds": 4, "video.bitrate": 2_000_000})
    hw_config = HardwareConfig(backend="emulated", camera=CameraConfig(source="synthetic", width=640, height=360),
                               sound="buzzer", trace_path=trace_path)
    with open_hardware(hw_config) as hw:
        camera = Camera(config, hw, storage)
        camera.record(True, "demo")
        return camera.run(record_seconds=seconds, exit_after_clip=True)


def say(step: str, text: str) -> None:
    print(f"[{step}] {text}", flush=True)


def run(home: Home, *, seconds: float = 12.0) -> int:
    t0 = time.monotonic()
    print(f"OpenBWV demo in {home.root}")
    home.root.mkdir(parents=True, exist_ok=True)
    pub = ensure_server_keys(home)
    say("keys", f"evidence server key {pub.key_id.hex()} (ML-KEM-768+X25519 for footage, Ed25519 for receipts)")
    enrol_device(home, DEMO_DEVICE)
    say("enrol", f"camera {DEMO_DEVICE} enrolled: it holds its signing key and the server's public key only")

    work = home.root / "demo"
    work.mkdir(exist_ok=True)
    storage = device_storage(home, DEMO_DEVICE)
    before = storage.head.sequence
    trace_path = work / "hw-trace.jsonl"
    report = record_clip(storage, seconds=seconds, trace_path=trace_path)
    say("camera", f"emulated camera recorded {seconds:.0f} s of synthetic 640x360 H.264 at 30 fps "
                  f"({report.recorded_frames} frames): clip {report.clips[0]}")
    events = read_trace(trace_path)
    flashes = flash_stats(events, "record_led")
    found = beeps(events)
    say("camera", f"while recording the red circle flashed {flashes.cycles} times at {flashes.frequency_hz:.1f} Hz "
                  f"and it beeped {len(found)} times (hardware trace: {trace_path})")
    say("seal", f"{len(report.sealed)} segments sealed on the camera (chain #{before + 1}..#{storage.head.sequence}) "
                f"in {storage.directory}")
    for info in report.sealed:
        size = info.path.stat().st_size
        say("seal", f"  {info.path.name}  {size / 1000:.0f} kB  {info.trailer.chunk_count} chunks  "
                    f"hash {info.segment_hash.hex()[:16]}")

    registry = DeviceRegistry(home.registry_dir)
    paths = [info.path for info in report.sealed]
    verified = verify_paths([storage.directory], registry)
    for p in verified.problems:
        say("verify", f"PROBLEM {p.line()}")
    say("verify", f"{len(verified.segments)} segment(s) on the camera verified with public keys only; "
                  f"{len(verified.problems)} problem(s)")

    server = ServerKeyPair.load(home.server_keys_dir)
    opened = open_paths(paths, registry, server, work / "opened")
    for clip in opened.clips:
        say("open", f"server decrypted clip {clip.clip_id}: {len(clip.segments)} segments, "
                    f"{clip.duration_s or 0:.1f} s -> {clip.mp4_path}")
    problems = len(verified.problems) + len(opened.problems) + len(opened.verify.problems)
    ok = problems == 0 and len(opened.clips) == 1
    print(f"demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s; "
          f"everything is under {home.root}")
    return 0 if ok else 1


__all__ = ["run", "DEMO_DEVICE"]
