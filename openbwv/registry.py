"""The registry of enrolled devices: device id -> Ed25519 public key.

Kept as one JSON record per device under BWV_HOME/server/devices, written
atomically.  It answers the `KeyLookup` protocol of the sealed format, so
`bwv verify` and the server check signatures against the same records.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from .sealed.durable import atomic_write
from .sealed.errors import KeyFileError, UnknownDevice
from .sealed.keys import DeviceKey, parse_device_record
from .sealed.layout import DEVICE_ID_RE


class DeviceRegistry:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._cache: dict[str, ed25519.Ed25519PublicKey] = {}

    def _path(self, device_id: str) -> Path:
        if not DEVICE_ID_RE.match(device_id):
            raise UnknownDevice(f"device id {device_id!r} is not a valid device id")
        return self.directory / f"{device_id}.json"

    def enrol(self, key: DeviceKey, *, note: str = "") -> Path:
        """Record a device's public key.  Re-enrolling with a different key is refused:
        it would make every segment the device already sealed unverifiable."""
        path = self._path(key.device_id)
        if path.exists():
            _, existing = parse_device_record(json.loads(path.read_text()), str(path))
            if existing.public_bytes_raw() != key.public_bytes:
                raise KeyFileError(
                    f"device {key.device_id!r} is already enrolled with a different key ({path}); "
                    "retire it explicitly before enrolling a new key under the same id"
                )
            return path
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = key.public_record() | {"enrolled_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if note:
            doc["note"] = note
        atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
        return path

    def public_key(self, device_id: str) -> ed25519.Ed25519PublicKey:
        if device_id in self._cache:
            return self._cache[device_id]
        path = self._path(device_id)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise UnknownDevice(f"device {device_id!r} is not enrolled in {self.directory}") from None
        except ValueError as e:
            raise KeyFileError(f"registry record {path} is not JSON: {e}") from None
        found_id, key = parse_device_record(doc, str(path))
        if found_id != device_id:
            raise KeyFileError(f"registry record {path} names device {found_id!r}")
        self._cache[device_id] = key
        return key

    def devices(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.json")) if self.directory.is_dir() else []
