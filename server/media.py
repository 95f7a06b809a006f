"""Audited views of a clip: decrypted once, remuxed to MP4, served by byte range, then gone.

A browser's ``<video>`` does not fetch a film once: it asks for the first bytes,
then for the index, then for whatever the user seeks to, each a ``Range``
request.  Decrypting the clip for each of them would be slow and would fill the
audit trail with one decrypt per seek.  So watching a clip opens a *view*: the
clip's segments are verified and decrypted once (the ``key_use`` and
``decrypt`` records name the viewer, the purpose and the view), the media is
remuxed without re-encoding into a faststart MP4 (H.264 + AAC: what Debian's
chromium plays, docs/web-app.md), and that one file is served by range to the
viewer who opened it, and to nobody else, until the view expires.

Decrypted footage must not outlive what the retention rules allow, nor sit in
any cache on the way, so:

- every answer carries ``Cache-Control: no-store``;
- a view lives ``VIEW_LIFETIME`` at most, and expired views are removed
  whenever views are opened or read (and at start-up);
- the retention sweep removes every view of a clip it deletes (sweep.py calls
  `drop_clip_views`), and a view that finishes opening after its clip began to
  be deleted removes itself.

Layout, beside the database (so that the sweep, which knows only the database's
path, finds it)::

    BWV_HOME/server/views/<clip_id>/<view_id>/clip.mp4
    BWV_HOME/server/views/<clip_id>/<view_id>/view.json   who, when, until
    BWV_HOME/server/views/.work/<clip_id>.<view_id>/       a decrypt in progress
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from aiohttp import web

from . import audit, lifecycle
from .audit_time import segments_detail
from .errors import NotFound, RangeNotSatisfiable, ServerError, StoreError

if TYPE_CHECKING:
    from .service import EvidenceService
    from .users import Principal

log = logging.getLogger("bwv.server.media")

VIEW_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
CLIP_DIR_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# Long enough to watch a long clip with pauses; short enough that decrypted media is not left lying about.
VIEW_LIFETIME = timedelta(hours=1)
MEDIA_TYPE = "video/mp4"
MEDIA_FILE = "clip.mp4"
META_FILE = "view.json"
WORK_DIR = ".work"  # decrypts in progress, one directory each
SERVED_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def views_root(local_dir: Path) -> Path:
    """Where the views of the server whose node-local files are in `local_dir` (MetadataStore.local_dir,
    BWV_HOME/server) are kept: decrypted views are this node's, whichever engine holds the metadata."""
    return Path(local_dir) / "views"


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class View:
    """One opened view of a clip, for one viewer."""

    view_id: str
    clip_id: str
    viewer: str  # the actor who opened it (user:<name>); only they may read it
    opened: datetime
    expires: datetime
    path: Path  # the MP4
    size: int
    duration_s: float | None

    def expired(self, now: datetime) -> bool:
        return now >= self.expires

    def public(self) -> dict:
        return {"view": self.view_id, "clip_id": self.clip_id, "viewer": self.viewer, "opened": _iso(self.opened),
                "expires": _iso(self.expires), "bytes": self.size, "duration_s": self.duration_s}


