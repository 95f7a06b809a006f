"""Sealed segments and blob stores for the S3 tests (the stores take only real sealed segments)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from openbwv.sealed.keys import DeviceKey, ServerKeyPair
from openbwv.sealed.layout import HASH_LEN, RECORD_INFO, RECORD_MEDIA
from openbwv.sealed.writer import SegmentWriter


class Sealer:
    """Seals segments as one camera would, to one server key."""

    def __init__(self, work: Path, device_id: str = "cam-s3"):
        self.work = Path(work)
        self.server = ServerKeyPair.generate()
        self.device = DeviceKey.generate(device_id)
        self.n = 0
        self.prev = bytes(HASH_LEN)

    def seal(self, payload: bytes | None = None) -> tuple[Path, str]:
        """A new sealed segment file and its hash (the blob key)."""
        self.n += 1
        where = self.work / f"seg-{self.n:04d}"
        where.mkdir(parents=True)
        w = SegmentWriter(where, self.device, self.server.public, clip_id=uuid.uuid4(), segment_index=0,
                          sequence=self.n, prev_hash=self.prev, start_utc_us=1_780_000_000_000_000,
                          chunk_limit=64 * 1024)
        w.append(RECORD_INFO, json.dumps({"codec": "test"}).encode())
        w.append(RECORD_MEDIA, payload if payload is not None else os.urandom(3000))
        info = w.seal(end_utc_us=1_780_000_010_000_000)
        self.prev = info.segment_hash
        return info.path, info.segment_hash.hex()

    def public_key(self, device_id: str):
        """The KeyLookup verification asks for the device's key (one device here)."""
        assert device_id == self.device.device_id
        return self.device.public_key()
