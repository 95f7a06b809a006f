"""A server's evidence store with footage recorded at chosen times, for the lifecycle tests.

Segments are really sealed (SegmentWriter) and really ingested (Ingestor:
verified, stored as blobs, recorded with their clip and audit record); only
the clocks are chosen: when the camera says it recorded, and when the server
says it received.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from openbwv.enrol import create_server_keys, enrol_device, load_device
from openbwv.home import Home
from openbwv.registry import DeviceRegistry
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.layout import HASH_LEN, RECORD_INFO, RECORD_LOCATION, RECORD_MEDIA
from openbwv.sealed.writer import SegmentWriter
from openbwv.server.blobstore import LocalBlobStore
from openbwv.server.geoindex import to_utc_us
from openbwv.server.ingest import Ingestor, SegmentClaim
from openbwv.server.service import open_metadata

UTC = timezone.utc


@dataclass
class Held:
    clip_id: str
    segment_hash: str
    device_id: str
    sequence: int


# The engine under test's fresh database (tests/lifecycle/conftest.py's db_engine sets it), or None: SQLite.
new_database = lambda: None  # noqa: E731


class Evidence:
    """BWV_HOME with server keys, a metadata store, a blob store and an ingestor."""

    def __init__(self, root: Path, *, blobs=None):
        self.home = Home(root)
        create_server_keys(self.home)
        url = new_database()
        if url is not None:  # named in config.toml, so every service and command on this home uses it
            self.home.config_file.write_text(f'[server]\ndb = "{url}"\n')
        self.keys = ServerKeyPair.load(self.home.server_keys_dir)
        self.db = open_metadata(self.home)
        assert url is None or self.db.engine_name == "postgresql", "the home's database is not the one under test"
        self.blobs = blobs or LocalBlobStore(self.home.server_dir / "store")
        self.received = datetime.now(UTC)
        self.ingestor = Ingestor(self.db, self.blobs, DeviceRegistry(self.home.registry_dir), self.keys,
                                 clock=lambda: self.received.isoformat(timespec="seconds"))
        self.work = root / "sealing"
        self.work.mkdir()
        self._chains: dict[str, tuple[object, object, int, bytes]] = {}
        self._n = 0

    def camera(self, device_id: str) -> None:
        enrol_device(self.home, device_id)
        key, server = load_device(self.home, device_id)
        self._chains[device_id] = (key, server, 0, bytes(HASH_LEN))

    def seal(self, device_id: str, recorded: datetime, *, clip_id: uuid.UUID | None = None, index: int = 0,
             payload: int = 4000, place: tuple[float, float] | None = None) -> tuple[Path, SegmentClaim, str]:
        """The device's next segment, recorded at `recorded`, not yet ingested; with `place`, its sealed
        GNSS track puts it there, one fix a second."""
        if device_id not in self._chains:
            self.camera(device_id)
        key, server, seq, prev = self._chains[device_id]
        self._n += 1
        where = self.work / f"{self._n:05d}"
        where.mkdir()
        clip = clip_id or uuid.uuid4()
        w = SegmentWriter(where, key, server, clip_id=clip, segment_index=index, sequence=seq + 1, prev_hash=prev,
                          start_utc_us=to_utc_us(recorded), chunk_limit=64 * 1024)
        w.append(RECORD_INFO, json.dumps({"codec": "test"}).encode())
        w.append(RECORD_MEDIA, os.urandom(payload))
        if place is not None:
            w.append(RECORD_LOCATION, "".join(
                json.dumps({"utc_us": to_utc_us(recorded) + n * 1_000_000, "lat": place[0], "lon": place[1],
                            "hdop": 0.9}) + "\n" for n in range(10)).encode())
        info = w.seal(end_utc_us=to_utc_us(recorded) + 10_000_000)
        self._chains[device_id] = (key, server, seq + 1, info.segment_hash)
        return info.path, SegmentClaim(device_id, seq + 1, info.segment_hash.hex()), str(clip)

    def record(self, device_id: str, recorded: datetime, *, received: datetime | None = None,
               clip_id: uuid.UUID | None = None, index: int = 0, place: tuple[float, float] | None = None) -> Held:
        """Seal and ingest one segment; the server receives it at `received` (default: 8 h later)."""
        path, claim, clip = self.seal(device_id, recorded, clip_id=clip_id, index=index, place=place)
        return self.ingest(path, claim, clip, received or recorded.replace() + _hours(8))

    def ingest(self, path: Path, claim: SegmentClaim, clip: str, received: datetime) -> Held:
        self.received = received
        self.ingestor.ingest(path, claim, dock="dock-1")
        return Held(clip, claim.segment_hash, claim.device_id, claim.sequence)

    def blob_digest(self, segment_hash: str) -> str | None:
        path = self.blobs.path(segment_hash)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    def close(self) -> None:
        self.db.close()


def _hours(n: float):
    from datetime import timedelta

    return timedelta(hours=n)


__all__ = ["Evidence", "Held", "UTC"]
