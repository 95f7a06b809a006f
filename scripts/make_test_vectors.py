#!/usr/bin/env python3
"""Make the sealed-segment test vectors in tests/vectors/ (run once; the output is committed).

    .venv/bin/python scripts/make_test_vectors.py [--out tests/vectors]

The vectors pin format version 1: tests/sealed/test_vectors.py checks that
the committed segment still verifies, hashes to the recorded segment hash and
decrypts to the recorded records, so a change that would make old footage
unreadable fails the tests instead of reaching a camera.

The keys come from the fixed seeds below and are the same on every run.  The
segment is not: the segment key, the nonce prefix and the HPKE encapsulation
are random by design, so every run makes a different (equally valid) file.
Re-run this only when the format changes on purpose, and commit the new
vectors with that change.

These keys are published test material: never seal real footage to them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from openbwv.sealed.keys import DeviceKey, ServerKeyPair
from openbwv.sealed.layout import (
    RECORD_EVENTS,
    RECORD_INFO,
    RECORD_MEDIA,
    SUITE_MLKEM768_X25519,
)
from openbwv.sealed.reader import decrypt_records, verify_file
from openbwv.sealed.writer import SegmentWriter

# Fixed key material (test only), readable so that nobody mistakes it for a secret.
MLKEM768_SEED = b"OpenBWV test vector: ML-KEM-768 seed, d || z of FIPS 203 keygen."  # 64 bytes
X25519_KEY = b"OpenBWV test vector: X25519 key."  # 32 bytes
RECEIPT_KEY = b"OpenBWV test vector: receipt key"  # 32 bytes
DEVICE_SEED = b"OpenBWV test vector: device key."  # 32 bytes
DEVICE_ID = "vector-cam"

# The segment: the third of its device, so the previous-segment hash is not all zeros.
SEQUENCE = 3
PREV_HASH = hashlib.sha256(b"OpenBWV test vector: segment 2").digest()
CLIP_ID = uuid.UUID("6f70656e-6277-4076-8563-746f72000001")
SEGMENT_INDEX = 2
START_UTC_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
START_MONO_NS = 5_000_000_000
CLOCK_SYNC_UTC_US = 1_767_222_000_000_000
CLOCK_OFFSET_US = -1_250
END_UTC_US = START_UTC_US + 2_000_000
END_MONO_NS = START_MONO_NS + 2_000_000_000
CHUNK_LIMIT = 1024


def records() -> list[tuple[int, bytes]]:
    """Three records of a few hundred bytes, one of each common kind."""
    info = json.dumps(
        {
            "container": "mpegts",
            "codec": "h264",
            "width": 1920,
            "height": 1080,
            "fps": 30,
            "source": "test vector",
            "note": "OpenBWV sealed segment format version 1 test vector; not footage",
        },
        sort_keys=True,
    ).encode()
    media = hashlib.shake_256(b"OpenBWV test vector: media").digest(376)  # two MPEG-TS packets' worth
    events = b"".join(
        json.dumps({"t_us": START_UTC_US + i * 400_000, "event": kind}, sort_keys=True).encode() + b"\n"
        for i, kind in enumerate(["record-start", "bookmark", "indicator-on", "bookmark", "record-stop"])
    )
    return [(RECORD_INFO, info), (RECORD_MEDIA, media), (RECORD_EVENTS, events)]


class _OneDevice:
    def __init__(self, device: DeviceKey):
        self._id = device.device_id
        self._key = ed25519.Ed25519PublicKey.from_public_bytes(device.public_bytes)

    def public_key(self, device_id: str) -> ed25519.Ed25519PublicKey:
        if device_id != self._id:
            raise KeyError(device_id)
        return self._key


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "vectors")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    server = ServerKeyPair(MLKEM768_SEED, X25519_KEY, RECEIPT_KEY)
    device = DeviceKey(DEVICE_ID, ed25519.Ed25519PrivateKey.from_private_bytes(DEVICE_SEED))
    expected = records()

    with tempfile.TemporaryDirectory() as tmp:
        w = SegmentWriter(
            Path(tmp),
            device,
            server.public,
            clip_id=CLIP_ID,
            segment_index=SEGMENT_INDEX,
            sequence=SEQUENCE,
            prev_hash=PREV_HASH,
            start_utc_us=START_UTC_US,
            start_mono_ns=START_MONO_NS,
            clock_sync_utc_us=CLOCK_SYNC_UTC_US,
            clock_offset_us=CLOCK_OFFSET_US,
            chunk_limit=CHUNK_LIMIT,
            suite=SUITE_MLKEM768_X25519,
        )
        for rtype, payload in expected:
            w.append(rtype, payload)
        info = w.seal(END_UTC_US, END_MONO_NS)

        # Check before publishing: what we commit must be what we claim.
        verified = verify_file(info.path, _OneDevice(device))
        assert verified.segment_hash == info.segment_hash
        assert list(decrypt_records(info.path, _OneDevice(device), server)) == expected

        for old in out.glob("*.bwv"):
            old.unlink()
        segment = out / info.path.name
        shutil.copyfile(info.path, segment)

    server.save(out / "server")
    (out / "device.json").write_text(json.dumps(device.public_record(), indent=2) + "\n")
    data = segment.read_bytes()
    vectors = {
        "format_version": 1,
        "file": segment.name,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "segment_hash": info.segment_hash.hex(),
        "device_id": DEVICE_ID,
        "sequence": SEQUENCE,
        "segment_index": SEGMENT_INDEX,
        "clip_id": str(CLIP_ID),
        "prev_hash": PREV_HASH.hex(),
        "chunk_limit": CHUNK_LIMIT,
        "suite": SUITE_MLKEM768_X25519,
        "server_key_id": server.public.key_id.hex(),
        "chunk_count": info.trailer.chunk_count,
        "recovered": info.trailer.recovered,
        "records": [{"type": rtype, "hex": payload.hex()} for rtype, payload in expected],
    }
    (out / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")
    print(f"wrote {segment} ({len(data)} bytes, segment hash {info.segment_hash.hex()}) and its keys to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
