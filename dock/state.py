"""What each bay is doing, kept in a small JSON file per bay for `bwv dock status`.

The daemon writes `STATE_DIR/bays/<bay>.json` atomically whenever a bay
changes state (progress at most a few times a second), so the status
command, a monitoring script or an officer's glance at the rack can read it
without talking to the daemon.  The dock's record of each camera (last
seen, clock offset it measured and set) is kept beside it in
`STATE_DIR/devices/<id>.json`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..sealed.durable import atomic_write

# Bay states, in the order a session goes through them.
EMPTY = "empty"  # no camera's storage in the bay
PRESENT = "present"  # storage seen, serial handshake not done yet
CONNECTING = "connecting"
SYNCING = "syncing_clock"
LISTING = "listing"
UPLOADING = "uploading"
WAITING = "waiting_for_server"  # upload failed; retrying with backoff, camera untouched
FREEING = "freeing"
CLEAR = "clear"  # the camera holds no sealed segment
ATTENTION = "needs_attention"  # done, but some segment was refused or not freed
ERROR = "error"  # the session failed; retried while the camera is present
STATES = (EMPTY, PRESENT, CONNECTING, SYNCING, LISTING, UPLOADING, WAITING, FREEING, CLEAR, ATTENTION, ERROR)


def utc_iso(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).isoformat(timespec="seconds")


@dataclass
class BayStatus:
    bay: str
    state: str = EMPTY
    detail: str = ""
    device_id: str | None = None
    firmware: str | None = None
    battery_pct: int | None = None
    battery_minutes_left: int | None = None
    segments_listed: int = 0
    segments_uploaded: int = 0
    segments_freed: int = 0
    segments_left: int | None = None
    current: dict[str, Any] | None = None  # the upload in progress: segment, bytes, total, rate_Bps, eta_s
    server: str | None = None  # host:port of the evidence server of the current (or last) upload
    clock_offset_us: int | None = None
    clock_rtt_us: int | None = None
    retry_at_utc: str | None = None
    attempts: int = 0
    last_error: str | None = None
    updated_utc: str = field(default_factory=utc_iso)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "BayStatus":
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class StateStore:
    """Bay status files and the dock's device records under one directory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.bays_dir = self.directory / "bays"
        self.devices_dir = self.directory / "devices"
        self._lock = threading.Lock()

    def write_bay(self, status: BayStatus) -> None:
        status.updated_utc = utc_iso()
        data = (json.dumps(asdict(status), indent=2) + "\n").encode()
        with self._lock:
            self.bays_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.bays_dir / f"{status.bay}.json", data)

    def read_bays(self) -> list[BayStatus]:
        if not self.bays_dir.is_dir():
            return []
        out = []
        for path in sorted(self.bays_dir.glob("*.json")):
            try:
                out.append(BayStatus.from_dict(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as e:
                out.append(BayStatus(bay=path.stem, state=ERROR, detail=f"status file unreadable: {e}"))
        return out

    def record_device(self, device_id: str, **fields: Any) -> None:
        """Merge `fields` into the dock's record of a camera."""
        path = self.devices_dir / f"{device_id}.json"
        with self._lock:
            self.devices_dir.mkdir(parents=True, exist_ok=True)
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                doc = {"device_id": device_id}
            doc.update(fields, updated_utc=utc_iso())
            atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())

    def device(self, device_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.devices_dir / f"{device_id}.json").read_text())
        except (OSError, ValueError):
            return None


def format_status(bays: list[BayStatus]) -> str:
    """The table `bwv dock status` prints."""
    if not bays:
        return "no bays have reported yet (is `bwv dock` running with this state directory?)"
    head = f"{'BAY':<10} {'STATE':<19} {'CAMERA':<14} {'BATT':>9} {'SEGMENTS':>9}  {'CLOCK':>9}  {'UPDATED':<20} DETAIL"
    lines = [head]
    for b in bays:
        batt = "-" if b.battery_pct is None else f"{b.battery_pct}%"
        if b.battery_minutes_left is not None:
            hours, minutes = divmod(b.battery_minutes_left, 60)
            batt += f" {hours}h{minutes:02d}" if hours else f" {minutes}m"
        segs = f"{b.segments_freed}/{b.segments_listed}" if b.segments_listed else "-"
        clock = "-" if b.clock_offset_us is None else f"{b.clock_offset_us / 1e6:+.3f}s"
        detail = b.detail
        if b.current:
            c = b.current
            eta = c.get("eta_s")
            detail = (f"{c.get('segment')} {c.get('bytes', 0) / 1e6:.1f}/{c.get('total', 0) / 1e6:.1f} MB "
                      f"{(c.get('rate_Bps') or 0) / 1e6:.1f} MB/s ETA {'-' if eta is None else f'{eta:.0f}s'}"
                      + (f" to {b.server}" if b.server else ""))
        if b.state == WAITING and b.retry_at_utc:
            detail = f"retry {b.attempts} at {b.retry_at_utc}: {b.last_error or ''}"
        elif b.state in (ERROR, ATTENTION) and b.last_error:
            detail = b.last_error
        lines.append(f"{b.bay:<10} {b.state:<19} {b.device_id or '-':<14} {batt:>9} {segs:>9}  {clock:>9}  "
                     f"{b.updated_utc:<20} {detail}")
    return "\n".join(lines)


__all__ = ["BayStatus", "StateStore", "format_status", "STATES"]
