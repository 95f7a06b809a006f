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
