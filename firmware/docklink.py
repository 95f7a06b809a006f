"""The camera's end of the dock link: answer the dock, take its clock, free only what the server holds.

While the camera is in the dock (DOCKED mode) a `DockLink` serves the
dock's requests over a serial port (the USB gadget port on a Pi, a pty in
emulation), in its own thread, until the dock says BYE or the link is
closed.  The protocol is dock/protocol.py, shared with the dock.

The rule that matters: a segment is deleted only against a receipt that
verifies with the server key this camera was enrolled with and names this
very file (device, sequence number, segment hash, all read from the file's
own signed header and trailer, never from the dock's words).  The dock only
relays receipts; a stolen, buggy or hostile dock cannot wipe evidence.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..dock.channel import FrameChannel
from ..dock.errors import LinkClosed, LinkError, LinkTimeout, ProtocolError
from ..dock.ports import Port
from ..dock.protocol import (
    ERR_INTERNAL,
    ERR_UNEXPECTED,
    FREE_BAD_NAME,
    FREE_CHANGED,
    FREE_IO_ERROR,
    FREE_NO_RECEIPT,
    FREE_NOT_FOUND,
    FREE_RECEIPT_INVALID,
    FREE_UNREADABLE,
    FREED_OK,
    PAGE_MAX,
    VERSION,
    CameraHello,
    Frame,
    Message,
    MessageType,
    SegmentEntry,
    is_segment_name,
)
from ..sealed.durable import atomic_write, fsync_dir
from ..sealed.errors import SegmentError
from ..sealed.keys import ServerPublicKey
from ..sealed.reader import read_summary
from ..sealed.receipt import ReceiptVerifier
from ..sealed.storage import DeviceStorage, file_chain_head
from . import space
from .camera import load_clock_state
from .clipwriter import ClockState
from .state import Mode

log = logging.getLogger("bwv.camera.dock")
STEALTH_CHANGES_MAX = 100  # the protocol's bound (dock/protocol.py)

POLL_S = 0.1  # how soon close() is noticed


def utc_now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class CameraStatus:
    """What the firmware reports about itself in HELLO besides storage (which the link measures)."""

    firmware: str
    battery_pct: int | None = None  # None: this hardware has no fuel gauge
    battery_minutes_left: int | None = None  # at the present drain; None while charging or unknown
    battery_charging: bool | None = None
    # Stealth changes since the camera last left a dock: {"utc_us", "on", "cause"}; the dock logs them.
    stealth_changes: tuple[dict, ...] = ()


@dataclass(frozen=True)
class FreeOutcome:
    freed: bool
    code: str
    reason: str


def free_with_receipt(
    directory: Path,
    name: str,
    receipt: Any,
    *,
    device_id: str,
    device_public_key,
    verifier: ReceiptVerifier,
) -> FreeOutcome:
    """Delete `directory/name` if and only if `receipt` is the server's receipt for exactly that file.

    Checked in order, each failure leaving the file untouched: the name is a
    plain segment file name (no `..`, no `/`, no symlink); a receipt is
    there; the file's own preamble and trailer verify with this device's key
    and give its sequence number and segment hash; the receipt verifies with
    the enrolled server key and names this device, sequence and hash, and the
    file's size; the file did not change meanwhile.  Then unlink and fsync the
    directory, so a freed segment stays freed across a power cut.
    """
    if not is_segment_name(name) or os.sep in name:
        return FreeOutcome(False, FREE_BAD_NAME, f"{name!r} is not a plain segment file name of this camera")
    if receipt is None:
        return FreeOutcome(False, FREE_NO_RECEIPT, "no receipt: a segment is freed only against the server's receipt")
    path = Path(directory) / name
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return FreeOutcome(False, FREE_NOT_FOUND, f"{name}: no such segment (already freed?)")
    except OSError as e:
        return FreeOutcome(False, FREE_IO_ERROR, f"{name}: {e.strerror}")
    if not stat.S_ISREG(before.st_mode):
        return FreeOutcome(False, FREE_BAD_NAME, f"{name}: not a regular file")
    try:
        head = file_chain_head(path, device_id, device_public_key)
    except (SegmentError, OSError) as e:
        return FreeOutcome(False, FREE_UNREADABLE, f"{name}: its header cannot be trusted: {e}")
    try:
        checked = verifier.check_for(receipt, device_id=device_id, sequence=head.sequence,
                                     segment_hash=head.segment_hash)
    except SegmentError as e:  # ReceiptInvalid
        return FreeOutcome(False, FREE_RECEIPT_INVALID, f"{name}: {e}")
    except (TypeError, ValueError) as e:
        return FreeOutcome(False, FREE_RECEIPT_INVALID, f"{name}: receipt is malformed: {e}")
    if checked.size != before.st_size:
        return FreeOutcome(False, FREE_RECEIPT_INVALID,
                           f"{name}: receipt is for {checked.size} bytes, the file holds {before.st_size}")
    try:
        after = os.lstat(path)
        if (after.st_ino, after.st_size, after.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            return FreeOutcome(False, FREE_CHANGED, f"{name}: changed while its receipt was checked")
        os.unlink(path)
        fsync_dir(Path(directory))
    except OSError as e:
        return FreeOutcome(False, FREE_IO_ERROR, f"{name}: cannot delete: {e.strerror}")
    return FreeOutcome(True, FREED_OK, f"{name}: server receipt {checked.server_key_id[:8]} verified; freed")


def describe_segment(path: Path, device_id: str, device_public_key) -> SegmentEntry:
    """A sealed file as the camera lists it; SegmentError if its header or trailer cannot be trusted."""
    head = file_chain_head(path, device_id, device_public_key)
    preamble, _trailer = read_summary(path)
    return SegmentEntry(name=path.name, size=path.stat().st_size, sequence=head.sequence,
                        segment_hash=head.segment_hash.hex(), clip_id=str(preamble.clip_id),
                        segment_index=preamble.segment_index)


def write_clock_state(path: Path, *, sync_utc_us: int, offset_us: int, rtt_us: int = 0) -> ClockState:
    """Record the dock's clock setting durably where `load_clock_state` reads it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"sync_utc_us": sync_utc_us, "offset_us": offset_us, "rtt_us": rtt_us, "set_by": "dock"}
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
    return ClockState(sync_utc_us, offset_us)


