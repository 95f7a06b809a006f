"""Kill a recording camera process (SIGKILL) and measure what survived.

Shared by the crash test (tests/camera/test_crash.py) and `make bench`
(crash_loss_s).  The camera runs as a real `bwv camera --emulate` process on a
paced synthetic source; the kill time is taken on CLOCK_MONOTONIC, which the
camera also stamps its frames with, so the loss is exact to a frame: the time
between the last frame that survived sealed and the kill.  The camera records
sound too (the emulated microphone's clicks), so what survived of the sound
track is measured the same way (`survived_audio_by_clip`, `audio_losses`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import av

from openbwv.enrol import create_server_keys, device_storage, enrol_device
from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.layout import RECORD_MEDIA
from openbwv.sealed.reader import decrypt_records
from openbwv.verification import VerifyReport, verify_paths

DEVICE = "crash-cam"
FPS = 30


def bwv() -> str:
    exe = Path(sys.executable).with_name("bwv")
    return str(exe) if exe.exists() else shutil.which("bwv") or "bwv"


def make_home(root: Path) -> Home:
    home = Home(root)
    create_server_keys(home)
    enrol_device(home, DEVICE)
    return home


@dataclass
class Kill:
    started_mono: float  # when the open segment appeared
    killed_mono: float


def record_and_kill(home: Home, after_s: float, *, timeout: float = 30.0) -> Kill:
    """Start a recording camera, SIGKILL it `after_s` seconds after its first segment opened."""
    storage = home.device_storage(DEVICE)
    before = set(storage.glob("*.open"))
    env = dict(os.environ, BWV_HOME=str(home.root))
    proc = subprocess.Popen(
        [bwv(), "camera", "--emulate", "--headless", "--source", "synthetic", "--record",
         "--video-size", "320x240", "--fps", str(FPS), "--prebuffer-seconds", "0", "--segment-seconds", "2",
         "--preset", "ultrafast", "--bitrate", "600000", "--sound", "silent"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while not (set(storage.glob("*.open")) - before):
            if proc.poll() is not None:
                raise RuntimeError(f"camera exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("camera never opened a segment")
            time.sleep(0.005)
        started = time.monotonic()
        time.sleep(after_s)
        killed = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return Kill(started, killed)


def seal_leftovers(home: Home) -> None:
    """What the camera does at its next start: seal anything left open."""
    device_storage(home, DEVICE)


def verify_all(home: Home) -> VerifyReport:
    return verify_paths([home.device_storage(DEVICE)], DeviceRegistry(home.registry_dir))


def survived_seconds_by_clip(home: Home, report: VerifyReport) -> dict[str, tuple[float, float]]:
    """Per clip: (first frame's monotonic time, seconds of video that survived), by decoding it all."""
    server = ServerKeyPair.load(home.server_keys_dir)
    registry = DeviceRegistry(home.registry_dir)
    by_clip = defaultdict(list)
    for seg in report.segments:
        by_clip[str(seg.preamble.clip_id)].append(seg)
    out = {}
    for clip, segs in by_clip.items():
        segs.sort(key=lambda s: s.preamble.segment_index)
        ts = bytearray()
        for seg in segs:
            for rtype, payload in decrypt_records(Path(seg.path), registry, server):
                if rtype == RECORD_MEDIA:
                    ts += payload
        frames = 0
        if ts:
            tmp = Path(segs[0].path).with_suffix(".check.ts")
            tmp.write_bytes(bytes(ts))
            try:
                with av.open(str(tmp)) as c:
                    frames = sum(1 for _ in c.decode(video=0))
            finally:
                tmp.unlink()
        out[clip] = (segs[0].preamble.start_mono_ns / 1e9, frames / FPS)
    return out


def survived_audio_by_clip(home: Home, report: VerifyReport) -> dict[str, tuple[float, float]]:
    """Per clip: (first frame's monotonic time, seconds from it to the end of the last sound that survived).

    Audio and video presentation times share one clock, so the sound's end is
    placed on the monotonic timeline through the first video frame's time.
    """
    server = ServerKeyPair.load(home.server_keys_dir)
    registry = DeviceRegistry(home.registry_dir)
    by_clip = defaultdict(list)
    for seg in report.segments:
        by_clip[str(seg.preamble.clip_id)].append(seg)
    out = {}
    for clip, segs in by_clip.items():
        segs.sort(key=lambda s: s.preamble.segment_index)
        ts = bytearray()
        for seg in segs:
            for rtype, payload in decrypt_records(Path(seg.path), registry, server):
                if rtype == RECORD_MEDIA:
                    ts += payload
        video_first, audio_end = None, None
        tmp = Path(segs[0].path).with_suffix(".check-audio.ts")
        tmp.write_bytes(bytes(ts))
        try:
            with av.open(str(tmp)) as c:
                for pkt in c.demux():
                    if pkt.pts is None or pkt.size == 0:
                        continue
                    t = float(pkt.pts * pkt.time_base)
                    if pkt.stream.type == "video":
                        video_first = t if video_first is None else min(video_first, t)
                    elif pkt.stream.type == "audio":
                        try:
                            frames = pkt.decode()
                        except av.FFmpegError:
                            continue  # the last frame may be cut short by the kill
                        for frame in frames:
                            end = float(frame.pts * frame.time_base) + frame.samples / frame.sample_rate
                            audio_end = end if audio_end is None else max(audio_end, end)
        finally:
            tmp.unlink()
        if video_first is not None and audio_end is not None:
            out[clip] = (segs[0].preamble.start_mono_ns / 1e9, audio_end - video_first)
    return out


def audio_losses(kills: list[Kill], survived: dict[str, tuple[float, float]]) -> list[float]:
    """Seconds of sound lost per kill: from the end of the last sound that survived to the kill."""
    return losses(kills, survived)


def losses(kills: list[Kill], survived: dict[str, tuple[float, float]]) -> list[float]:
    """Seconds lost per kill: from the last surviving frame's end to the kill."""
    result = []
    clips = sorted(survived.values())
    for kill in kills:
        mine = [c for c in clips if kill.started_mono - 1.0 <= c[0] <= kill.killed_mono]
        if not mine:
            result.append(kill.killed_mono - kill.started_mono)
            continue
        first_mono, seconds = mine[-1]
        result.append(max(0.0, kill.killed_mono - (first_mono + seconds)))
    return result
