#!/usr/bin/env python3
"""`make bench`: measure OpenBWV's performance figures and keep them in one JSON file.

Each benchmark is a function registered under a name in `BENCHMARKS`; it
returns a dict of figures (figure name -> number) and declares, in `FIGURES`,
each figure's unit, target and what it is measured against.  A run merges its
figures into the output file (one JSON object, figure name -> number), keeping
the figures of benchmarks that did not run, so that `--only` never loses
anything, and prints a table.

Adding a benchmark::

    @benchmark("verify", verify_mb_s=Figure("MB/s", "what it is compared with"))
    def bench_verify() -> dict[str, float]:
        ...
        return {"verify_mb_s": 1234.5}

Figures are throughputs in MB = 10^6 bytes unless their unit says otherwise.
A missed target is reported in the table, not by the exit status: a benchmark
measures, it does not gate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

MB = 1_000_000
MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent

Figures = dict[str, float]
Reference = Union[str, Callable[[Figures], str]]


@dataclass(frozen=True)
class Figure:
    """How to read one figure: its unit, what it is compared with, and the bar it must clear."""

    unit: str
    reference: Reference  # text, or a function of this run's figures (to show a computed baseline)
    at_least: float | None = None  # the target, for figures where higher is better
    at_most: float | None = None  # the target, for figures where lower is better

    def target_text(self) -> str:
        if self.at_least is not None:
            return f">= {_bound(self.at_least)}"
        if self.at_most is not None:
            return f"<= {_bound(self.at_most)}"
        return "-"

    def met(self, value: float) -> bool | None:
        if self.at_least is not None:
            return value >= self.at_least
        if self.at_most is not None:
            return value <= self.at_most
        return None

    def reference_text(self, figures: Figures) -> str:
        try:
            return self.reference(figures) if callable(self.reference) else self.reference
        except KeyError:
            return "-"


def _bound(value: float) -> str:
    """A target as written: 0.7, 50, 4,194,304 (a byte count in full, not 4.1943e+06)."""
    return f"{value:,.0f}" if abs(value) >= 10_000 and float(value).is_integer() else f"{value:g}"


BENCHMARKS: dict[str, Callable[[], Figures]] = {}
FIGURES: dict[str, Figure] = {}
PRODUCED_BY: dict[str, str] = {}  # figure name -> benchmark name, so --only accepts either


def benchmark(name: str, **figures: Figure) -> Callable[[Callable[[], Figures]], Callable[[], Figures]]:
    """Register a benchmark and declare the figures it returns."""

    def register(fn: Callable[[], Figures]) -> Callable[[], Figures]:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        for figure in figures:
            if figure in FIGURES:
                raise ValueError(f"figure {figure!r} already declared by benchmark {PRODUCED_BY[figure]!r}")
            PRODUCED_BY[figure] = name
        FIGURES.update(figures)
        BENCHMARKS[name] = fn
        return fn

    return register


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- openssl references ------------------------------------------------------

_SPEED_VALUE = re.compile(r"([0-9.]+)k$")


def openssl_speed_mb_s(algorithm: str, *, block: int = 16384, seconds: int = 3) -> float:
    """Throughput of `openssl speed -evp ALGORITHM` on one core, in MB/s.

    openssl prints one line per algorithm, last, in thousands of bytes per
    second, e.g. `AES-256-GCM    3837334.87k`.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("bench: the openssl command is missing (apt-get install openssl, or `make bench`)")
    cmd = [openssl, "speed", "-evp", algorithm, "-bytes", str(block), "-seconds", str(seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    match = _SPEED_VALUE.search(lines[-1]) if lines else None
    if done.returncode != 0 or match is None:
        raise SystemExit(
            f"bench: `{' '.join(cmd)}` exited {done.returncode}; expected a last line ending in '<number>k', "
            f"found {lines[-1] if lines else 'no output'!r}\n{done.stderr.strip()}"
        )
    return float(match.group(1)) * 1000 / MB


def _series(aes: float, sha: float) -> float:
    """Throughput of doing both jobs one after the other on the same bytes: 1/(1/A + 1/H)."""
    return 1 / (1 / aes + 1 / sha)


def _openssl_series(f: Figures) -> float:
    return _series(f["openssl_aes_gcm_mb_s"], f["openssl_sha256_mb_s"])


# -- sealing -----------------------------------------------------------------

SEAL_INPUT_MIB = 256
SEAL_PIECE = MiB
SEAL_RUNS = 3


@benchmark(
    "seal",
    openssl_aes_gcm_mb_s=Figure("MB/s", "A: openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3"),
    openssl_sha256_mb_s=Figure("MB/s", "H: openssl speed -evp sha256 -bytes 16384 -seconds 3"),
    seal_mb_s=Figure(
        "MB/s",
        lambda f: f"{SEAL_INPUT_MIB} MiB, best of {SEAL_RUNS}; A then H in series 1/(1/A+1/H) = {_openssl_series(f):.0f} MB/s",
    ),
    seal_vs_openssl=Figure("ratio", "seal_mb_s / (1/(1/A+1/H))", at_least=0.7),
)
def bench_seal() -> Figures:
    """Sealing throughput of one process, hashing, signing and syncing included.

    A 256 MiB file of random bytes is written and synced first (not timed, so
    its own writeback does not compete with the runs).  Each run then reads it
    in 1 MiB pieces and seals them with `SegmentWriter` (RECORD_MEDIA appends,
    default chunk limit and suite) into a segment in the same directory, from
    opening the writer to `seal()` returning; the sealed file is checked with
    the device's public key and removed outside the timing.  Sealing encrypts
    every byte with AES-256-GCM and hashes the ciphertext with SHA-256, so the
    baseline is those two openssl speeds measured now, on this machine.
    """
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from openbwv.sealed.keys import DeviceKey, ServerKeyPair
    from openbwv.sealed.layout import RECORD_MEDIA
    from openbwv.sealed.reader import verify_file
    from openbwv.sealed.writer import SegmentWriter

    progress("seal: openssl speed, aes-256-gcm and sha256 (3 s each)")
    aes = openssl_speed_mb_s("aes-256-gcm")
    sha = openssl_speed_mb_s("sha256")

    device = DeviceKey.generate("bench-cam-1")
    server = ServerKeyPair.generate()

    class Registry:
        """The reader's KeyLookup, enrolling just the bench's own device."""

        def public_key(self, device_id: str) -> ed25519.Ed25519PublicKey:
            if device_id != device.device_id:
                raise KeyError(device_id)
            return ed25519.Ed25519PublicKey.from_public_bytes(device.public_bytes)

    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        directory = Path(tmp)
        source = directory / "input.bin"
        progress(f"seal: writing {SEAL_INPUT_MIB} MiB of random bytes to {source}")
        with open(source, "wb") as f:
            for _ in range(SEAL_INPUT_MIB):
                f.write(os.urandom(MiB))
            f.flush()
            os.fsync(f.fileno())
        size = source.stat().st_size

        best = float("inf")
        for run in range(1, SEAL_RUNS + 1):
            started = time.perf_counter()
            writer = SegmentWriter(
                directory,
                device,
                server.public,
                clip_id=uuid.uuid4(),
                segment_index=0,
                sequence=1,  # each run's file is removed before the next
                prev_hash=bytes(32),
                start_utc_us=time.time_ns() // 1000,
            )
            with open(source, "rb", buffering=0) as f:
                while piece := f.read(SEAL_PIECE):
                    writer.append(RECORD_MEDIA, piece)
            info = writer.seal(time.time_ns() // 1000)
            elapsed = time.perf_counter() - started

            checked = verify_file(info.path, Registry())
            expected_chunks = -(-size // writer.preamble.chunk_limit) + 1  # media chunks and the end chunk
            if checked.trailer.chunk_count != expected_chunks:
                raise SystemExit(f"bench: sealed {checked.trailer.chunk_count} chunks, expected {expected_chunks}")
            info.path.unlink()
            best = min(best, elapsed)
            progress(f"seal: run {run}/{SEAL_RUNS}: {size / MB / elapsed:.0f} MB/s ({elapsed:.3f} s)")

    seal = size / MB / best
    return {
        "openssl_aes_gcm_mb_s": aes,
        "openssl_sha256_mb_s": sha,
        "seal_mb_s": seal,
        "seal_vs_openssl": seal / _series(aes, sha),
    }


# -- the camera ----------------------------------------------------------------


def _throwaway_storage(directory: Path):
    """A `DeviceStorage` under `directory`, sealing for a device and a server that exist only for this run."""
    from openbwv.sealed.keys import DeviceKey, ServerKeyPair
    from openbwv.sealed.storage import DeviceStorage

    return DeviceStorage(directory, DeviceKey.generate("bench-cam-1"), ServerKeyPair.generate().public)


def _camera_encoder_settings(width: int, height: int, fps: int):
    """The encoder as `Camera.run` opens it: the video settings of a camera left at its defaults."""
    from openbwv.firmware.config import VideoConfig
    from openbwv.firmware.encoder import EncoderSettings

    v = VideoConfig()
    return EncoderSettings(
        width=width, height=height, fps=fps, bitrate=v.bitrate, codec=v.codec, preset=v.preset, tune=v.tune,
        keyframe_seconds=v.keyframe_seconds, input_format="bgr24",
    )


PIPELINE_SIZE = (1920, 1080)
PIPELINE_FPS = 30
PIPELINE_WARMUP = 30  # frames encoded (and recorded) by each side before the clock starts
PIPELINE_FRAMES = 300
PIPELINE_CHUNK = 30  # the two sides take turns, a second of video each
PIPELINE_RUNS = 5
PIPELINE_START_UTC_NS = 1_790_000_000_000_000_000  # a fixed burnt-in clock: both sides get the same pixels


class _EncoderAlone:
    """`H264Encoder` on its own, fed frames rendered beforehand and held in memory."""

    def __init__(self, frames: list, settings) -> None:
        from openbwv.firmware.encoder import H264Encoder

        self.frames = frames
        self.encoder = H264Encoder(settings)
        self.fps = settings.fps
        self.next = 0

    def run(self, count: int) -> float:
        """Encode the next `count` frames; the seconds it took."""
        started = time.perf_counter()
        for index in range(self.next, self.next + count):
            utc_us = PIPELINE_START_UTC_NS // 1000 + index * 1_000_000 // self.fps
            self.encoder.encode(self.frames[index], index / self.fps, utc_us)
        self.next += count
        return time.perf_counter() - started

    def close(self) -> None:
        self.encoder.flush()


class _Pipeline:
    """The camera's recording path: `SyntheticSource` (unpaced) -> `H264Encoder` -> `ClipWriter` -> storage.

    One frame after the other on the calling thread, as in `Camera.run`,
    recording one clip with the camera's default segment length and flush
    interval.  Packets carry their frame's place on the capture timeline
    (index / fps), not the moment the unpaced source produced it, so flushes
    (every `flush_seconds` of video) and the segment cut (at the first
    keyframe after `segment_seconds`) come as often per frame as on a camera.
    """

    def __init__(self, storage, settings) -> None:
        from openbwv.firmware.clipwriter import ClipWriter, VideoFormat
        from openbwv.firmware.config import CameraConfig
        from openbwv.firmware.encoder import H264Encoder
        from openbwv.hw.camera_source import SyntheticSource

        self.config = CameraConfig()
        w, h, self.fps = settings.width, settings.height, settings.fps
        self.source = SyntheticSource(w, h, self.fps, paced=False, start_utc_ns=PIPELINE_START_UTC_NS)
        self.encoder = H264Encoder(settings)
        self.writer = ClipWriter(
            storage, VideoFormat(w, h, self.fps, "h264", settings.bitrate),
            segment_seconds=self.config.video.segment_seconds, flush_seconds=self.config.flush_seconds,
        )
        self.stages = dict.fromkeys(("capture", "encode", "segment+seal"), 0.0)  # stage -> seconds
        self.frames = 0

    def run(self, count: int) -> float:
        """Take the next `count` frames through; the seconds it took (and each stage's share in `stages`)."""
        clock = time.perf_counter
        started = clock()
        for _ in range(count):
            t0 = clock()
            frame = self.source.read()
            t1 = clock()
            packets = self.encoder.encode(frame.pixels, frame.index / self.fps, frame.utc_ns // 1000)
            t2 = clock()
            for pkt in packets:
                self.writer.write(pkt)
            t3 = clock()
            self.stages["capture"] += t1 - t0
            self.stages["encode"] += t2 - t1
            self.stages["segment+seal"] += t3 - t2
        self.frames += count
        return clock() - started

    def close(self) -> None:
        """Drain the encoder and seal the clip."""
        try:
            for pkt in self.encoder.flush():
                self.writer.write(pkt)
        finally:
            self.source.close()
            self.writer.close()

    def check(self) -> None:
        """The closed clip holds every frame, cut into segments where expected."""
        frames, stats = self.frames, self.writer.stats
        expected_segments = 1 + int(frames / self.fps // self.config.video.segment_seconds)
        if stats.packets != frames or len(stats.segments) != expected_segments:
            raise SystemExit(
                f"bench: the pipeline recorded {stats.packets} packets in {len(stats.segments)} segment(s); "
                f"expected {frames} packets in {expected_segments}"
            )


@benchmark(
    "pipeline",
    pipeline_fps=Figure(
        "frames/s",
        f"{PIPELINE_SIZE[0]}x{PIPELINE_SIZE[1]} synthetic -> libx264 veryfast zerolatency 8 Mbit/s -> MPEG-TS -> "
        f"sealed segments, {PIPELINE_FRAMES} frames, best of {PIPELINE_RUNS}",
    ),
    encoder_fps=Figure(
        "frames/s", "the same libx264 through PyAV, same settings, alone on the same frames from memory"
    ),
    pipeline_vs_ffmpeg=Figure(
        "ratio", "pipeline_fps / encoder_fps, the two taking turns in the same run", at_least=0.9
    ),
)
def bench_pipeline() -> Figures:
    """Frames per second through the whole recording path, against the encoder it is built on.

    The pipeline is the camera's own components (see `_Pipeline`): the
    synthetic source renders a 1080p frame, `H264Encoder` converts it from
    BGR to YUV 4:2:0 and encodes it (libx264, preset veryfast, tune
    zerolatency, 8 Mbit/s, a keyframe every second: `VideoConfig`'s
    defaults), and `ClipWriter` muxes the packets into MPEG-TS and seals them
    into a `DeviceStorage`, fsyncing every half second of video; the timed
    frames include a segment cut (one segment sealed, the next opened).  The
    reference is `H264Encoder` alone, fed the very same frames rendered
    beforehand and held in memory (about 2 GB), so it pays for the colour
    conversion and the encoding and nothing else.

    This machine is shared and its speed drifts by tens of percent from one
    second to the next, so the two sides take turns a second of video at a
    time (each with its own encoder), so that a burst of load elsewhere hits
    both alike; each side keeps its best run.
    """
    from openbwv.hw.camera_source import SyntheticSource

    w, h = PIPELINE_SIZE
    settings = _camera_encoder_settings(w, h, PIPELINE_FPS)
    count = PIPELINE_WARMUP + PIPELINE_FRAMES
    progress(f"pipeline: rendering {count} frames of {w}x{h} for the encoder alone ({count * w * h * 3 / MB:.0f} MB)")
    source = SyntheticSource(w, h, PIPELINE_FPS, paced=False, start_utc_ns=PIPELINE_START_UTC_NS)
    frames = [source.render(index) for index in range(count)]

    best_alone = best_pipeline = float("inf")
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        storage = _throwaway_storage(Path(tmp) / "storage")
        for run in range(1, PIPELINE_RUNS + 1):
            alone, pipeline = _EncoderAlone(frames, settings), _Pipeline(storage, settings)
            try:
                alone.run(PIPELINE_WARMUP)
                pipeline.run(PIPELINE_WARMUP)
                pipeline.stages = dict.fromkeys(pipeline.stages, 0.0)
                alone_s = pipeline_s = 0.0
                for turn in range(PIPELINE_FRAMES // PIPELINE_CHUNK):
                    if turn % 2 == 0:  # A P P A A P ...: neither side always goes first
                        alone_s += alone.run(PIPELINE_CHUNK)
                        pipeline_s += pipeline.run(PIPELINE_CHUNK)
                    else:
                        pipeline_s += pipeline.run(PIPELINE_CHUNK)
                        alone_s += alone.run(PIPELINE_CHUNK)
            finally:
                alone.close()
                pipeline.close()
            pipeline.check()
            per_frame = ", ".join(f"{name} {seconds / PIPELINE_FRAMES * 1000:.1f}"
                                  for name, seconds in pipeline.stages.items())
            progress(f"pipeline: run {run}/{PIPELINE_RUNS}: encoder alone {PIPELINE_FRAMES / alone_s:.1f} fps, "
                     f"pipeline {PIPELINE_FRAMES / pipeline_s:.1f} fps (ms per frame: {per_frame})")
            best_alone = min(best_alone, alone_s)
            best_pipeline = min(best_pipeline, pipeline_s)
    del frames

    encoder_fps = PIPELINE_FRAMES / best_alone
    pipeline_fps = PIPELINE_FRAMES / best_pipeline
    return {"pipeline_fps": pipeline_fps, "encoder_fps": encoder_fps, "pipeline_vs_ffmpeg": pipeline_fps / encoder_fps}


PREBUFFER_SECONDS = 60.0
PREBUFFER_FED_SECONDS = 90  # buffer time pushed: it fills for 60 s, then evicts a GOP a second for 30 s
PREBUFFER_CLIP_SECONDS = 10  # encoded once, replayed with advancing times
PREBUFFER_NOISE = 8  # grain of up to 8 levels on every pixel: the test pattern alone encodes at ~3.6 Mbit/s


def _encode_prebuffer_clip(path: Path) -> list[tuple[int, bool]]:
    """Encode PREBUFFER_CLIP_SECONDS of 1080p with the camera's settings into `path`; (size, keyframe) per packet.

    The synthetic pattern is mostly flat colour, which x264 needs only ~3.6
    of its 8 Mbit/s for; a sensor's grain fills the budget, so each frame
    gets some (eight noise frames in turn, added with saturation) and the
    packets come out at the camera's real bitrate.
    """
    import cv2
    import numpy as np

    from openbwv.firmware.encoder import H264Encoder
    from openbwv.hw.camera_source import SyntheticSource

    w, h = PIPELINE_SIZE
    settings = _camera_encoder_settings(w, h, PIPELINE_FPS)
    encoder = H264Encoder(settings)
    source = SyntheticSource(w, h, PIPELINE_FPS, paced=False, start_utc_ns=PIPELINE_START_UTC_NS)
    rng = np.random.default_rng(20261125)
    grain = [rng.integers(0, PREBUFFER_NOISE + 1, (h, w, 3), dtype=np.uint8) for _ in range(8)]
    packets = []
    try:
        for index in range(PREBUFFER_CLIP_SECONDS * PIPELINE_FPS):
            pixels = cv2.add(source.read().pixels, grain[index % len(grain)])
            packets += encoder.encode(pixels, index / PIPELINE_FPS, 0)
        packets += encoder.flush()
    finally:
        source.close()
    with open(path, "wb") as f:
        for pkt in packets:
            f.write(pkt.data)
    return [(pkt.size, pkt.keyframe) for pkt in packets]


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _replay_into_prebuffer(path: Path, packets: list[tuple[int, bool]], seconds: float, max_bytes: int,
                           fed_seconds: float, fps: int) -> dict[str, float]:
    """Run in a fresh interpreter: push the clip's packets, over and over, into a `PreEventBuffer`.

    Every push is a new bytes object (as each packet from the encoder is),
    stamped one frame after the last.  The resident set is read after each
    push; the result is its peak above the level before the first push,
    with the buffer's own account of what it held at that moment.
    """
    from fractions import Fraction

    from openbwv.firmware.packets import EncodedPacket
    from openbwv.firmware.prebuffer import PreEventBuffer

    clip = memoryview(Path(path).read_bytes())  # the template stays alive: no freed memory to reuse
    offsets, at = [], 0
    for size, _keyframe in packets:
        offsets.append((at, at + size))
        at += size
    time_base = Fraction(1, fps)
    buffer = PreEventBuffer(seconds, max_bytes)
    baseline = peak = _resident_bytes()
    peak_held_bytes, peak_held_seconds = 0, 0.0
    for pts in range(int(fed_seconds * fps)):
        start, end = offsets[pts % len(packets)]
        keyframe = packets[pts % len(packets)][1]
        buffer.push(EncodedPacket(bytes(clip[start:end]), pts, time_base, keyframe, pts / fps, 0))
        resident = _resident_bytes()
        if resident >= peak:
            peak, peak_held_bytes, peak_held_seconds = resident, buffer.bytes_held, buffer.seconds_held
    return {"peak_extra_bytes": peak - baseline, "held_bytes": peak_held_bytes, "held_seconds": peak_held_seconds,
            "final_held_seconds": buffer.seconds_held}


@benchmark(
    "prebuffer",
    prebuffer_mb_per_min=Figure(
        "MB/min",
        f"peak RSS growth of a fresh process / minutes held; PreEventBuffer({PREBUFFER_SECONDS:g} s) fed "
        f"{PREBUFFER_FED_SECONDS} s of real 1080p packets at 8 Mbit/s (x264 camera settings, grained test pattern); "
        "target 1.2 x the nominal 8 Mbit/s (60 MB/min) = 72 MB/min",
        at_most=72,
    ),
    prebuffer_held_mb_per_min=Figure("MB/min", "the encoded bytes themselves, as the buffer counts them"),
)
def bench_prebuffer() -> Figures:
    """Memory the pre-event buffer costs per minute it holds, at the camera's bitrate.

    Ten seconds of 1080p are encoded once with the camera's encoder settings
    (see `_encode_prebuffer_clip`).  A fresh interpreter, so that memory
    this process freed earlier cannot hide the growth, then replays the
    packets into `PreEventBuffer(60 s, the camera's byte bound for 60 s)`
    with advancing times for 90 s of video, reading its resident set
    (/proc/self/statm) after every push.  The figure is the peak growth over
    the level before the first push, divided by the minutes of video held at
    that peak: payload plus packet objects plus allocator slack, as the
    camera would pay it.
    """
    import concurrent.futures
    import multiprocessing

    from openbwv.firmware.config import load_config

    config = load_config(None, **{"prebuffer.seconds": PREBUFFER_SECONDS})
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        clip = Path(tmp) / "clip.h264"
        progress(f"prebuffer: encoding {PREBUFFER_CLIP_SECONDS} s of {PIPELINE_SIZE[0]}x{PIPELINE_SIZE[1]} "
                 "with the camera's settings")
        packets = _encode_prebuffer_clip(clip)
        bitrate = sum(size for size, _ in packets) * 8 / PREBUFFER_CLIP_SECONDS
        progress(f"prebuffer: {len(packets)} packets, {bitrate / 1e6:.2f} Mbit/s; replaying {PREBUFFER_FED_SECONDS} s "
                 f"into a {PREBUFFER_SECONDS:g} s buffer (max_bytes {config.prebuffer_max_bytes / MB:.0f} MB) "
                 "in a fresh process")
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            result = pool.submit(_replay_into_prebuffer, clip, packets, PREBUFFER_SECONDS,
                                 config.prebuffer_max_bytes, PREBUFFER_FED_SECONDS, PIPELINE_FPS).result()
    if result["final_held_seconds"] < PREBUFFER_SECONDS:
        raise SystemExit(f"bench: the buffer held {result['final_held_seconds']:.2f} s at the end, "
                         f"expected at least {PREBUFFER_SECONDS:g} s (did the byte bound bite?)")
    minutes = result["held_seconds"] / 60
    progress(f"prebuffer: peak resident growth {result['peak_extra_bytes'] / MB:.1f} MB with "
             f"{result['held_bytes'] / MB:.1f} MB of packets ({result['held_seconds']:.2f} s of video) held")
    return {
        "prebuffer_mb_per_min": result["peak_extra_bytes"] / MB / minutes,
        "prebuffer_held_mb_per_min": result["held_bytes"] / MB / minutes,
    }


LATENCY_PRESSES = 50
LATENCY_RECORD_S = 0.3


def _wait_for(what: str, predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: waited {timeout:g} s for {what}")
        time.sleep(0.005)


@benchmark(
    "record_latency",
    record_latency_ms=Figure(
        "ms",
        f"median of {LATENCY_PRESSES} presses, emulated camera at 640x360 30 fps: button 'down' to the "
        "record_led's next 'on' in the hardware trace",
        at_most=50,
    ),
)
def bench_record_latency() -> Figures:
    """From the button going down to the red circle lighting, as the hardware trace records both.

    The emulated camera runs in this process, as `bwv camera --emulate`
    does: `Camera` on `open_hardware` with the synthetic source (paced, 640x360
    30 fps), default settings, the capture loop in its own thread.  Each of
    the presses comes with the camera in standby with a keyframe in its
    pre-event buffer, a random 0-100 ms after it got one; the button is held
    50 ms (the start press is consumed, so its release neither bookmarks nor
    stops), the clip records 0.3 s and is stopped by command, and the next
    press waits until it is sealed and the camera is back in standby.  Both
    edges come from the emulated pins themselves, stamped on the same
    monotonic clock.
    """
    import random
    import statistics
    import threading

    from openbwv.firmware.camera import Camera
    from openbwv.firmware.config import load_config
    from openbwv.firmware.state import Mode
    from openbwv.hw import open_hardware
    from openbwv.hw.config import CameraConfig as HwCamera, HardwareConfig
    from openbwv.hw.trace_analysis import edges, on_edges, read_trace

    rng = random.Random(20261125)
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        trace = Path(tmp) / "hw-trace.jsonl"
        hw = open_hardware(HardwareConfig(
            backend="emulated", camera=HwCamera(source="synthetic", width=640, height=360), trace_path=trace))
        errors: list[BaseException] = []
        try:
            camera = Camera(load_config(None), hw, _throwaway_storage(Path(tmp) / "storage"))

            def capture_loop() -> None:
                try:
                    camera.run()
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append(e)

            loop = threading.Thread(target=capture_loop, name="bench-camera", daemon=True)
            loop.start()
            for press in range(LATENCY_PRESSES):
                _wait_for("standby with a keyframe in the pre-event buffer",
                          lambda: errors or camera.machine.mode is Mode.STANDBY and len(camera.prebuffer) > 0)
                if errors:
                    break
                time.sleep(rng.uniform(0, 0.1))
                hw.emulator.press_button()
                time.sleep(0.05)
                hw.emulator.release_button()
                _wait_for("the clip to open", lambda: errors or len(camera.report.clips) > press)
                time.sleep(LATENCY_RECORD_S)
                camera.record(False, "bench")
                _wait_for("the clip to be sealed", lambda: errors or camera.machine.mode is Mode.STANDBY)
                if (press + 1) % 10 == 0:
                    progress(f"record_latency: {press + 1}/{LATENCY_PRESSES} presses")
            camera.stop()
            loop.join(timeout=60)
        finally:
            hw.close()
        if errors:
            raise SystemExit(f"bench: the camera failed: {errors[0]!r}")
        if len(camera.report.clips) != LATENCY_PRESSES:
            raise SystemExit(f"bench: {len(camera.report.clips)} clips recorded, expected {LATENCY_PRESSES}")
        events = read_trace(trace)

    downs = edges(events, "button", "down")
    lit = on_edges(events, "record_led")
    if len(downs) != LATENCY_PRESSES:
        raise SystemExit(f"bench: the trace holds {len(downs)} button presses, expected {LATENCY_PRESSES}")
    latencies = []
    for down, next_down in zip(downs, downs[1:] + [float("inf")]):
        after = [t for t in lit if down <= t < next_down]
        if not after:
            raise SystemExit(f"bench: the record LED did not light after the press at t={down:.6f}")
        latencies.append(after[0] - down)
    ms = sorted(x * 1000 for x in latencies)
    progress(f"record_latency: min {ms[0]:.2f} ms, median {statistics.median(ms):.2f} ms, "
             f"90th {ms[int(len(ms) * 0.9)]:.2f} ms, max {ms[-1]:.2f} ms")
    return {"record_latency_ms": statistics.median(ms)}


CRASH_KILLS = 20


def _tests_module(relative: str):
    """A helper module of the tests (tests/camera/crash_harness.py...), imported by path: tests/ is no package."""
    import importlib.util

    path = REPO / relative
    if str(REPO / "tests") not in sys.path:  # the kits import tests/kit.py as `kit`, as under pytest
        sys.path.append(str(REPO / "tests"))
    name = "openbwv_bench_" + path.stem
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _crash_harness():
    """The crash test's own code: a recording camera process, killed, and what survived."""
    return _tests_module("tests/camera/crash_harness.py")


@benchmark(
    "crash_loss",
    crash_loss_s=Figure(
        "s",
        lambda f: f"median of {CRASH_KILLS} SIGKILLs of a recording `bwv camera --emulate` at random 0.6-3.0 s; "
                  f"worst {f['crash_loss_max_s']:.2f} s",
        at_most=1,
    ),
    crash_loss_max_s=Figure("s", f"the worst of the same {CRASH_KILLS} kills"),
)
def bench_crash_loss() -> Figures:
    """Seconds of video a SIGKILL while recording loses, as the crash test measures them.

    Uses the crash test's harness (tests/camera/crash_harness.py): a real
    `bwv camera` process recording the paced synthetic source is killed a
    random 0.6-3.0 s after its first segment opened, 20 times in one home;
    the leftovers are sealed as the camera would at its next start,
    everything is verified, and each clip is decrypted and decoded to count
    the frames that survived.  The loss is from the end of the last
    surviving frame to the kill, on the monotonic clock the camera stamps
    its frames with.
    """
    import random
    import statistics

    harness = _crash_harness()
    rng = random.Random(20261125)
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        home = harness.make_home(Path(tmp) / "home")
        kills = []
        for kill in range(1, CRASH_KILLS + 1):
            kills.append(harness.record_and_kill(home, rng.uniform(0.6, 3.0)))
            if kill % 5 == 0:
                progress(f"crash_loss: {kill}/{CRASH_KILLS} kills")
        harness.seal_leftovers(home)
        report = harness.verify_all(home)
        if not report.ok:
            raise SystemExit("bench: segments left by the kills do not verify:\n"
                             + "\n".join(p.line() for p in report.problems))
        lost = harness.losses(kills, harness.survived_seconds_by_clip(home, report))
    progress(f"crash_loss: seconds lost per kill, sorted: {', '.join(f'{x:.2f}' for x in sorted(lost))}")
    return {"crash_loss_s": statistics.median(lost), "crash_loss_max_s": max(lost)}


# -- sound -------------------------------------------------------------------------

AV_SYNC_SIZE = (1920, 1080)
AV_SYNC_SECONDS = 6.5  # a click and a flash every second: six pairs measured
CPU_RECORD_SECONDS = 20.0
CPU_WINDOW_S = 12.0
AV_PIPELINE_FRAMES = 300
AV_PIPELINE_RUNS = 3


@benchmark(
    "av_sync",
    av_sync_ms=Figure(
        "ms",
        f"worst |click - flash| of {int(AV_SYNC_SECONDS)} pairs made at the same instant, recorded by the emulated "
        f"camera at {AV_SYNC_SIZE[0]}x{AV_SYNC_SIZE[1]}p30, sealed, opened with `bwv open`'s code, decoded with PyAV",
        at_most=33,
    ),
)
def bench_av_sync() -> Figures:
    """How far apart sound and picture play in an opened clip, for events that happened together.

    The emulated camera's synthetic source turns a frame white and its
    synthetic microphone clicks at every whole second of the monotonic
    clock; the clip (camera defaults: 8 Mbit/s libx264 veryfast, AAC-LC 64
    kbit/s, 10 s segments) is sealed, opened as `bwv open` does into MP4,
    and each flash's first white frame is paired with the nearest click's
    onset.  The first white frame is the one captured nearest the instant,
    so sampling alone puts them up to half a frame (17 ms) apart; the
    target is one frame (33 ms).
    """
    from openbwv.enrol import create_server_keys, device_storage, enrol_device
    from openbwv.firmware.camera import Camera
    from openbwv.firmware.config import load_config
    from openbwv.firmware.state import Mode
    from openbwv.home import Home
    from openbwv.hw import open_hardware
    from openbwv.hw.config import AudioConfig, CameraConfig as HwCamera, HardwareConfig
    from openbwv.opener import open_paths
    from openbwv.registry import DeviceRegistry
    from openbwv.sealed.keys import ServerKeyPair

    from openbwv import avsync

    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        home = Home(Path(tmp) / "home")
        create_server_keys(home)
        enrol_device(home, "bench-cam")
        storage = device_storage(home, "bench-cam")
        w, h = AV_SYNC_SIZE
        hw = open_hardware(HardwareConfig(camera=HwCamera(source="synthetic", width=w, height=h, fps=30.0,
                                                          flash_period_s=1.0),
                                          audio=AudioConfig(pattern="clicks", period_s=1.0), sound="silent"))
        camera = Camera(load_config(None, **{"prebuffer.seconds": 0}), hw, storage)
        try:
            camera.record(True, "bench")
            runner = __import__("threading").Thread(target=camera.run, daemon=True)
            runner.start()
            _wait_for("recording", camera.recording_started.is_set)
            time.sleep(AV_SYNC_SECONDS)
            camera.record(False, "bench")
            _wait_for("the clip to close", lambda: camera.machine.mode is Mode.STANDBY and camera.report.clips)
            camera.stop()
            runner.join(30)
        finally:
            hw.close()
        report = open_paths(sorted(storage.directory.glob("*.bwv")), DeviceRegistry(home.registry_dir),
                            ServerKeyPair.load(home.server_keys_dir), Path(tmp) / "opened")
        if report.problems or len(report.clips) != 1 or report.clips[0].mp4_path is None:
            raise SystemExit(f"bench: the av_sync clip did not open: {report.problems}")
        offsets = avsync.sync_offsets(report.clips[0].mp4_path)
    progress(f"av_sync: click - flash per pair (ms): {', '.join(f'{o * 1000:+.1f}' for o in offsets)}")
    return {"av_sync_ms": max(abs(o) for o in offsets) * 1000}


class _AvEncodersAlone(_EncoderAlone):
    """`H264Encoder` and `AacEncoder` alone, on frames and sound rendered beforehand and held in memory."""

    def __init__(self, frames: list, chunks: list, settings) -> None:
        from openbwv.firmware.audio_encoder import AacEncoder

        super().__init__(frames, settings)
        self.chunks = chunks
        self.audio = AacEncoder()

    def run(self, count: int) -> float:
        started = time.perf_counter()
        first = self.next
        super().run(count)
        for index in range(first, first + count):
            self.audio.encode(self.chunks[index])
        return time.perf_counter() - started

    def close(self) -> None:
        super().close()
        self.audio.flush()


def _audio_chunk(source, index: int, fps: int):
    """Frame `index`'s share of sound (48000 / fps samples), stamped on the frames' capture timeline."""
    from openbwv.hw.audio_source import SAMPLE_RATE, AudioChunk

    n = SAMPLE_RATE // fps
    first = index * n
    return AudioChunk(source.render(0.0, first, n), first, first / SAMPLE_RATE,
                      PIPELINE_START_UTC_NS + first * 1_000_000_000 // SAMPLE_RATE)


class _AvPipeline(_Pipeline):
    """The camera's recording path with sound: each frame's share of the microphone rendered, AAC-encoded,
    muxed with the H.264 into the same MPEG-TS and sealed in the same chunks."""

    def __init__(self, storage, settings) -> None:
        from openbwv.firmware.audio_encoder import AacEncoder
        from openbwv.firmware.clipwriter import AudioFormat, ClipWriter, VideoFormat
        from openbwv.hw.audio_source import SyntheticAudioSource

        super().__init__(storage, settings)
        self.writer.close()  # replaced by one with a sound track
        self.audio_source = SyntheticAudioSource("tones", paced=False)
        self.audio = AacEncoder()
        self.writer = ClipWriter(
            storage, VideoFormat(settings.width, settings.height, self.fps, "h264", settings.bitrate),
            segment_seconds=self.config.video.segment_seconds, flush_seconds=self.config.flush_seconds,
            audio=AudioFormat(bitrate=self.audio.bitrate, extradata=self.audio.extradata), pts_origin_mono=0.0,
        )
        self.stages["audio"] = 0.0

    def run(self, count: int) -> float:
        clock = time.perf_counter
        started = clock()
        first = self.frames
        super().run(count)
        t0 = clock()
        for index in range(first, first + count):
            for pkt in self.audio.encode(_audio_chunk(self.audio_source, index, self.fps)):
                self.writer.write(pkt)
        self.stages["audio"] += clock() - t0
        return clock() - started

    def check(self) -> None:
        super().check()
        if self.writer.stats.audio_packets < self.frames * 48000 / self.fps / 1024 * 0.95:
            raise SystemExit(f"bench: the A/V pipeline sealed only {self.writer.stats.audio_packets} audio packets")


@benchmark(
    "pipeline_av",
    pipeline_av_fps=Figure(
        "frames/s",
        f"{PIPELINE_SIZE[0]}x{PIPELINE_SIZE[1]}p30 synthetic + 48 kHz mono -> libx264 veryfast 8 Mbit/s + AAC-LC "
        f"64 kbit/s -> one MPEG-TS -> sealed segments, {AV_PIPELINE_FRAMES} frames, best of {AV_PIPELINE_RUNS}",
    ),
    encoders_av_fps=Figure("frames/s", "the same libx264 and aac through PyAV, alone on the same frames and sound"),
    pipeline_vs_ffmpeg_av=Figure("ratio", "pipeline_av_fps / encoders_av_fps, taking turns in one run",
                                 at_least=0.9),
)
def bench_pipeline_av() -> Figures:
    """`pipeline_vs_ffmpeg` with sound: capture, encode (video and audio), mux and seal, against the two
    encoders alone on the same pictures and sound held in memory (each frame with its 1600 samples)."""
    from openbwv.hw.audio_source import SyntheticAudioSource
    from openbwv.hw.camera_source import SyntheticSource

    w, h = PIPELINE_SIZE
    settings = _camera_encoder_settings(w, h, PIPELINE_FPS)
    count = PIPELINE_WARMUP + AV_PIPELINE_FRAMES
    progress(f"pipeline_av: rendering {count} frames of {w}x{h} and their sound for the encoders alone")
    source = SyntheticSource(w, h, PIPELINE_FPS, paced=False, start_utc_ns=PIPELINE_START_UTC_NS)
    frames = [source.render(index) for index in range(count)]
    sound = SyntheticAudioSource("tones", paced=False)
    chunks = [_audio_chunk(sound, index, PIPELINE_FPS) for index in range(count)]
    best_alone = best_pipeline = float("inf")
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        storage = _throwaway_storage(Path(tmp) / "storage")
        for run in range(1, AV_PIPELINE_RUNS + 1):
            alone, pipeline = _AvEncodersAlone(frames, chunks, settings), _AvPipeline(storage, settings)
            try:
                alone.run(PIPELINE_WARMUP)
                pipeline.run(PIPELINE_WARMUP)
                alone_s = pipeline_s = 0.0
                for turn in range(AV_PIPELINE_FRAMES // PIPELINE_CHUNK):
                    if turn % 2 == 0:
                        alone_s += alone.run(PIPELINE_CHUNK)
                        pipeline_s += pipeline.run(PIPELINE_CHUNK)
                    else:
                        pipeline_s += pipeline.run(PIPELINE_CHUNK)
                        alone_s += alone.run(PIPELINE_CHUNK)
            finally:
                alone.close()
                pipeline.close()
            pipeline.check()
            progress(f"pipeline_av: run {run}/{AV_PIPELINE_RUNS}: encoders alone "
                     f"{AV_PIPELINE_FRAMES / alone_s:.1f} fps, pipeline {AV_PIPELINE_FRAMES / pipeline_s:.1f} fps")
            best_alone, best_pipeline = min(best_alone, alone_s), min(best_pipeline, pipeline_s)
    del frames
    alone_fps, pipeline_fps = AV_PIPELINE_FRAMES / best_alone, AV_PIPELINE_FRAMES / best_pipeline
    return {"pipeline_av_fps": pipeline_fps, "encoders_av_fps": alone_fps,
            "pipeline_vs_ffmpeg_av": pipeline_fps / alone_fps}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@benchmark(
    "camera_cpu",
    camera_cpu_pct_1080p30=Figure(
        "% of a core",
        lambda f: f"`bwv camera --emulate` recording 1920x1080p30 with sound (libx264 veryfast 8 Mbit/s, AAC 64 "
                  f"kbit/s, sealed), {CPU_WINDOW_S:g} s of its steady state on this machine "
                  f"({os.cpu_count()} cores); Pi 5 estimate in docs/hardware.md",
    ),
)
def bench_camera_cpu() -> Figures:
    """The camera process's CPU share while it records 1080p30 with audio, in emulation.

    A real `bwv camera --emulate --headless --record` process (paced synthetic
    picture and microphone, silent buzzer); its user and system CPU time
    from /proc over a window that starts once it has sealed its first data,
    divided by the window's wall time.  100 % is one core.
    """
    from openbwv.enrol import create_server_keys, enrol_device
    from openbwv.home import Home

    harness = _crash_harness()
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        home = Home(Path(tmp) / "home")
        create_server_keys(home)
        enrol_device(home, "cpu-cam")
        env = dict(os.environ, BWV_HOME=str(home.root))
        proc = subprocess.Popen(
            [harness.bwv(), "camera", "--emulate", "--headless", "--source", "synthetic", "--record",
             "--seconds", str(CPU_RECORD_SECONDS), "--video-size", "1920x1080", "--fps", "30",
             "--prebuffer-seconds", "0", "--sound", "silent", "--gnss", "none"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            storage = home.device_storage("cpu-cam")
            _wait_for("the first segment", lambda: list(storage.glob("*.open")) or proc.poll() is not None, 60)
            time.sleep(2.0)  # past start-up
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(CPU_WINDOW_S)
            cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    progress(f"camera_cpu: {share:.0f} % of one core over {t1 - t0:.1f} s")
    return {"camera_cpu_pct_1080p30": share}


# -- the dock and the evidence server -----------------------------------------------

UPLOADER_CHUNK = 4 * MiB  # dock/tus_upload.py DEFAULT_CHUNK, the dock's PATCH size (checked when the benchmarks run)
SEGMENT_SECONDS_US = 10_000_000  # each benchmark segment "records" 10 s, for plausible preamble and trailer times
UPLOAD_SEGMENTS = 64
UPLOAD_SEGMENT_MIB = 16  # 64 x 16 MiB: 1 GiB of media
INGEST_DOCKS = 16
INGEST_SEGMENTS = 8  # per dock
INGEST_SEGMENT_MIB = 8  # 16 docks x 8 x 8 MiB: 1 GiB of media
RESUME_SEGMENT_MIB = 20  # its middle byte is halfway through a chunk: 10 MiB is in the third 4 MiB PATCH


@contextmanager
def _environment(values: dict[str, str]):
    """`os.environ` with `values` set for the block, as it was afterwards: the servers a benchmark starts
    inherit them (S3 credentials, as a systemd unit's Environment= gives them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _server_kit():
    """The server tests' own tools: `ServerProcess` (a real `bwv server` on a loopback port), the receipt verifier."""
    return _tests_module("tests/server/server_kit.py")


def _uploader_class():
    """`TusUploader`, the dock's own uploader, after checking that it still sends the chunks the figures assume."""
    from openbwv.dock.tus_upload import DEFAULT_CHUNK, TusUploader

    if DEFAULT_CHUNK != UPLOADER_CHUNK:
        raise SystemExit(f"bench: TusUploader's chunk is now {DEFAULT_CHUNK} bytes; UPLOADER_CHUNK says "
                         f"{UPLOADER_CHUNK} (update it, and the targets and texts that quote it)")
    return TusUploader


class _EvidenceServer:
    """A BWV_HOME of its own with fresh server keys, and `bwv server` on it on an ephemeral loopback port.

    Docks get their tokens and cameras are enrolled through the functions
    behind `bwv server add-dock` and `bwv keys device`, before the server
    starts (it reads the registry as devices appear anyway).  The server runs
    with no free-space reserve (this machine's disk is not a store) plus
    `args`; its log stays in `root`, and is shown if it does not stop cleanly.
    """

    def __init__(self, root: Path, *args: str) -> None:
        from openbwv.enrol import create_server_keys
        from openbwv.home import Home

        self.root = root
        self.home = Home(root / "home")
        create_server_keys(self.home)
        self.process = _server_kit().ServerProcess(self.home.root, "--reserve-mb", "0", *args, log=root / "server.log")

    @property
    def url(self) -> str:
        return self.process.url

    def add_dock(self, dock_id: str) -> str:
        """Register a dock; its bearer token."""
        from openbwv.server.auth import DockTokens
        from openbwv.server.service import open_metadata

        db = open_metadata(self.home)
        try:
            return DockTokens(db).add_dock(dock_id)
        finally:
            db.close()

    def enrol(self, device_id: str):
        """Enrol a camera; the `DeviceStorage` it seals into (root/cameras/<device_id>)."""
        from openbwv.enrol import enrol_device, load_device
        from openbwv.sealed.storage import DeviceStorage

        enrol_device(self.home, device_id)
        key, server_public = load_device(self.home, device_id)
        return DeviceStorage(self.root / "cameras" / device_id, key, server_public)

    def check_receipt(self, receipt: bytes, device_id: str, info) -> None:
        """The receipt verifies with the server's key and names exactly the segment `info`, at its size."""
        checked = _server_kit().verifier(self.home).check_for(
            receipt, device_id=device_id, sequence=info.sequence, segment_hash=info.segment_hash)
        if checked.size != info.path.stat().st_size:
            raise SystemExit(f"bench: the receipt for {device_id} #{info.sequence} says {checked.size} bytes, "
                             f"the segment has {info.path.stat().st_size}")

    def __enter__(self) -> "_EvidenceServer":
        self.process.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        code = self.process.stop()
        if code != 0 and exc_type is None:
            raise SystemExit(f"bench: `bwv server` exited {code} on SIGTERM, expected 0; the end of its log:\n"
                             f"{self.process.log()[-3000:]}")


def _seal_segments(storage, count: int, media_bytes: int) -> list:
    """`count` segments of `media_bytes` of random media each, sealed one after the other into `storage`.

    One clip, one chain, as a camera records them; the media goes in 1 MiB
    appends.  Returns each segment's `SealedInfo`.
    """
    from openbwv.sealed.layout import RECORD_MEDIA

    clip = uuid.uuid4()
    sealed = []
    for index in range(count):
        start = PIPELINE_START_UTC_NS // 1000 + index * SEGMENT_SECONDS_US
        segment = storage.open_segment(clip_id=clip, segment_index=index, start_utc_us=start)
        for _ in range(media_bytes // MiB):
            segment.append(RECORD_MEDIA, os.urandom(MiB))
        sealed.append(segment.seal(start + SEGMENT_SECONDS_US))
    return sealed


def _upload(uploader, device_id: str, info, progress_callback: Callable[[int], None] = lambda sent: None) -> bytes:
    """One sealed segment through the dock's uploader, as a bay sends it; the receipt."""
    return uploader.upload(info.path, device_id, info.sequence, info.segment_hash.hex(), progress_callback)


# The receiving end of the loopback copy, run as `python -c` so that it has a process (and a GIL) to itself,
# as the server has.  argv: directory, piece size.  Per file: an 8-byte big-endian length, the bytes; it
# answers b"k" once the file is synced.
_LOOPBACK_SINK = r"""
import os, socket, sys

directory, piece = sys.argv[1], int(sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
buffer = memoryview(bytearray(piece))
count = 0
while len(head := conn.recv(8, socket.MSG_WAITALL)) == 8:
    left = int.from_bytes(head, "big")
    count += 1
    fd = os.open(os.path.join(directory, f"{count}.copy"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    while left:
        got = conn.recv_into(buffer, min(left, piece))
        if not got:
            sys.exit("loopback sink: the sender went away in the middle of a file")
        view = buffer[:got]
        while view:
            view = view[os.write(fd, view):]
        left -= got
    os.fsync(fd)
    os.close(fd)
    conn.sendall(b"k")
"""


class _LoopbackCopy:
    """The floor under any upload: the bytes of a file over a plain loopback TCP connection into a synced file.

    No HTTP, no checksum, no verification, no database, no receipt.  The
    sender reads the file in the uploader's chunk size and `sendall`s each
    piece (TCP_NODELAY, as urllib3 sets it) on one connection kept open, as
    the uploader keeps its session; the sink, its own process, `recv_into`s
    1 MiB pieces and writes them to a new file in `directory`, fsyncs it once
    at its end, and answers one byte, which `copy` waits for.
    """

    def __init__(self, directory: Path, chunk: int) -> None:
        directory.mkdir(parents=True)
        self.chunk = chunk
        self.proc = subprocess.Popen([sys.executable, "-c", _LOOPBACK_SINK, str(directory), str(MiB)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.proc.kill()
            raise SystemExit(f"bench: the loopback sink did not start: its first line is {line!r}")
        self.sock = socket.create_connection(("127.0.0.1", int(line)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def copy(self, path: Path) -> None:
        self.sock.sendall(path.stat().st_size.to_bytes(8, "big"))
        with open(path, "rb", buffering=0) as f:
            while piece := f.read(self.chunk):
                self.sock.sendall(piece)
        if self.sock.recv(1) != b"k":
            raise SystemExit(f"bench: the loopback sink did not acknowledge {path.name} "
                             f"(exit status {self.proc.poll()})")

    def __enter__(self) -> "_LoopbackCopy":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()  # the sink sees the end of the stream and exits
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _upload_reference(f: Figures) -> str:
    return (f"1 dock (TusUploader, {UPLOADER_CHUNK // MiB} MiB PATCHes, state file) -> `bwv server` on loopback, "
            f"{UPLOAD_SEGMENTS} x {UPLOAD_SEGMENT_MIB} MiB sealed segments one after the other, each until its "
            f"receipt; R = {f['loopback_copy_mb_s']:.0f} MB/s")


@benchmark(
    "upload",
    loopback_copy_mb_s=Figure(
        "MB/s",
        f"R: the same files over a plain loopback TCP connection: read and sendall in {UPLOADER_CHUNK // MiB} MiB "
        "pieces; a sink process recv_into()s 1 MiB, writes to a file on the same file system, one fsync per file, "
        "1-byte ack",
    ),
    upload_mb_s=Figure("MB/s", _upload_reference),
    upload_vs_raw=Figure("ratio", "upload_mb_s / R, the two taking turns segment by segment", at_least=0.7),
)
def bench_upload() -> Figures:
    """End-to-end upload throughput of one dock, against copying the same bytes over loopback.

    A fresh home, one dock token, one enrolled camera; 1 GiB of random media
    is sealed as that camera (64 segments of 16 MiB, not timed).  Then
    `bwv server` starts and each segment goes up with `TusUploader.upload`,
    the dock's own uploader configured as `bwv dock` configures it: from the
    call to the receipt it returns, so creation, every PATCH (checksummed,
    written and fsynced by the server before it answers), the server's
    verification and storing of the segment, the signed receipt, and the
    uploader's state file are all in.  Every receipt is checked afterwards.

    The reference is the least any server could do with the same bytes:
    `_LoopbackCopy`.  The two take turns a segment at a time (alternating
    which goes first), so that the drifting speed of this shared machine and
    its disk hits both alike; the throughputs are total bytes over the
    summed times.
    """
    TusUploader = _uploader_class()
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        root = Path(tmp)
        server = _EvidenceServer(root)
        token = server.add_dock("bench-dock-1")
        storage = server.enrol("bench-cam-1")
        device_id = storage.device.device_id
        progress(f"upload: sealing {UPLOAD_SEGMENTS} x {UPLOAD_SEGMENT_MIB} MiB segments of random media (not timed)")
        sealed = _seal_segments(storage, UPLOAD_SEGMENTS, UPLOAD_SEGMENT_MIB * MiB)
        sizes = [info.path.stat().st_size for info in sealed]
        total = sum(sizes)

        clock = time.perf_counter
        upload_s = copy_s = 0.0
        receipts = []
        with server, _LoopbackCopy(root / "copies", UPLOADER_CHUNK) as raw:
            uploader = TusUploader(server.url, token, state_path=root / "dock" / "uploads.json")
            for index, info in enumerate(sealed):
                for side in ("copy", "upload") if index % 2 == 0 else ("upload", "copy"):
                    started = clock()
                    if side == "copy":
                        raw.copy(info.path)
                        copy_s += clock() - started
                    else:
                        receipts.append(_upload(uploader, device_id, info))
                        upload_s += clock() - started
                if (index + 1) % 16 == 0:
                    done = sum(sizes[: index + 1])
                    progress(f"upload: {index + 1}/{UPLOAD_SEGMENTS} segments: upload {done / MB / upload_s:.0f} MB/s, "
                             f"loopback copy {done / MB / copy_s:.0f} MB/s")
            if uploader.bytes_sent != total:
                raise SystemExit(f"bench: the uploader sent {uploader.bytes_sent} bytes for {total} bytes of segments")
        for info, receipt in zip(sealed, receipts, strict=True):
            server.check_receipt(receipt, device_id, info)

    upload = total / MB / upload_s
    copy = total / MB / copy_s
    progress(f"upload: per segment of {total / len(sealed) / MB:.1f} MB: upload "
             f"{upload_s / len(sealed) * 1000:.0f} ms, loopback copy {copy_s / len(sealed) * 1000:.0f} ms")
    return {"loopback_copy_mb_s": copy, "upload_mb_s": upload, "upload_vs_raw": upload / copy}


class _StampedBody:
    """A PATCH body handed to requests as a file, to learn when its last byte was handed to the socket.

    requests sends a file-like body by reading it until it is empty; the
    one read here returns all of it (urllib3 passes it to a single
    `sendall`), so the empty read that follows comes right after the whole
    body is in the kernel's hands.  Content-Length comes from `__len__`.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)
        self.sent_at: float | None = None

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        data, self.data = self.data, b""
        if not data and self.sent_at is None:
            self.sent_at = time.perf_counter()
        return data


def _receipt_clock_uploader():
    TusUploader = _uploader_class()

    class ReceiptClock(TusUploader):
        """The dock's uploader, timing each segment from its last byte sent to its receipt received.

        The last byte of a segment travels in its final PATCH, and that
        PATCH's 204 carries the receipt (Bwv-Receipt): the server answers it
        only once the chunk is synced, its offset committed, and the whole
        segment verified, stored and recorded.  So the time from the moment
        that PATCH's body has all been sent (`_StampedBody`) to `requests`
        returning its response is the wait for the receipt, as the dock sees
        it; every other request goes through untouched.
        """

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.receipt_s: list[float] = []
            self._segment_size = -1

        def upload(self, path, *args, **kwargs) -> bytes:
            self._segment_size = Path(path).stat().st_size
            return super().upload(path, *args, **kwargs)

        def _request(self, method: str, url: str, **kw):
            data = kw.get("data")
            if method != "PATCH" or not data or int(kw["headers"]["Upload-Offset"]) + len(data) != self._segment_size:
                return super()._request(method, url, **kw)
            body = _StampedBody(data)
            resp = super()._request(method, url, **{**kw, "data": body})
            answered = time.perf_counter()
            if resp.status_code == 204 and resp.headers.get("Bwv-Receipt") and body.sent_at is not None:
                self.receipt_s.append(answered - body.sent_at)
            return resp

    return ReceiptClock


def _p99(values: list[float]) -> float:
    """The 99th percentile, nearest rank: the smallest value with at least 99 % of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


def _run_docks(uploaders: list, jobs: list[list[tuple[str, object]]]) -> tuple[float, list[float], list[list[bytes]]]:
    """Docks at once: thread n uploads the segments of `jobs[n]` ((device id, sealed info) pairs: one
    camera's or several) one after the other through `uploaders[n]`, all starting together at a barrier.

    Returns the seconds from the barrier to the last receipt, each dock's
    finishing time from the barrier (sorted), and each dock's receipts in
    order.  A dock that fails ends the benchmark with its error."""
    import threading

    clock = time.perf_counter
    receipts: list[list[bytes]] = [[] for _ in jobs]
    finished = [0.0] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs) + 1)

    def dock(n: int) -> None:
        start.wait()
        try:
            for device_id, info in jobs[n]:
                receipts[n].append(_upload(uploaders[n], device_id, info))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finished[n] = clock()

    threads = [threading.Thread(target=dock, args=(n,), name=f"bench-dock-{n + 1}") for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    start.wait()
    started = clock()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"bench: {len(errors)} dock(s) failed; the first: {errors[0]!r}")
    return max(finished) - started, sorted(t - started for t in finished), receipts


@benchmark(
    "ingest",
    ingest_mb_s_16_docks=Figure(
        "MB/s",
        f"{INGEST_DOCKS} docks at once (a thread each: own token, camera and TusUploader), {INGEST_SEGMENTS} x "
        f"{INGEST_SEGMENT_MIB} MiB segments each, one `bwv server --max-concurrent {INGEST_DOCKS}`; all bytes / "
        "(start to last receipt)",
    ),
    ingest_p99_receipt_ms=Figure(
        "ms",
        lambda f: f"p99 (nearest rank) over the {INGEST_DOCKS * INGEST_SEGMENTS} segments of the same run: last body "
                  "byte of the final PATCH handed to the socket -> its 204 with Bwv-Receipt back in the dock; "
                  f"median {f['ingest_median_receipt_ms']:.0f} ms",
    ),
    ingest_median_receipt_ms=Figure("ms", "the median of the same"),
)
def bench_ingest() -> Figures:
    """Aggregate ingest of a station's worth of docks into one server, and how long each waits for its receipts.

    Sixteen docks, each a thread of this process with its own token, its
    own enrolled camera and its own `TusUploader` (state file included),
    upload their eight sealed segments (random media, sealed beforehand,
    not timed) one after the other, all starting together at a barrier.
    Throughput is every byte over the time from the barrier to the last
    receipt.  The receipt latency of each segment is measured in the dock
    (see `ReceiptClock` in `_receipt_clock_uploader`).  The docks share this
    process, and the server its two cores with them, as a small station
    server behind its docks would not; the figures are a floor.
    """
    import statistics

    ReceiptClock = _receipt_clock_uploader()
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        root = Path(tmp)
        server = _EvidenceServer(root, "--max-concurrent", str(INGEST_DOCKS))
        progress(f"ingest: sealing {INGEST_DOCKS} cameras x {INGEST_SEGMENTS} segments of {INGEST_SEGMENT_MIB} MiB "
                 "(not timed)")
        docks = []
        for n in range(1, INGEST_DOCKS + 1):
            token = server.add_dock(f"bench-dock-{n}")
            storage = server.enrol(f"bench-cam-{n}")
            docks.append((token, storage.device.device_id,
                          _seal_segments(storage, INGEST_SEGMENTS, INGEST_SEGMENT_MIB * MiB)))
        total = sum(info.path.stat().st_size for _, _, sealed in docks for info in sealed)

        with server:
            uploaders = [ReceiptClock(server.url, token, state_path=root / "docks" / str(n) / "uploads.json")
                         for n, (token, _, _) in enumerate(docks)]
            progress(f"ingest: {len(docks)} docks uploading {total / MB:.0f} MB")
            elapsed, dock_s, receipts = _run_docks(uploaders, [[(device_id, info) for info in sealed]
                                                              for _, device_id, sealed in docks])
        for (_, device_id, sealed), got in zip(docks, receipts, strict=True):
            for info, receipt in zip(sealed, got, strict=True):
                server.check_receipt(receipt, device_id, info)

    waits = [s * 1000 for uploader in uploaders for s in uploader.receipt_s]
    if len(waits) != INGEST_DOCKS * INGEST_SEGMENTS:
        raise SystemExit(f"bench: timed {len(waits)} receipts, expected one per segment "
                         f"({INGEST_DOCKS * INGEST_SEGMENTS}): a final PATCH was retried or not seen")
    progress(f"ingest: {total / MB / elapsed:.0f} MB/s in {elapsed:.2f} s; docks finished after {dock_s[0]:.2f}-"
             f"{dock_s[-1]:.2f} s; receipt wait min {min(waits):.0f} ms, median {statistics.median(waits):.0f} ms, "
             f"p99 {_p99(waits):.0f} ms, max {max(waits):.0f} ms")
    return {"ingest_mb_s_16_docks": total / MB / elapsed, "ingest_p99_receipt_ms": _p99(waits),
            "ingest_median_receipt_ms": statistics.median(waits)}


class _ConnectionCut(Exception):
    """The bench's stand-in for the network going away under an upload."""


class _DockDied(Exception):
    """The bench's stand-in for the dock process dying between two chunks."""


class _CutBody:
    """A PATCH body that sends its first `keep` bytes and then loses the connection (see `_StampedBody`).

    urllib3 closes its connection on any exception while sending, so the
    server sees the body end early, as when the dock's side of the
    connection is lost; its `read_timeout` wait for a stalled one is not
    what this measures.
    """

    def __init__(self, data: bytes, keep: int) -> None:
        self.data = data[:keep]
        self.length = len(data)
        self.sent = 0

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        if not self.data:
            raise _ConnectionCut(f"connection cut after {self.sent} of {self.length} body bytes")
        data, self.data = self.data, b""
        self.sent = len(data)
        return data


def _cutting_uploader():
    TusUploader = _uploader_class()

    class CuttingUploader(TusUploader):
        """The dock's uploader on a connection that is cut once `cut_at` bytes of a segment have been sent.

        The PATCH that would carry byte `cut_at` sends the bytes before it
        and then raises `_ConnectionCut` out of `upload`, as the network
        dropping mid-chunk would end the dock's attempt; `cut_bytes` is what
        that PATCH put on the wire (`bytes_sent` counts finished PATCHes only).
        """

        def __init__(self, *args, cut_at: int, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.cut_at = cut_at
            self.cut_bytes = 0

        def _request(self, method: str, url: str, **kw):
            data = kw.get("data")
            if method == "PATCH" and data:
                offset = int(kw["headers"]["Upload-Offset"])
                if offset < self.cut_at < offset + len(data):
                    body = _CutBody(data, self.cut_at - offset)
                    try:
                        return super()._request(method, url, **{**kw, "data": body})
                    finally:
                        self.cut_bytes += body.sent
            return super()._request(method, url, **kw)

    return CuttingUploader


@benchmark(
    "resume",
    resume_resent_bytes=Figure(
        "bytes",
        f"one {RESUME_SEGMENT_MIB} MiB segment; the connection drops mid-PATCH once half of it is sent (halfway "
        f"through a chunk); a new TusUploader on the same state file resumes; bytes sent by both - segment size; "
        f"target one chunk = {UPLOADER_CHUNK} B (TusUploader's DEFAULT_CHUNK)",
        at_most=UPLOADER_CHUNK,
    ),
    resume_resent_bytes_between_chunks=Figure(
        "bytes",
        "the same, but the dock dies between chunks: its progress callback raises after the PATCH that passes half "
        "the segment; 0 expected (an acknowledged offset is durable)",
    ),
)
def bench_resume() -> Figures:
    """Bytes an interrupted upload sends twice, when a new uploader picks it up from the state file.

    Two segments of one camera (random media, sealed beforehand).  The first
    upload of each is interrupted halfway through the segment: for the
    first by a cut connection in the middle of a PATCH body (`CuttingUploader`
    in `_cutting_uploader`: the server keeps none of a checksummed chunk that
    did not arrive whole, so the part sent is sent again), for the second by
    the progress callback raising after an acknowledged PATCH, as a dock
    killed between chunks (nothing should be sent again).  Then a fresh
    `TusUploader` with the same state file, as the dock after a restart,
    uploads the segment to its receipt (checked).  Resent bytes are all the
    body bytes both uploaders put on the wire, minus the segment's size.
    """
    TusUploader = _uploader_class()
    CuttingUploader = _cutting_uploader()
    with tempfile.TemporaryDirectory(prefix="openbwv-bench-") as tmp:
        root = Path(tmp)
        server = _EvidenceServer(root)
        token = server.add_dock("bench-dock-1")
        storage = server.enrol("bench-cam-1")
        device_id = storage.device.device_id
        cut, between = _seal_segments(storage, 2, RESUME_SEGMENT_MIB * MiB)
        resent = {}
        with server:
            size = cut.path.stat().st_size
            state = root / "dock" / "cut.json"
            first = CuttingUploader(server.url, token, state_path=state, cut_at=size // 2)
            try:
                _upload(first, device_id, cut)
            except _ConnectionCut as e:
                progress(f"resume: first upload of #{cut.sequence}: {e}; {first.bytes_sent} bytes acknowledged before")
            else:
                raise SystemExit("bench: the cut upload finished; the cut never happened")
            second = TusUploader(server.url, token, state_path=state)
            server.check_receipt(_upload(second, device_id, cut), device_id, cut)
            resent["resume_resent_bytes"] = first.bytes_sent + first.cut_bytes + second.bytes_sent - size

            size = between.path.stat().st_size
            state = root / "dock" / "between.json"
            first = TusUploader(server.url, token, state_path=state)

            def die_past_half(sent: int) -> None:
                if sent >= size // 2:
                    raise _DockDied(f"the dock died with {sent} of {size} bytes acknowledged")

            try:
                _upload(first, device_id, between, die_past_half)
            except _DockDied as e:
                progress(f"resume: first upload of #{between.sequence}: {e}")
            else:
                raise SystemExit("bench: the interrupted upload finished; the progress callback never raised")
            second = TusUploader(server.url, token, state_path=state)
            server.check_receipt(_upload(second, device_id, between), device_id, between)
            resent["resume_resent_bytes_between_chunks"] = first.bytes_sent + second.bytes_sent - size
    progress(f"resume: resent {resent['resume_resent_bytes']} bytes after a cut mid-PATCH, "
             f"{resent['resume_resent_bytes_between_chunks']} after a dock restart between chunks")
    return resent


# -- driver ------------------------------------------------------------------


def select(names: list[str]) -> list[str]:
    """Benchmarks to run, in registration order, from benchmark or figure names."""
    if not names:
        return list(BENCHMARKS)
    wanted = set()
    for name in names:
        if name in BENCHMARKS:
            wanted.add(name)
        elif name in PRODUCED_BY:
            wanted.add(PRODUCED_BY[name])
        else:
            raise SystemExit(
                f"bench: no benchmark or figure called {name!r}; benchmarks: {', '.join(BENCHMARKS)}; "
                f"figures: {', '.join(FIGURES)}"
            )
    return [name for name in BENCHMARKS if name in wanted]


def load_figures(path: Path) -> dict[str, object]:
    """The figures already recorded, so that a partial run keeps the others."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"bench: {path} is not JSON ({e}); move it aside rather than lose its figures") from None
    if not isinstance(doc, dict):
        raise SystemExit(f"bench: {path} holds a JSON {type(doc).__name__}, expected an object of figures")
    return doc


def save_figures(path: Path, figures: dict[str, object]) -> None:
    """Write the merged figures atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(dict(sorted(figures.items())), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 1 else f"{value:.2f}"


def table(figures: Figures) -> str:
    rows = [("figure", "value", "unit", "target", "reference")]
    for name, value in figures.items():
        spec = FIGURES.get(name, Figure("", "-"))
        verdict = {True: " (met)", False: " (MISSED)", None: ""}[spec.met(value)]
        rows.append((name, _number(value), spec.unit, spec.target_text() + verdict, spec.reference_text(figures)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len("reference"))
    return "\n".join(lines)


def load_plugins() -> None:
    """Register the benchmarks kept beside this file as ``scripts/bench_<area>.py``.

    A plugin does ``from bench import Figure, benchmark, progress``; this module
    is made importable under that name first, so that a plugin registers into
    the same tables whether bench.py runs as a script or is imported."""
    import importlib.util

    sys.modules.setdefault("bench", sys.modules[__name__])
    for path in sorted(Path(__file__).resolve().parent.glob("bench_*.py")):
        name = f"bench_plugins.{path.stem}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def main(argv: list[str] | None = None) -> int:
    load_plugins()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench.json", help="JSON file of figures to merge into")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this benchmark (or the one producing this figure); repeat or comma-separate for several",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their figures, run nothing")
    parser.add_argument("--show", action="store_true", help="print the table of the figures already recorded, run nothing")
    args = parser.parse_args(argv)

    if args.show:
        recorded = load_figures(args.out)
        print(table({k: v for k, v in recorded.items() if isinstance(v, (int, float))}))
        return 0

    if args.list:
        for name in BENCHMARKS:
            produced = [figure for figure, owner in PRODUCED_BY.items() if owner == name]
            print(f"{name}: {', '.join(produced)}")
        return 0

    names = select([part for item in args.only for part in item.split(",") if part])
    recorded = load_figures(args.out)  # read first: a bad file stops us before minutes of measuring
    measured: Figures = {}
    for name in names:
        progress(f"== {name}")
        measured.update(BENCHMARKS[name]())
    save_figures(args.out, {**recorded, **{k: round(v, 3) for k, v in measured.items()}})
    print(table(measured))
    print(f"\nfigures merged into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
