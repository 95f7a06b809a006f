"""Creating the server's keys and enrolling cameras under BWV_HOME."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from .home import Home
from .registry import DeviceRegistry
from .sealed.durable import atomic_write
from .sealed.errors import KeyFileError
from .sealed.keys import DeviceKey, ServerKeyPair, ServerPublicKey
from .sealed.storage import DeviceStorage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519


def create_server_keys(home: Home, *, force_new: bool = False) -> ServerPublicKey:
    keys_dir = home.server_keys_dir
    if (keys_dir / ServerKeyPair.MLKEM_FILE).exists():
        if not force_new:
            raise KeyFileError(
                f"server keys already exist in {keys_dir}; replacing them would make everything sealed to them "
                "unreadable (use --force-new to rotate; the old keys are kept)"
            )
        keys_dir.rename(keys_dir.with_name(f"keys.old-{time.strftime('%Y%m%dT%H%M%S')}"))
    pair = ServerKeyPair.generate()
    pair.save(keys_dir)
    return pair.public


def ensure_server_keys(home: Home) -> ServerPublicKey:
    if (home.server_keys_dir / ServerKeyPair.MLKEM_FILE).exists():
        return ServerPublicKey.load(home.server_public_key)
    return create_server_keys(home)


def server_public_keys(home: Home) -> dict[str, ServerPublicKey]:
    """Every server key this installation has used, by key id (hex): the current one and those that
    `bwv keys server --force-new` set aside in keys.old-<time>.  Receipts and audit checkpoints keep
    the key that signed them, so after a rotation the old ones verify only with the old key.  A folder
    without a readable public key vouches for nothing and is skipped."""
    found: dict[str, ServerPublicKey] = {}
    for path in [*sorted(home.server_dir.glob("keys.old-*/server.pub")), home.server_public_key]:
        try:
            key = ServerPublicKey.load(path)
        except KeyFileError:
            continue
        found[key.key_id.hex()] = key
    return found


def receipt_verifiers(home: Home) -> dict[str, "ed25519.Ed25519PublicKey"]:
    """`server_public_keys` as the receipt/checkpoint verifiers audit.verify takes, by key id."""
    return {kid: key.receipt_verifier() for kid, key in server_public_keys(home).items()}


def enrol_device(home: Home, device_id: str) -> Path:
    """Create the device's key (if it has none), give it the server key, register it."""
    server_pub = ServerPublicKey.load(home.server_public_key)
    key_path = home.device_key(device_id)
    if key_path.exists():
        key = DeviceKey.load(device_id, key_path)
    else:
        key = DeviceKey.generate(device_id)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key.save(key_path)
    atomic_write(home.device_server_key(device_id), server_pub.to_json().encode())
    DeviceRegistry(home.registry_dir).enrol(key)
    home.device_storage(device_id).mkdir(parents=True, exist_ok=True)
    return key_path


def load_device(home: Home, device_id: str) -> tuple[DeviceKey, ServerPublicKey]:
    return (DeviceKey.load(device_id, home.device_key(device_id)),
            ServerPublicKey.load(home.device_server_key(device_id)))


def device_storage(home: Home, device_id: str, *, directory: Path | None = None) -> DeviceStorage:
    """The device's segment storage; sealing elsewhere (`--out`) still advances its one chain."""
    key, server = load_device(home, device_id)
    storage = DeviceStorage(directory or home.device_storage(device_id), key, server,
                            state_dir=home.device_dir(device_id))
    storage.recover()
    return storage


def show_keys(home: Home) -> str:
    lines = [f"BWV_HOME {home.root}"]
    if home.server_public_key.exists():
        pub = ServerPublicKey.load(home.server_public_key)
        private = (home.server_keys_dir / ServerKeyPair.MLKEM_FILE).exists()
        lines.append(f"server key id {pub.key_id.hex()} ({'private keys present' if private else 'public key only'})")
    else:
        lines.append("no server key (create one with `bwv keys server`)")
    reg = DeviceRegistry(home.registry_dir)
    devices = reg.devices()
    lines.append(f"{len(devices)} enrolled device(s)" + (": " + ", ".join(devices) if devices else ""))
    return "\n".join(lines)


__all__ = ["create_server_keys", "ensure_server_keys", "enrol_device", "device_storage", "load_device", "show_keys"]