class DockLink:
    """Serve one dock session over `port`: HELLO, clock, LIST, FREE, until BYE or `close()`.

    `clock` is the camera's idea of UTC in microseconds (injected so tests
    can make it wrong on purpose).  `apply_clock(offset_us)` would step the
    system clock on a Pi; left None, the link only records the offset, which
    is what emulation does and what every segment's preamble carries.
    """

    def __init__(
        self,
        port: Port,
        storage: DeviceStorage,
        server_pub: ServerPublicKey,
        device_id: str,
        clock_state_path: Path,
        status_provider: Callable[[], CameraStatus],
        *,
        clock: Callable[[], int] = utc_now_us,
        on_clock_set: Callable[[ClockState], None] | None = None,
        apply_clock: Callable[[int], None] | None = None,
    ):
        if storage.device.device_id != device_id:
            raise ValueError(f"storage belongs to {storage.device.device_id!r}, not {device_id!r}")
        self.storage = storage
        self.device_id = device_id
        self.clock_state_path = Path(clock_state_path)
        self.status_provider = status_provider
        self.clock = clock
        self.on_clock_set = on_clock_set
        self.apply_clock = apply_clock
        self.verifier = ReceiptVerifier(server_pub.receipt_verifier(), server_pub.key_id)
        self.channel = FrameChannel(port, name=f"camera {device_id}", on_rejected=self._on_rejected)
        self.clock_state = load_clock_state(self.clock_state_path)
        self.freed: list[str] = []
        self.greeted = False
        self.ended: str | None = None  # why serve() returned: "bye", "closed", "port lost"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handlers: dict[MessageType, Callable[[Message], None]] = {
            MessageType.HELLO: self._hello,
            MessageType.CLOCK_PROBE: self._clock_probe,
            MessageType.CLOCK_SET: self._clock_set,
            MessageType.LIST: self._list,
            MessageType.FREE: self._free,
        }

    # -- running ---------------------------------------------------------------
    def start(self) -> "DockLink":
        self._thread = threading.Thread(target=self.serve, name=f"docklink-{self.device_id}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (returns at once; `join` waits).  The port is the caller's to close."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def serve(self) -> str:
        """Answer requests until BYE, `close()` or the port going away; returns which."""
        reason = "closed"
        try:
            while not self._stop.is_set():
                try:
                    msg = self.channel.receive(POLL_S)
                except LinkTimeout:
                    continue
                if msg.type is MessageType.BYE:
                    reason = "bye"
                    break
                self._dispatch(msg)
        except LinkError as e:
            log.warning("dock link: %s", e)
            reason = "port lost"
        self.ended = reason
        log.info("dock link ended (%s); freed %d segment(s)", reason, len(self.freed))
        return reason

    def _dispatch(self, msg: Message) -> None:
        if msg.type is MessageType.ERROR:
            log.warning("dock reported %s: %s", msg["code"], msg["message"])
            return
        handler = self._handlers.get(msg.type)
        if handler is None:
            self._error(msg, ERR_UNEXPECTED, f"{msg.type.name} is not a request a camera answers")
            return
        if not self.greeted and msg.type is not MessageType.HELLO:
            self._error(msg, ERR_UNEXPECTED, f"{msg.type.name} before HELLO: greet the camera first")
            return
        try:
            handler(msg)
        except LinkError:
            raise
        except Exception as e:  # noqa: BLE001 - one bad request must not end the session
            log.exception("dock link: %s #%d failed", msg.type.name, msg.seq)
            self._error(msg, ERR_INTERNAL, f"{type(e).__name__}: {e}")

    def _error(self, msg: Message | Frame | None, code: str, text: str) -> None:
        self.channel.send(MessageType.ERROR, {"code": code, "message": text[:1000],
                                              "reply_to": msg.seq if msg is not None and msg.seq else None})

    def _on_rejected(self, error: ProtocolError, frame: Frame | None) -> None:
        code = getattr(error, "code", "bad_frame")
        try:
            self._error(frame, code if isinstance(code, str) else "bad_frame", str(error))
        except LinkClosed:
            pass

    # -- requests ----------------------------------------------------------------
    def _hello(self, msg: Message) -> None:
        self.greeted = True
        status = self.status_provider()
        reading = space.measure(self.storage.directory)
        hello = CameraHello(
            device_id=self.device_id, firmware=status.firmware, battery_pct=status.battery_pct,
            battery_minutes_left=status.battery_minutes_left, battery_charging=status.battery_charging,
            stealth_changes=list(status.stealth_changes)[-STEALTH_CHANGES_MAX:],
            storage_free_bytes=reading.free_bytes, storage_used_bytes=reading.used_bytes,
            segments=len(self.storage.sealed_paths()), clock_utc_us=self.clock(),
            clock_sync_utc_us=self.clock_state.sync_utc_us, clock_offset_us=self.clock_state.offset_us,
            protocol=VERSION,
        )
        log.info("docked: dock %s says hello", msg["dock_id"])
        self.channel.reply(msg, MessageType.HELLO, hello.to_fields())

    def _clock_probe(self, msg: Message) -> None:
        self.channel.reply(msg, MessageType.CLOCK_REPLY,
                           {"dock_utc_us": msg["dock_utc_us"], "camera_utc_us": self.clock()})

    def _clock_set(self, msg: Message) -> None:
        offset, sync = msg["offset_us"], msg["sync_utc_us"]
        if self.apply_clock is not None:
            self.apply_clock(offset)
        self.clock_state = write_clock_state(self.clock_state_path, sync_utc_us=sync, offset_us=offset,
                                             rtt_us=msg["rtt_us"])
        log.info("clock set by the dock: offset %+d us (round trip %d us)", offset, msg["rtt_us"])
        if self.on_clock_set is not None:
            self.on_clock_set(self.clock_state)
        self.channel.reply(msg, MessageType.CLOCK_ACK, {"offset_us": offset, "sync_utc_us": sync})

    def _list(self, msg: Message) -> None:
        after, limit = msg["after"], msg.get("limit", PAGE_MAX)
        pub = self.storage.device.public_key()
        entries: list[SegmentEntry] = []
        damaged = 0
        more = False
        for path in self.storage.sealed_paths():  # sorted by name, which sorts by sequence
            if path.name <= after:
                continue
            if len(entries) == limit:
                more = True
                break
            try:
                entries.append(describe_segment(path, self.device_id, pub))
            except (SegmentError, OSError) as e:
                damaged += 1
                log.warning("not listing %s: %s", path.name, e)
        self.channel.reply(msg, MessageType.SEGMENTS,
                           {"segments": [e.to_fields() for e in entries], "more": more, "damaged": damaged})

    def _free(self, msg: Message) -> None:
        name = msg["name"]
        outcome = free_with_receipt(self.storage.directory, name, msg["receipt"], device_id=self.device_id,
                                    device_public_key=self.storage.device.public_key(), verifier=self.verifier)
        if outcome.freed:
            self.freed.append(name)
            log.info("%s", outcome.reason)
        else:
            log.warning("not freed: %s", outcome.reason)
        self.channel.reply(msg, MessageType.FREED,
                           {"name": name, "freed": outcome.freed, "code": outcome.code, "reason": outcome.reason})


class DockPortService:
    """Serve the dock link on `port_path` whenever the camera is in the dock.

    The firmware calls `mode_changed` on every change of mode; entering
    DOCKED opens the port and serves sessions (a new one after each BYE, so a
    dock that restarts finds the camera still listening); leaving DOCKED ends
    the session and closes the port.  Both return at once: they are called
    from the camera's input callbacks, under its lock.
    """

    def __init__(self, port_path: str, make_link: Callable[[Port], DockLink], *,
                 open_port: Callable[[str], Port] | None = None, retry_s: float = 1.0):
        self.port_path = port_path
        self.make_link = make_link
        self.open_port = open_port or _open_serial
        self.retry_s = retry_s
        self.sessions: list[DockLink] = []
        self._lock = threading.Lock()
        self._docked = threading.Event()
        self._thread: threading.Thread | None = None
        self._link: DockLink | None = None

    def mode_changed(self, mode: Mode) -> None:
        self.set_docked(mode is Mode.DOCKED)

    def set_docked(self, docked: bool) -> None:
        with self._lock:
            if docked:
                self._docked.set()
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="dock-port", daemon=True)
                    self._thread.start()
            else:
                self._docked.clear()
                if self._link is not None:
                    self._link.close()

    def close(self, timeout: float = 5.0) -> None:
        self.set_docked(False)
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while self._docked.is_set():
            try:
                port = self.open_port(self.port_path)
            except Exception as e:  # noqa: BLE001 - the port may not exist yet; try again while docked
                log.warning("dock port %s: %s; retrying", self.port_path, e)
                time.sleep(self.retry_s)
                continue
            reason = "port lost"
            try:
                link = self.make_link(port)
                with self._lock:
                    self._link = link
                    if not self._docked.is_set():
                        link.close()
                self.sessions.append(link)
                reason = link.serve()
            except Exception:  # noqa: BLE001 - a broken session must not end the service while docked
                log.exception("dock link on %s failed", self.port_path)
            finally:
                with self._lock:
                    self._link = None
                try:
                    port.close()
                except Exception:  # noqa: BLE001
                    pass
            if reason == "port lost":
                time.sleep(self.retry_s)


def _open_serial(path: str) -> Port:
    import serial

    return serial.serial_for_url(path, baudrate=115200, timeout=0.1, write_timeout=5.0)


__all__ = ["CameraStatus", "DockLink", "DockPortService", "FreeOutcome", "describe_segment",
           "free_with_receipt", "utc_now_us", "write_clock_state"]