class ViewCache:
    """The views held on this node, on disk under `root` (one directory per clip, one per view)."""

    def __init__(self, root: Path, *, lifetime: timedelta = VIEW_LIFETIME,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.root = Path(root)
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()  # opening, reading and pruning views from several threads

    # ------------------------------------------------------------------ reading
    def _load(self, directory: Path) -> View | None:
        try:
            meta = json.loads((directory / META_FILE).read_text())
            media = directory / MEDIA_FILE
            return View(meta["view"], meta["clip_id"], meta["viewer"], datetime.fromisoformat(meta["opened"]),
                        datetime.fromisoformat(meta["expires"]), media, media.stat().st_size, meta.get("duration_s"))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # half made, or half removed: not a view

    def get(self, clip_id: str, view_id: str) -> View | None:
        """The live view `view_id` of `clip_id`, or None (never opened, expired, or its clip deleted)."""
        if not (CLIP_DIR_RE.match(clip_id) and VIEW_ID_RE.match(view_id)):
            return None
        directory = self.root / clip_id / view_id
        view = self._load(directory)
        if view is None or view.clip_id != clip_id or view.view_id != view_id:
            return None
        if view.expired(self.clock()):
            self._remove(directory)
            return None
        return view

    def live_view_of(self, clip_id: str, viewer: str) -> View | None:
        """The viewer's newest live view of the clip, if any (the API's /video reuses it across ranges)."""
        clip_dir = self.root / clip_id
        if not CLIP_DIR_RE.match(clip_id) or not clip_dir.is_dir():
            return None
        now = self.clock()
        views = [v for v in (self._load(d) for d in clip_dir.iterdir() if d.is_dir() and VIEW_ID_RE.match(d.name))
                 if v is not None and v.viewer == viewer and not v.expired(now)]
        return max(views, key=lambda v: v.opened, default=None)

    # ------------------------------------------------------------------ making
    def new_workdir(self, clip_id: str) -> tuple[str, Path]:
        """A fresh view id and the private directory its decrypt is done in (a dot name: not yet a view)."""
        if not CLIP_DIR_RE.match(clip_id):
            raise StoreError(f"internal: clip id {clip_id[:80]!r} is not a UUID")
        # Apart from the clip's own directory, which the sweep may remove while a decrypt runs.
        (self.root / WORK_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
        view_id = secrets.token_hex(16)
        work = self.root / WORK_DIR / f"{clip_id}.{view_id}"
        work.mkdir(mode=0o700)
        return view_id, work

    def keep(self, clip_id: str, view_id: str, viewer: str, mp4: Path, duration_s: float | None,
             work: Path) -> View:
        """Make the decrypted MP4 in `work` the view `view_id`; everything else decrypted there is removed."""
        opened = self.clock()
        directory = self.root / clip_id / view_id
        staged = work / "view"
        staged.mkdir(mode=0o700)
        os.replace(mp4, staged / MEDIA_FILE)
        meta = {"view": view_id, "clip_id": clip_id, "viewer": viewer, "opened": opened.isoformat(),
                "expires": (opened + self.lifetime).isoformat(), "duration_s": duration_s}
        (staged / META_FILE).write_text(json.dumps(meta))
        with self._lock:
            directory.parent.mkdir(exist_ok=True, mode=0o700)
            os.replace(staged, directory)
        self._remove(work)
        view = self._load(directory)
        if view is None:
            raise StoreError(f"view {view_id} of clip {clip_id} vanished as it was made (its clip deleted?)")
        return view

    # ------------------------------------------------------------------ removing
    def _remove(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def drop_clip(self, clip_id: str) -> int:
        """Remove every view of a clip (it is being deleted); returns how many there were."""
        clip_dir = self.root / clip_id
        if not CLIP_DIR_RE.match(clip_id) or not clip_dir.is_dir():
            return 0
        with self._lock:
            count = sum(1 for d in clip_dir.iterdir() if VIEW_ID_RE.match(d.name))
            self._remove(clip_dir)
        return count

    def prune(self) -> int:
        """Remove expired views, and what a decrypt interrupted by a crash left behind; returns views removed."""
        if not self.root.is_dir():
            return 0
        now = self.clock()
        removed = 0
        for work in (self.root / WORK_DIR).glob("*"):
            try:
                if now.timestamp() - work.stat().st_mtime > self.lifetime.total_seconds():
                    self._remove(work)  # a decrypt that never finished (a crash midway)
            except OSError:
                pass  # finished and moved meanwhile
        for clip_dir in self.root.iterdir():
            if not (clip_dir.is_dir() and CLIP_DIR_RE.match(clip_dir.name)):
                continue
            for d in clip_dir.iterdir():
                view = self._load(d)
                if view is None or view.expired(now):
                    self._remove(d)
                    removed += 1
            try:
                clip_dir.rmdir()  # only when empty
            except OSError:
                pass
        return removed

    def clear_unfinished(self) -> None:
        """At start-up: no decrypt is in progress, so every work directory is a crash's leftover."""
        self._remove(self.root / WORK_DIR)


def drop_clip_views(local_dir: Path, clip_id: str) -> int:
    """For the retention sweep: remove every view of a clip it deletes (the sweep knows only the store)."""
    return ViewCache(views_root(local_dir)).drop_clip(clip_id)


# ---------------------------------------------------------------------- the audited open
def open_view(service: "EvidenceService", clip_id: str, viewer: "Principal", *, via: str) -> View:
    """Verify and decrypt a clip for `viewer`, audited, and keep it as a view (blocking: run in a thread).

    The caller has checked that `viewer` may view the clip (permission ``clip.view``, and an officer
    only their own).  A clip that cannot be opened is audited as a failed decrypt and refused."""
    cache = service.views
    cache.prune()
    view_id, work = cache.new_workdir(clip_id)
    try:
        try:
            opened = service.open_clip(clip_id, work)
            if opened.mp4_path is None:
                raise StoreError(f"clip {clip_id} decrypted but could not be remuxed to MP4")
        except ServerError as e:
            service.audit(viewer.actor, "decrypt", f"clip:{clip_id}", outcome="failed",
                          detail={"why": e.reason[:500], "purpose": "view", "via": via})
            raise
        hashes = [s.segment_hash.hex() for s in opened.segments]
        view = cache.keep(clip_id, view_id, viewer.actor, opened.mp4_path, opened.duration_s, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the segments' copies and the decrypted TS go at once
    try:
        with service.db.transaction() as db:
            record = lifecycle.require_clip(db, clip_id)
            if record.state != lifecycle.CLIP_HELD:
                raise NotFound(f"clip {clip_id} is {record.state}: its footage is no longer held")
            audit.append(db, actor=viewer.actor, action="key_use", target=f"clip:{clip_id}",
                         detail={"key": service.server_keys.public.key_id.hex(), **segments_detail(hashes)})
            audit.append(db, actor=viewer.actor, action="decrypt", target=f"clip:{clip_id}", detail={
                **segments_detail(hashes), "purpose": "view", "via": via, "view": view_id,
                "expires": _iso(view.expires)})
    except BaseException:
        cache._remove(view.path.parent)  # not audited, so not kept: nobody may watch what was not recorded
        raise
    log.info("view %s of clip %s opened for %s (%d bytes, until %s)", view_id, clip_id, viewer.actor, view.size,
             _iso(view.expires))
    return view


def viewer_view(service: "EvidenceService", clip_id: str, view_id: str, viewer: "Principal") -> View:
    """The view `view_id` of `clip_id`, if `viewer` opened it and it is live; NotFound otherwise (the
    same answer whether it never existed, expired or is someone else's: a view id names no one's footage)."""
    view = service.views.get(clip_id, view_id)
    if view is None or view.viewer != viewer.actor:
        raise NotFound(f"no live view {view_id[:40]} of clip {clip_id}: views last "
                       f"{int(service.views.lifetime.total_seconds() // 60)} minutes and belong to whoever opened "
                       "them; open the clip again")
    return view


def serve_view(request: web.Request, view: View) -> web.FileResponse:
    """The view's MP4, by byte range (RFC 9110: 206 with Content-Range, Accept-Ranges: bytes; 416 as
    ``{"error": ...}`` with ``Content-Range: bytes */<size>`` for a range past the end or one that cannot
    be read), never cached by anyone on the way (no-store)."""
    if request.headers.get("Range") is not None:
        try:
            wanted = request.http_range
        except ValueError:
            raise RangeNotSatisfiable(f"Range {request.headers['Range'][:80]!r} is not a byte range this server "
                                      f"reads (bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX); the view is "
                                      f"{view.size} bytes", size=view.size) from None
        if wanted.start is not None and wanted.start >= 0 and wanted.start >= view.size:
            raise RangeNotSatisfiable(f"Range starts at byte {wanted.start}, past the end of the view's "
                                      f"{view.size} bytes", size=view.size)
    return web.FileResponse(view.path, headers={
        **SERVED_HEADERS, "Content-Type": MEDIA_TYPE,
        "Content-Disposition": f'inline; filename="{view.clip_id}.mp4"'})


_opening: "weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]" = weakref.WeakValueDictionary()


async def view_for(service: "EvidenceService", clip_id: str, viewer: "Principal", *, via: str) -> View:
    """The viewer's live view of the clip, or a new one (audited) if they have none.  For the API's
    /video, fetched range by range by players that do not know about views: one decrypt serves them
    all, and two ranges asked at once do not open two views."""
    key = (clip_id, viewer.actor)
    lock = _opening.get(key)
    if lock is None:
        lock = _opening[key] = asyncio.Lock()
    async with lock:
        view = await asyncio.to_thread(service.views.live_view_of, clip_id, viewer.actor)
        if view is None:
            view = await asyncio.to_thread(open_view, service, clip_id, viewer, via=via)
        return view


__all__ = ["MEDIA_TYPE", "VIEW_LIFETIME", "View", "ViewCache", "drop_clip_views", "open_view", "serve_view",
           "view_for", "viewer_view", "views_root"]
