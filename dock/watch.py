"""Noticing cameras arrive and leave: a bay's storage mount appearing or vanishing.

watchdog's `Observer` watches the directories that hold the bays' mount
points (not recursively: the footage inside is not our business here).
When a mount point appears (a USB mass-storage mount on the Pi; in
emulation a directory or a symlink to a camera's storage made under the
bays root) the bay is reported present, and the daemon starts a session;
the serial handshake then confirms there really is a camera.  Mount events
are not always filesystem events (a mount over an existing directory makes
none), so every bay is also re-checked every `poll_s` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Mapping

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("bwv.dock.watch")

OnChange = Callable[[str, bool], None]  # (bay name, present)


def _norm(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.fsdecode(path)))


def mount_present(path: Path) -> bool:
    """A bay holds a camera when its mount point is a directory (a symlink to one counts)."""
    return Path(path).is_dir()


class MountWatcher(FileSystemEventHandler):
    """Call `on_change(bay, present)` when a bay's mount appears or disappears (cameras already there at start too)."""

    def __init__(self, mounts: Mapping[str, Path], on_change: OnChange, *, poll_s: float = 5.0):
        super().__init__()
        self.mounts = {bay: Path(p) for bay, p in mounts.items()}
        self._by_path = {_norm(p): bay for bay, p in self.mounts.items()}
        self.on_change = on_change
        self.poll_s = poll_s
        self.present: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._observer = Observer()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> "MountWatcher":
        parents = sorted({_norm(p.parent) for p in self.mounts.values()})
        for parent in parents:
            Path(parent).mkdir(parents=True, exist_ok=True)
            self._observer.schedule(self, parent, recursive=False)
        self._observer.start()
        self.refresh_all()  # cameras already cradled when the daemon starts
        self._poller = threading.Thread(target=self._poll, name="bay-poll", daemon=True)
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        if self._poller is not None:
            self._poller.join(timeout=5)

    def refresh_all(self) -> None:
        for bay in self.mounts:
            self.refresh(bay)

    def refresh(self, bay: str) -> None:
        now = mount_present(self.mounts[bay])
        with self._lock:
            before = self.present.get(bay, False)  # a bay starts out empty: only a camera is news
            self.present[bay] = now
        if before != now:
            log.info("bay %s: camera storage %s at %s", bay, "appeared" if now else "gone", self.mounts[bay])
            self.on_change(bay, now)

    # watchdog calls this from its emitter thread for every event in a watched directory
    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                bay = self._by_path.get(_norm(path))
                if bay is not None:
                    self.refresh(bay)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh_all()


__all__ = ["MountWatcher", "mount_present"]
