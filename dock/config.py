"""The bays file: which serial port and which storage mount make up each bay.

    [dock]
    id = "dock-station-3"            # optional; default: the host name
    bays_root = "/media/bwv"         # optional; a bay's mount defaults to bays_root/<name>
    servers = ["https://ingest-1.example", "https://ingest-2.example"]   # optional; --server overrides

    [[bay]]
    name = "bay-1"
    serial = "/dev/bwv-bay-1"        # the udev rule in hw/udev names cradled cameras' ports
    mount = "/media/bwv/bay-1"       # where the camera's storage appears

In emulation `serial = "pty:PATH"` makes a pty pair and links the camera's
end at PATH (for `bwv camera --dock-port PATH`), and `mount` is a directory
that appears when a camera is "cradled".  Relative paths are relative to the
file.  `servers` lists the evidence servers (ingest nodes) the bays spread
over, bay i to server i mod n, failing over to the others (dock/failover.py).
Every key is checked: a mistyped key would otherwise leave a bay
silently unwatched.
"""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DockConfigError
from .ports import PTY_PREFIX
from .servers import check_server_url

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}\Z")


@dataclass(frozen=True)
class BayConfig:
    name: str
    serial: str  # device path, pyserial URL, or "pty:PATH"
    mount: Path


@dataclass(frozen=True)
class DockConfig:
    dock_id: str
    bays: tuple[BayConfig, ...]
    servers: tuple[str, ...] = ()  # evidence server URLs from the file; empty: --server must say


def parse_config(doc: dict[str, Any], *, base: Path, where: str = "bays file") -> DockConfig:
    unknown = set(doc) - {"dock", "bay"}
    if unknown:
        raise DockConfigError(f"{where}: unknown table(s) {sorted(unknown)}; expected [dock] and [[bay]]")
    dock = doc.get("dock", {})
    if not isinstance(dock, dict) or set(dock) - {"id", "bays_root", "servers"}:
        raise DockConfigError(f"{where}: [dock] takes only 'id', 'bays_root' and 'servers'")
    servers = dock.get("servers", [])
    if not isinstance(servers, list) or not all(isinstance(u, str) for u in servers):
        raise DockConfigError(f"{where}: [dock] servers must be a list of URLs, e.g. servers = [\"https://a\"]")
    try:
        servers = [check_server_url(u) for u in servers]
    except ValueError as e:
        raise DockConfigError(f"{where}: [dock] servers: {e}") from None
    if len(set(servers)) != len(servers):
        raise DockConfigError(f"{where}: [dock] servers lists a URL twice")
    root = dock.get("bays_root")
    if root is not None and (not isinstance(root, str) or not root):
        raise DockConfigError(f"{where}: [dock] bays_root must be a path")
    bays_root = _resolve(base, root) if root else None
    dock_id = dock.get("id") or socket.gethostname() or "dock"
    if not isinstance(dock_id, str) or not NAME_RE.match(dock_id[:32]):
        raise DockConfigError(f"{where}: [dock] id {dock_id!r} must be letters, digits, '.', '_' or '-'")
    bays_doc = doc.get("bay", [])
    if not isinstance(bays_doc, list) or not bays_doc:
        raise DockConfigError(f"{where}: no [[bay]] tables: a dock needs at least one bay")
    bays: list[BayConfig] = []
    for i, b in enumerate(bays_doc):
        at = f"{where}: bay {i + 1}"
        if not isinstance(b, dict):
            raise DockConfigError(f"{at}: must be a table")
        unknown = set(b) - {"name", "serial", "mount"}
        missing = {"name", "serial"} - set(b)
        if "mount" not in b and bays_root is None:
            missing.add("mount")
        if unknown or missing:
            raise DockConfigError(f"{at}: keys are name, serial, mount (optional with [dock] bays_root)"
                                  + (f"; unknown {sorted(unknown)}" if unknown else "")
                                  + (f"; missing {sorted(missing)}" if missing else ""))
        name, serial = b["name"], b["serial"]
        mount = b.get("mount") or (str(bays_root / name) if bays_root is not None and isinstance(name, str) else "")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise DockConfigError(f"{at}: name {name!r} must be 1-32 letters, digits, '.', '_' or '-'")
        if not isinstance(serial, str) or not serial:
            raise DockConfigError(f"{at} ({name}): serial must be a device path, a pyserial URL or pty:PATH")
        if not isinstance(mount, str) or not mount:
            raise DockConfigError(f"{at} ({name}): mount must be a path")
        if serial.startswith(PTY_PREFIX):
            serial = PTY_PREFIX + str(_resolve(base, serial[len(PTY_PREFIX):]))
        bays.append(BayConfig(name, serial, _resolve(base, mount)))
    for attr in ("name", "serial", "mount"):
        values = [getattr(b, attr) for b in bays]
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise DockConfigError(f"{where}: two bays share the {attr} {', '.join(dupes)}")
    return DockConfig(dock_id, tuple(bays), tuple(servers))


def load_config(path: Path) -> DockConfig:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DockConfigError(f"bays file {path} not found (see `bwv dock --help` for its form)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DockConfigError(f"cannot read bays file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise DockConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(doc, base=path.parent, where=str(path))


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base / p).absolute()


__all__ = ["BayConfig", "DockConfig", "load_config", "parse_config"]
