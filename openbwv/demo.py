"""`bwv demo`: the main job end to end on embedded defaults, narrated.

Grows with the project: today it makes footage, seals it as an enrolled
camera, verifies it and opens it as the server would.
"""

from __future__ import annotations

import time
from .enrol import device_storage, enrol_device, ensure_server_keys
from .footage import make_synthetic_video
from .home import Home
from .importer import import_video
from .opener import open_paths
from .registry import DeviceRegistry
from .sealed.keys import ServerKeyPair
from .verification import verify_paths

DEMO_DEVICE = "demo-cam-01"


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
    src = make_synthetic_video(work / "synthetic.mp4", seconds=seconds)
    say("footage", f"{seconds:.0f} s of synthetic 640x360 H.264 at 30 fps -> {src}")

    storage = device_storage(home, DEMO_DEVICE)
    before = storage.head.sequence
    report = import_video(src, storage, segment_seconds=4.0)
    say("seal", f"clip {report.clip_id} sealed into {len(report.segments)} segments "
                f"(chain #{before + 1}..#{storage.head.sequence}) in {storage.directory}")
    for info in report.segments:
        size = info.path.stat().st_size
        say("seal", f"  {info.path.name}  {size / 1000:.0f} kB  {info.trailer.chunk_count} chunks  "
                    f"hash {info.segment_hash.hex()[:16]}")

    registry = DeviceRegistry(home.registry_dir)
    paths = [info.path for info in report.segments]
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
