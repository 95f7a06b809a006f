"""BWV_HOME: the one directory under which every `bwv` command keeps its state.

Chosen by `--home`, else the BWV_HOME environment variable, else the XDG data
directory (~/.local/share/openbwv).  Tests and the demo always name their own,
so nothing ever touches a real home by accident.

Layout (each program owns its part)::

    config.toml                 optional settings
    server/keys/                the evidence server's private keys and server.pub
    server/devices/<id>.json    the registry of enrolled cameras (public keys)
    devices/<id>/keys/          a camera's signing key and the server's public key
    devices/<id>/storage/       the camera's own segment storage
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV = "BWV_HOME"


def default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "openbwv"


def resolve_home(explicit: str | os.PathLike | None = None) -> "Home":
    if explicit:
        return Home(Path(explicit))
    env = os.environ.get(ENV)
    return Home(Path(env) if env else default_home())


@dataclass(frozen=True)
class Home:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def server_keys_dir(self) -> Path:
        return self.server_dir / "keys"

    @property
    def server_public_key(self) -> Path:
        return self.server_keys_dir / "server.pub"

    @property
    def registry_dir(self) -> Path:
        return self.server_dir / "devices"

    def device_dir(self, device_id: str) -> Path:
        return self.root / "devices" / device_id

    def device_key(self, device_id: str) -> Path:
        return self.device_dir(device_id) / "keys" / "device-ed25519.pem"

    def device_server_key(self, device_id: str) -> Path:
        return self.device_dir(device_id) / "keys" / "server.pub"

    def device_storage(self, device_id: str) -> Path:
        return self.device_dir(device_id) / "storage"

    def enrolled_devices(self) -> list[str]:
        base = self.root / "devices"
        return sorted(p.name for p in base.iterdir() if (p / "keys").is_dir()) if base.is_dir() else []
