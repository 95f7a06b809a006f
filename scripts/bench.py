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
import subprocess
import sys
import tempfile
import time
import uuid
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
            return f">= {self.at_least:g}"
        if self.at_most is not None:
            return f"<= {self.at_most:g}"
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


def _crash_harness():
    """tests/camera/crash_harness.py, the crash test's own code, imported by path (tests/ is not a package here)."""
    import importlib.util

    name = "openbwv_bench_crash_harness"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO / "tests" / "camera" / "crash_harness.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


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


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

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
