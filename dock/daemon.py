"""The dock daemon: every bay served at once, each in its own thread.

A `MountWatcher` reports cameras arriving and leaving; each bay's worker
waits for its camera, runs a session (dock/bay.py), and then waits for the
camera to leave.  A session that fails (camera not answering yet, cable
pulled, server unreachable past what the bay itself waits out) is tried
again with exponential backoff for as long as the camera stays.  Nothing
here touches a camera's files: only the camera frees segments, against
receipts.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterable

from .backoff import Backoff
from .bay import Bay, SessionReport
from .config import BayConfig
from .errors import CameraGone, DockError, Stopped
from .events import log_event
from .progress import TerminalDisplay
from .state import EMPTY, PRESENT, StateStore
from .upload import Uploader
from .watch import MountWatcher

log = logging.getLogger("bwv.dock")

# A camera that does not answer yet (still booting its link) is asked again soon; a server
# outage is waited out inside the session with the (longer) upload backoff.
SESSION_BACKOFF = Backoff(initial_s=2.0, factor=2.0, maximum_s=60.0)


class DockDaemon:
    def __init__(
        self,
        bays: Iterable[BayConfig],
        uploader: Uploader,
        *,
        state_dir: Path,
        dock_id: str = "dock",
        display: TerminalDisplay | None = None,
        upload_backoff: Backoff = Backoff(),
        session_backoff: Backoff = SESSION_BACKOFF,
        poll_s: float = 5.0,
        **bay_options,
    ):
        self.stop_event = threading.Event()
        self.store = StateStore(state_dir)
        self.session_backoff = session_backoff
        self.bays: dict[str, Bay] = {}
        for index, cfg in enumerate(bays):
            # Several servers (dock/failover.py): each bay gets its own view, its home node i mod n.
            bay_uploader = uploader.for_bay(index, cfg.name) if hasattr(uploader, "for_bay") else uploader
            self.bays[cfg.name] = Bay(cfg, bay_uploader, dock_id=dock_id, store=self.store, display=display,
                                      backoff=upload_backoff, stop=self.stop_event, **bay_options)
        self.reports: dict[str, list[SessionReport]] = {name: [] for name in self.bays}
        self.errors: dict[str, list[str]] = {name: [] for name in self.bays}
        self._present = {name: threading.Event() for name in self.bays}
        self._done = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.watcher = MountWatcher({name: bay.config.mount for name, bay in self.bays.items()}, self._on_change,
                                    poll_s=poll_s)

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> "DockDaemon":
        for bay in self.bays.values():
            bay.set_state(EMPTY)
        for name in self.bays:
            t = threading.Thread(target=self._work, args=(name,), name=f"bay-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.watcher.start()
        log_event("dock_started", bays=",".join(self.bays))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Abandon work in progress (the camera keeps its files) and end every thread."""
        self.stop_event.set()
        self.watcher.stop()
        for t in self._threads:
            t.join(timeout)
        for bay in self.bays.values():
            bay.close()
        with self._done:
            self._done.notify_all()
        log_event("dock_stopped")

    def __enter__(self) -> "DockDaemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for_sessions(self, counts: dict[str, int], timeout: float) -> bool:
        """Block until each named bay has finished at least that many sessions (for `--once` and tests)."""
        with self._done:
            return self._done.wait_for(
                lambda: self.stop_event.is_set() or all(len(self.reports[b]) >= n for b, n in counts.items()),
                timeout=timeout) and not self.stop_event.is_set()

    def present_bays(self) -> list[str]:
        return [name for name, ev in self._present.items() if ev.is_set()]

    # -- events ------------------------------------------------------------------------
    def _on_change(self, bay: str, present: bool) -> None:
        if present:
            self._present[bay].set()
        else:
            self._present[bay].clear()
        log_event("bay_camera_present" if present else "bay_camera_gone", bay=bay)

    # -- one bay -----------------------------------------------------------------------
    def _work(self, name: str) -> None:
        bay = self.bays[name]
        present = self._present[name]
        failures = 0
        while not self.stop_event.is_set():
            if not present.is_set():
                if bay.status.state != EMPTY:
                    bay.set_state(EMPTY, device_id=None, current=None)
                failures = 0
                present.wait(0.5)
                continue
            if failures == 0:
                bay.set_state(PRESENT, f"storage at {bay.config.mount}; serial handshake on {bay.config.serial}")
            try:
                report = bay.run_session()
            except Stopped:
                break
            except CameraGone:
                self.watcher.refresh(name)  # notice at once, not at the next poll
                if present.is_set():
                    self._sleep_while_present(name, 1.0)
                continue
            except Exception as e:  # noqa: BLE001 - a bay's failure must not take the others down
                if not isinstance(e, DockError):
                    log.exception("bay %s: unexpected failure", name)
                self.errors[name].append(f"{type(e).__name__}: {e}")
                delay = self.session_backoff.delay(failures)
                failures += 1
                log_event("session_retry", level=logging.WARNING, bay=name, attempt=failures, delay_s=round(delay, 2),
                          error=f"{type(e).__name__}: {e}")
                self._sleep_while_present(name, delay)
                continue
            failures = 0
            with self._done:
                self.reports[name].append(report)
                self._done.notify_all()
            self._wait_until_gone(name)

    def _sleep_while_present(self, name: str, seconds: float) -> None:
        remaining = seconds
        while remaining > 0 and self._present[name].is_set() and not self.stop_event.is_set():
            self.stop_event.wait(min(0.25, remaining))
            remaining -= 0.25

    def _wait_until_gone(self, name: str) -> None:
        while self._present[name].is_set() and not self.stop_event.is_set():
            self.stop_event.wait(0.25)


__all__ = ["DockDaemon", "SESSION_BACKOFF"]
