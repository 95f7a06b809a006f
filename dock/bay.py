"""One docking bay: a serial port and a storage mount, and the session with the camera cradled in it.

A session is: HELLO (who is this camera), clock sync (the dock's NTP-kept
clock sets the camera's; the offset goes into the dock's record of the
camera and into the camera's clock.json), LIST (its sealed segments), then
for each segment: upload it from the mount through the `Uploader`, hand the
receipt to the camera with FREE and check FREED.  A final LIST decides
whether the camera is *clear* (holds no sealed segment).

The dock never writes to, renames or deletes anything on the camera's
storage: only the camera deletes, and only against a receipt it verifies
itself.  So whatever goes wrong here (server down, cable pulled, dock
crash) the footage stays on the camera.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .backoff import Backoff
from .channel import FrameChannel
from .clocksync import ClockSample, best_sample
from .config import BayConfig
from .errors import (
    BayError,
    CameraGone,
    DockError,
    MountMismatch,
    Stopped,
    UploadRejected,
    UploadUnavailable,
)
from .events import log_event
from .ports import PTY_PREFIX, Port, open_port
from .progress import ProgressSnapshot, TerminalDisplay, UploadProgress
from .protocol import FREE_NOT_FOUND, VERSION, CameraHello, MessageType, SegmentEntry, is_segment_name
from .state import (
    ATTENTION,
    CLEAR,
    CONNECTING,
    ERROR,
    FREEING,
    LISTING,
    SYNCING,
    UPLOADING,
    WAITING,
    BayStatus,
    StateStore,
    utc_iso,
)
from .upload import SourceUnreadable, Uploader

log = logging.getLogger("bwv.dock.bay")


def utc_now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class SessionReport:
    """What one session with a camera did."""

    bay: str
    device_id: str | None = None
    hello: CameraHello | None = None
    clock: ClockSample | None = None
    listed: list[SegmentEntry] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    freed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # segment -> why it was not freed
    upload_retries: int = 0
    remaining: list[SegmentEntry] = field(default_factory=list)

    @property
    def clear(self) -> bool:
        return self.device_id is not None and not self.remaining


class Bay:
    """A bay of the dock.  `run_session()` talks to the camera in it once, start to finish."""

    def __init__(
        self,
        config: BayConfig,
        uploader: Uploader,
        *,
        dock_id: str = "dock",
        store: StateStore | None = None,
        display: TerminalDisplay | None = None,
        backoff: Backoff = Backoff(),
        dock_clock: Callable[[], int] = utc_now_us,
        stop: threading.Event | None = None,
        probes: int = 5,
        reply_timeout: float = 3.0,
        attempts: int = 3,
        port_opener: Callable[[str], Port] = open_port,
    ):
        self.config = config
        self.name = config.name
        self.uploader = uploader
        self.dock_id = dock_id
        self.store = store
        self.display = display
        self.backoff = backoff
        self.dock_clock = dock_clock
        self.stop = stop or threading.Event()
        self.probes = probes
        self.reply_timeout = reply_timeout
        self.attempts = attempts
        self.port_opener = port_opener
        self.status = BayStatus(config.name)
        self._progress_written = 0.0
        # An emulated port is made once, so the path a camera opens stays the same for the daemon's life.
        self._persistent: Port | None = port_opener(config.serial) if config.serial.startswith(PTY_PREFIX) else None

    # -- status ----------------------------------------------------------------------
    def set_state(self, state: str, detail: str = "", **changes) -> None:
        self.status.state = state
        self.status.detail = detail
        if state not in (UPLOADING,):
            self.status.current = None
        for k, v in changes.items():
            setattr(self.status, k, v)
        if self.store is not None:
            self.store.write_bay(self.status)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped(f"bay {self.name}: stopping")

    def _on_progress(self, snap: ProgressSnapshot) -> None:
        self._check_stop()  # raised through the uploader: a stopping dock abandons the upload at once
        self.status.current = {"segment": snap.segment, "bytes": snap.done, "total": snap.total,
                               "rate_Bps": round(snap.rate_bps), "eta_s": snap.eta_s}
        if snap.server != self.status.server:  # failed over (or back): say so now, not a second later
            self.status.server = snap.server
            self._progress_written = 0.0
        now = time.monotonic()
        if self.store is not None and (now - self._progress_written >= 1.0 or snap.done >= snap.total):
            self._progress_written = now
            self.store.write_bay(self.status)

    # -- the session -------------------------------------------------------------------
    def _server(self) -> str | None:
        """host:port of the server the uploader uses now, when it is one of several (dock/failover.py)."""
        return getattr(self.uploader, "server_label", None)

    def camera_present(self) -> bool:
        return self.config.mount.is_dir()

    def run_session(self, port: Port | None = None) -> SessionReport:
        """Handshake, clock, list, upload, free, list again; the camera's files are never touched here.

        Raises a DockError (LinkError, ProtocolError, BayError, Stopped) when the
        session cannot go on; the caller retries while the camera is present.
        """
        report = SessionReport(self.name)
        owned = port is None and self._persistent is None
        try:
            self.set_state(CONNECTING, f"serial {self.config.serial}", device_id=None, last_error=None,
                           segments_listed=0, segments_uploaded=0, segments_freed=0, segments_left=None,
                           attempts=0, retry_at_utc=None)
            if port is None:
                port = self._persistent if self._persistent is not None else self.port_opener(self.config.serial)
            channel = FrameChannel(port, name=f"bay {self.name}")
            self._hello(channel, report)
            self._check_mount()
            self._sync_clock(channel, report)
            self._check_stop()
            self.set_state(LISTING)
            report.listed = self._list_all(channel)
            self._check_listing(report.listed, report.device_id or "")
            self.status.segments_listed = len(report.listed)
            log_event("segments_listed", bay=self.name, device=report.device_id, count=len(report.listed),
                      bytes=sum(e.size for e in report.listed))
            for entry in report.listed:
                receipt = self._upload(entry, report)
                if receipt is not None:
                    self._free(channel, entry, receipt, report)
            report.remaining = self._list_all(channel)
            self.status.segments_left = len(report.remaining)
            channel.send(MessageType.BYE, {"reason": "clear" if report.clear else "done"})
        except Stopped:
            raise
        except DockError as e:
            self.set_state(ERROR, str(e), last_error=str(e))
            log_event("session_failed", level=logging.WARNING, bay=self.name, device=report.device_id,
                      error=type(e).__name__, detail=str(e))
            raise
        finally:
            if owned and port is not None:
                try:
                    port.close()
                except Exception:  # noqa: BLE001 - a vanished USB device may fail to close
                    pass
        self._report_end(report)
        return report

    def close(self) -> None:
        if self._persistent is not None:
            self._persistent.close()
            self._persistent = None

    # -- steps -------------------------------------------------------------------------
    def _hello(self, channel: FrameChannel, report: SessionReport) -> None:
        reply = channel.request(MessageType.HELLO, {"role": "dock", "protocol": VERSION, "dock_id": self.dock_id},
                                MessageType.HELLO, timeout=self.reply_timeout, attempts=self.attempts)
        hello = CameraHello.from_message(reply)
        report.hello, report.device_id = hello, hello.device_id
        self.set_state(SYNCING, device_id=hello.device_id, firmware=hello.firmware, battery_pct=hello.battery_pct,
                       battery_minutes_left=hello.battery_minutes_left)
        log_event("camera_hello", bay=self.name, device=hello.device_id, firmware=hello.firmware,
                  battery_pct=hello.battery_pct, battery_minutes_left=hello.battery_minutes_left,
                  segments=hello.segments, storage_free=hello.storage_free_bytes,
                  storage_used=hello.storage_used_bytes)
        # Stealth is an administrator's decision the public cannot see: every change is in the dock's log too.
        for change in hello.stealth_changes or []:
            log_event("camera_stealth", bay=self.name, device=hello.device_id, on=change["on"],
                      cause=change["cause"], utc_us=change["utc_us"])
        if self.display is not None:
            batt = "?" if hello.battery_pct is None else f"{hello.battery_pct}%"
            self.display.message(None, f"{self.name:<8} {hello.device_id:<14} docked: {hello.segments} segment(s), "
                                       f"battery {batt}, firmware {hello.firmware}")

    def _sync_clock(self, channel: FrameChannel, report: SessionReport) -> None:
        samples = []
        for _ in range(self.probes):
            t0 = self.dock_clock()
            reply = channel.request(MessageType.CLOCK_PROBE, {"dock_utc_us": t0}, MessageType.CLOCK_REPLY,
                                    timeout=self.reply_timeout, attempts=self.attempts)
            t1 = self.dock_clock()
            samples.append(ClockSample(t0, reply["camera_utc_us"], t1))
        try:
            best = best_sample(samples)
        except ValueError as e:
            raise BayError(f"bay {self.name}: {e}") from None
        sync = self.dock_clock()
        channel.request(MessageType.CLOCK_SET, {"offset_us": best.offset_us, "sync_utc_us": sync,
                                                "rtt_us": best.rtt_us},
                        MessageType.CLOCK_ACK, timeout=self.reply_timeout, attempts=self.attempts)
        report.clock = best
        self.status.clock_offset_us, self.status.clock_rtt_us = best.offset_us, best.rtt_us
        if self.store is not None and report.device_id:
            self.store.record_device(report.device_id, last_bay=self.name, last_seen_utc=utc_iso(),
                                     clock_offset_us=best.offset_us, clock_rtt_us=best.rtt_us,
                                     clock_sync_utc_us=sync,
                                     firmware=report.hello.firmware if report.hello else None)
        log_event("clock_sync", bay=self.name, device=report.device_id, offset_us=best.offset_us,
                  rtt_us=best.rtt_us, error_bound_us=best.error_bound_us, probes=len(samples))

    def _list_all(self, channel: FrameChannel) -> list[SegmentEntry]:
        entries: list[SegmentEntry] = []
        after = ""
        while True:
            reply = channel.request(MessageType.LIST, {"after": after}, MessageType.SEGMENTS,
                                    timeout=self.reply_timeout, attempts=self.attempts)
            page = [SegmentEntry.from_fields(d) for d in reply["segments"]]
            if reply["damaged"]:
                log_event("segments_damaged", level=logging.WARNING, bay=self.name, count=reply["damaged"])
            if not page:
                return entries
            if page[0].name <= after:
                raise BayError(f"bay {self.name}: camera's listing went backwards ({page[0].name} after {after})")
            entries.extend(page)
            if not reply["more"]:
                return entries
            after = page[-1].name

    def _check_mount(self) -> None:
        if not self.camera_present():
            raise CameraGone(f"bay {self.name}: the camera's storage is not mounted at {self.config.mount}")

    def _check_listing(self, entries: list[SegmentEntry], device_id: str) -> None:
        """The mount must hold what the camera on this bay's port lists: else the bay is mis-wired."""
        for e in entries:
            if not is_segment_name(e.name):  # the schema checks this too; a camera is not trusted with paths
                raise BayError(f"bay {self.name}: camera listed a non-plain name {e.name!r}")
            path = self.config.mount / e.name
            try:
                size = path.stat().st_size
            except OSError:
                raise MountMismatch(f"bay {self.name}: camera {device_id} lists {e.name}, which is not in "
                                    f"{self.config.mount} (storage and serial port of different bays?)") from None
            if size != e.size:
                raise MountMismatch(f"bay {self.name}: {e.name} is {e.size} bytes on camera {device_id} "
                                    f"but {size} in {self.config.mount}")

    def _upload(self, entry: SegmentEntry, report: SessionReport) -> dict | None:
        """The receipt document for `entry`, retrying with backoff while the server is unavailable.

        None if the server refused the segment: it stays on the camera and is reported.
        """
        path = self.config.mount / entry.name
        device_id = report.device_id or ""
        attempt = 0
        while True:
            self._check_stop()
            self._check_mount()
            progress = UploadProgress(self.name, device_id, entry.name, entry.size, display=self.display,
                                      on_snapshot=self._on_progress, server=self._server)
            self.set_state(UPLOADING, entry.name, attempts=attempt, retry_at_utc=None)
            try:
                raw = self.uploader.upload(path, device_id, entry.sequence, entry.segment_hash, progress)
            except UploadUnavailable as e:
                delay = self.backoff.delay(attempt)
                attempt += 1
                report.upload_retries += 1
                self.set_state(WAITING, entry.name, attempts=attempt, last_error=str(e),
                               retry_at_utc=utc_iso(time.time() + delay), server=self._server())
                log_event("upload_retry", level=logging.WARNING, bay=self.name, device=device_id,
                          segment=entry.name, attempt=attempt, delay_s=round(delay, 2), error=str(e))
                self._wait(delay)
                continue
            except UploadRejected as e:
                report.refused[entry.name] = f"server refused: {e}"
                log_event("upload_rejected", level=logging.ERROR, bay=self.name, device=device_id,
                          segment=entry.name, error=str(e))
                return None
            except SourceUnreadable as e:
                self._check_mount()
                raise BayError(f"bay {self.name}: {e}") from None
            progress.finish()
            report.uploaded.append(entry.name)
            self.status.segments_uploaded += 1
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                report.refused[entry.name] = f"server's receipt is not a JSON object: {e}"
                log_event("receipt_unreadable", level=logging.ERROR, bay=self.name, segment=entry.name, error=str(e))
                return None
            return doc

    def _free(self, channel: FrameChannel, entry: SegmentEntry, receipt: dict, report: SessionReport) -> None:
        self.set_state(FREEING, entry.name)
        reply = channel.request(MessageType.FREE, {"name": entry.name, "receipt": receipt}, MessageType.FREED,
                                timeout=self.reply_timeout, attempts=self.attempts)
        if reply["name"] != entry.name:
            raise BayError(f"bay {self.name}: FREED names {reply['name']!r}, asked to free {entry.name!r}")
        if reply["freed"] or reply["code"] == FREE_NOT_FOUND:
            # not_found: an earlier FREE whose answer was lost already freed it; the final LIST confirms.
            report.freed.append(entry.name)
            self.status.segments_freed += 1
            log_event("segment_freed", bay=self.name, device=report.device_id, segment=entry.name,
                      code=reply["code"])
        else:
            report.refused[entry.name] = f"camera kept it: {reply['reason']}"
            log_event("segment_not_freed", level=logging.ERROR, bay=self.name, device=report.device_id,
                      segment=entry.name, code=reply["code"], reason=reply["reason"])

    def _wait(self, seconds: float) -> None:
        """Sleep for a retry, waking early to stop, or when the camera leaves."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, 0.5))
            self._check_stop()
            self._check_mount()

    def _report_end(self, report: SessionReport) -> None:
        dev = report.device_id
        if report.clear:
            self.set_state(CLEAR, f"{len(report.freed)} segment(s) uploaded and freed")
            log_event("camera_clear", bay=self.name, device=dev, uploaded=len(report.uploaded),
                      freed=len(report.freed), retries=report.upload_retries)
            text = f"{self.name:<8} {dev:<14} CLEAR: {len(report.freed)} segment(s) uploaded and freed"
        else:
            why = "; ".join(f"{k}: {v}" for k, v in report.refused.items()) or "segments remain on the camera"
            self.set_state(ATTENTION, why, last_error=why)
            log_event("camera_not_clear", level=logging.WARNING, bay=self.name, device=dev,
                      remaining=len(report.remaining), refused=len(report.refused))
            text = f"{self.name:<8} {dev:<14} NOT CLEAR: {len(report.remaining)} segment(s) remain ({why})"
        if self.display is not None:
            self.display.message(None, text)


__all__ = ["Bay", "SessionReport"]
