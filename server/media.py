"""Audited views of a clip: verified, decrypted and remuxed as it plays, served by byte range, then gone.

A browser's ``<video>`` does not fetch a film once: it asks for the first bytes,
then for the index, then for whatever the user seeks to, each a ``Range``
request.  Decrypting the clip for each of them would be slow and would fill the
audit trail with one decrypt per seek.  So watching a clip opens a *view*: the
clip's segments are verified, the ``key_use`` and ``decrypt`` records name the
viewer, the purpose and the view, and only then is anything decrypted; the media
is remuxed without re-encoding (H.264 + AAC in MP4: what Debian's chromium plays,
docs/web-app.md) and served to the viewer who opened it, and to nobody else,
until the view expires.

A view is **progressive**: the segments are decrypted in order and remuxed into a
fragmented MP4 (``live.mp4``) that grows fragment by fragment, and the web page's
first request is answered from it as it grows (``stream_view``), so the first
frame waits for the first segment, not the whole clip.  Once the last segment is
in, the same packets are copied once more into a faststart MP4 (``clip.mp4``, the
index first) and the view is *ready*: from then on it is served by byte range
(``serve_view``), which is what seeking needs.  Callers that need the whole file
(the API's /video, the redaction preview) wait for that (`view_for`).

Decrypted footage must not outlive what the retention rules allow, nor sit in
any cache on the way, so:

- every answer carries ``Cache-Control: no-store``;
- a view lives ``VIEW_LIFETIME`` at most, and expired views are removed
  whenever views are opened or read (and at start-up, with every view a crash
  left half made);
- the retention sweep removes every view of a clip it deletes (sweep.py calls
  `drop_clip_views`), a view still being made then stops there, and a view that
  finishes after its clip began to be deleted removes itself;
- a view whose making fails (a segment that will not decrypt or remux) is
  removed at once and recorded as a failed ``decrypt``.

Layout, beside the database (so that the sweep, which knows only the database's
path, finds it)::

    BWV_HOME/server/views/<clip_id>/<view_id>/view.json   who, when, until, and whether it is ready
    BWV_HOME/server/views/<clip_id>/<view_id>/live.mp4    while it is made: fragmented MP4, growing
    BWV_HOME/server/views/<clip_id>/<view_id>/clip.mp4    once ready: faststart MP4
    BWV_HOME/server/views/.work/<clip_id>.<view_id>/       segment copies and the faststart file being written
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
MEDIA_FILE = "clip.mp4"  # the ready view: faststart MP4
LIVE_FILE = "live.mp4"  # the view while it is made: fragmented MP4, growing
META_FILE = "view.json"
WORK_DIR = ".work"  # segment copies and the faststart file being written, one directory per view
BUILDING, READY = "building", "ready"
SERVED_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
STREAM_PIECE = 1 << 20  # bytes read from the growing file per write to the socket
STREAM_POLL_S = 0.02  # how often a stream that has sent all there is looks for more
READY_WAIT_S = 600.0  # the longest a caller that needs the whole file waits for it


def views_root(local_dir: Path) -> Path:
    """Where the views of the server whose node-local files are in `local_dir` (MetadataStore.local_dir,
    BWV_HOME/server) are kept: decrypted views are this node's, whichever engine holds the metadata."""
    return Path(local_dir) / "views"


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class View:
    """One opened view of a clip, for one viewer: being made (``ready`` False, `path` the growing
    fragmented MP4) or ready (`path` the faststart MP4, served by range)."""

    view_id: str
    clip_id: str
    viewer: str  # the actor who opened it (user:<name>); only they may read it
    opened: datetime
    expires: datetime
    path: Path
    size: int  # bytes of `path` when it was read (still growing while not ready)
    duration_s: float | None
    ready: bool = True

    def expired(self, now: datetime) -> bool:
        return now >= self.expires

    def public(self) -> dict:
        return {"view": self.view_id, "clip_id": self.clip_id, "viewer": self.viewer, "opened": _iso(self.opened),
                "expires": _iso(self.expires), "bytes": self.size, "duration_s": self.duration_s,
                "ready": self.ready}


class Making:
    """A view being made by this process: what a stream of its growing file waits on."""

    def __init__(self) -> None:
        self.live_done = threading.Event()  # live.mp4 has all it will have (or the making failed)
        self.done = threading.Event()  # the view is ready, or failed and removed
        self.failed: str | None = None


class ViewCache:
    """The views held on this node, on disk under `root` (one directory per clip, one per view)."""

    def __init__(self, root: Path, *, lifetime: timedelta = VIEW_LIFETIME,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.root = Path(root)
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()  # opening, reading and pruning views from several threads
        self._making: dict[str, Making] = {}  # view id -> its making, while this process makes it

    # ------------------------------------------------------------------ reading
    def _load(self, directory: Path) -> View | None:
        try:
            meta = json.loads((directory / META_FILE).read_text())
            ready = meta.get("state", READY) == READY
            media = directory / (MEDIA_FILE if ready else LIVE_FILE)
            return View(meta["view"], meta["clip_id"], meta["viewer"], datetime.fromisoformat(meta["opened"]),
                        datetime.fromisoformat(meta["expires"]), media, media.stat().st_size, meta.get("duration_s"),
                        ready)
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
        """The viewer's newest live view of the clip, ready or being made, if any (one decrypt serves all
        their requests for the clip)."""
        clip_dir = self.root / clip_id
        if not CLIP_DIR_RE.match(clip_id) or not clip_dir.is_dir():
            return None
        now = self.clock()
        views = [v for v in (self._load(d) for d in clip_dir.iterdir() if d.is_dir() and VIEW_ID_RE.match(d.name))
                 if v is not None and v.viewer == viewer and not v.expired(now)]
        return max(views, key=lambda v: v.opened, default=None)

    def making(self, view_id: str) -> Making | None:
        """The making of a view this process is still making, else None (it is ready, or was left
        half made by a process that is gone)."""
        return self._making.get(view_id)

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

    def _meta(self, clip_id: str, view_id: str, viewer: str, opened: datetime, state: str,
              duration_s: float | None) -> str:
        return json.dumps({"view": view_id, "clip_id": clip_id, "viewer": viewer, "opened": opened.isoformat(),
                           "expires": (opened + self.lifetime).isoformat(), "duration_s": duration_s,
                           "state": state})

    def begin(self, clip_id: str, view_id: str, viewer: str, work: Path) -> tuple[View, Making]:
        """Make `view_id` a view being made: its directory with an empty growing file, servable at once."""
        opened = self.clock()
        staged = work / "view"
        staged.mkdir(mode=0o700)
        (staged / LIVE_FILE).touch(mode=0o600)
        (staged / META_FILE).write_text(self._meta(clip_id, view_id, viewer, opened, BUILDING, None))
        directory = self.root / clip_id / view_id
        making = self._making[view_id] = Making()  # first: a view seen being made with no making is a crash's
        with self._lock:
            directory.parent.mkdir(exist_ok=True, mode=0o700)
            os.replace(staged, directory)
        view = self._load(directory)
        if view is None:
            self._making.pop(view_id, None)
            raise StoreError(f"view {view_id} of clip {clip_id} vanished as it was made (its clip deleted?)")
        return view, making

    def finish(self, view: View, mp4: Path, duration_s: float | None) -> View:
        """The view is ready: its faststart MP4 (made in the work directory) takes the growing file's
        place.  Fails if the view's directory is gone (its clip deleted meanwhile): nothing is recreated."""
        directory = self.root / view.clip_id / view.view_id
        with self._lock:
            if not directory.is_dir():
                raise StoreError(f"view {view.view_id} of clip {view.clip_id} was removed while it was made "
                                 "(its clip deleted?)")
            os.replace(mp4, directory / MEDIA_FILE)
            tmp = directory / f".{META_FILE}.tmp"
            tmp.write_text(self._meta(view.clip_id, view.view_id, view.viewer, view.opened, READY, duration_s))
            os.replace(tmp, directory / META_FILE)
            (directory / LIVE_FILE).unlink(missing_ok=True)  # a stream still reading it keeps its open file
        ready = self._load(directory)
        if ready is None:
            raise StoreError(f"view {view.view_id} of clip {view.clip_id} vanished as it was made")
        return ready

    def ended(self, view_id: str) -> None:
        """The making of `view_id` is over (ready, or failed and removed)."""
        self._making.pop(view_id, None)

    def keep(self, clip_id: str, view_id: str, viewer: str, mp4: Path, duration_s: float | None,
             work: Path) -> View:
        """Make the decrypted MP4 in `work` the ready view `view_id` at once; everything else decrypted
        there is removed."""
        view, making = self.begin(clip_id, view_id, viewer, work)
        try:
            return self.finish(view, mp4, duration_s)
        finally:
            making.live_done.set()
            making.done.set()
            self.ended(view_id)
            self._remove(work)

    # ------------------------------------------------------------------ removing
    def _remove(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def remove_view(self, clip_id: str, view_id: str) -> None:
        """Remove one view (one that failed as it was made, or was not audited)."""
        if CLIP_DIR_RE.match(clip_id) and VIEW_ID_RE.match(view_id):
            with self._lock:
                self._remove(self.root / clip_id / view_id)

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

    def clear_unfinished(self) -> int:
        """At start-up: nothing is being made, so every work directory and every view still marked as
        being made are what a crash or a stop mid-view left (partly decrypted footage): removed.
        Returns the views removed."""
        self._remove(self.root / WORK_DIR)
        removed = 0
        if not self.root.is_dir():
            return 0
        for clip_dir in self.root.iterdir():
            if not (clip_dir.is_dir() and CLIP_DIR_RE.match(clip_dir.name)):
                continue
            for d in clip_dir.iterdir():
                view = self._load(d)
                if view is not None and not view.ready:
                    self._remove(d)
                    removed += 1
        return removed


def drop_clip_views(local_dir: Path, clip_id: str) -> int:
    """For the retention sweep: remove every view of a clip it deletes (the sweep knows only the store)."""
    return ViewCache(views_root(local_dir)).drop_clip(clip_id)


# ---------------------------------------------------------------------- the audited open
def begin_view(service: "EvidenceService", clip_id: str, viewer: "Principal", *, via: str) -> View:
    """Verify a clip for `viewer`, audit the decrypt, and start making the view (blocking: run in a thread).

    Every segment is verified (layout, hash, signature, chain) and the ``key_use`` and ``decrypt``
    records are committed before a byte is decrypted; then a thread decrypts the segments in order
    into the view's growing file and makes it ready (`_make`).  The caller has checked that `viewer`
    may view the clip (permission ``clip.view``, and an officer only their own).  A clip that cannot be
    opened is audited as a failed decrypt and refused."""
    cache = service.views
    cache.prune()
    view_id, work = cache.new_workdir(clip_id)
    try:
        try:
            segments = service.verified_segments(clip_id, work)
        except ServerError as e:
            service.audit(viewer.actor, "decrypt", f"clip:{clip_id}", outcome="failed",
                          detail={"why": e.reason[:500], "purpose": "view", "via": via})
            raise
        hashes = [s.segment_hash.hex() for s in segments]
        expires = cache.clock() + cache.lifetime
        with service.db.transaction() as db:
            record = lifecycle.require_clip(db, clip_id)
            if record.state != lifecycle.CLIP_HELD:
                raise NotFound(f"clip {clip_id} is {record.state}: its footage is no longer held")
            audit.append(db, actor=viewer.actor, action="key_use", target=f"clip:{clip_id}",
                         detail={"key": service.server_keys.public.key_id.hex(), **segments_detail(hashes)})
            audit.append(db, actor=viewer.actor, action="decrypt", target=f"clip:{clip_id}", detail={
                **segments_detail(hashes), "purpose": "view", "via": via, "view": view_id,
                "expires": _iso(expires)})
        view, making = cache.begin(clip_id, view_id, viewer.actor, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # the segments' copies go at once
        raise
    threading.Thread(target=_make, args=(service, view, making, segments, work, via), daemon=True,
                     name=f"view-{view_id[:8]}").start()
    log.info("view %s of clip %s opened for %s (%d segments, until %s)", view_id, clip_id, viewer.actor,
             len(segments), _iso(view.expires))
    return view


def _make(service: "EvidenceService", view: View, making: Making, segments: list, work: Path, via: str) -> None:
    """Decrypt the verified segments in order into the view's growing fragmented MP4, then copy its
    packets into a faststart MP4 and make the view ready.  On any failure the view is removed and the
    failure audited; the segment copies and work files go in every case."""
    from ..opener import remux_stream_to_fragmented_mp4, remux_to_mp4, segment_media

    cache = service.views
    try:
        try:
            remux_stream_to_fragmented_mp4(segment_media(segments, service.registry, service.server_keys),
                                           view.path)
        finally:
            making.live_done.set()
        duration = remux_to_mp4(view.path, work / MEDIA_FILE)
        reader = service.db.reader()
        if lifecycle.require_clip(reader, view.clip_id).state != lifecycle.CLIP_HELD:
            raise NotFound(f"clip {view.clip_id} was deleted while its view was made")
        ready = cache.finish(view, work / MEDIA_FILE, duration)
        log.info("view %s of clip %s ready (%d bytes)", view.view_id, view.clip_id, ready.size)
    except BaseException as e:  # noqa: BLE001 - a thread of its own: everything is recorded, nothing raised
        why = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        making.failed = why[:500]
        cache.remove_view(view.clip_id, view.view_id)
        log.warning("view %s of clip %s failed as it was made: %s", view.view_id, view.clip_id, why)
        try:
            service.audit(view.viewer, "decrypt", f"clip:{view.clip_id}", outcome="failed",
                          detail={"why": why[:500], "purpose": "view", "via": via, "view": view.view_id})
        except Exception:  # noqa: BLE001 - the database may be what failed; the log says it
            log.exception("the failure of view %s could not be audited", view.view_id)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        making.live_done.set()
        making.done.set()
        cache.ended(view.view_id)


def open_view(service: "EvidenceService", clip_id: str, viewer: "Principal", *, via: str) -> View:
    """Open a view and wait until it is ready (blocking: run in a thread): for callers that need the
    whole file."""
    return wait_ready(service, begin_view(service, clip_id, viewer, via=via))


def wait_ready(service: "EvidenceService", view: View, timeout: float = READY_WAIT_S) -> View:
    """The view once ready (blocking); StoreError if it failed or took longer than `timeout`."""
    if view.ready:
        return view
    making = service.views.making(view.view_id)
    if making is not None and not making.done.wait(timeout):
        raise StoreError(f"view {view.view_id} of clip {view.clip_id} is not ready after {timeout:.0f} s")
    ready = service.views.get(view.clip_id, view.view_id)
    if ready is None or not ready.ready:
        why = making.failed if making is not None and making.failed else "it is no longer held, or was left half made"
        raise StoreError(f"view {view.view_id} of clip {view.clip_id} could not be made: {why}")
    return ready


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
    """The ready view's MP4, by byte range (RFC 9110: 206 with Content-Range, Accept-Ranges: bytes; 416 as
    ``{"error": ...}`` with ``Content-Range: bytes */<size>`` for a range past the end or one that cannot
    be read), never cached by anyone on the way (no-store)."""
    if not view.ready:
        raise StoreError(f"internal: view {view.view_id} is not ready to be served by range")
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


def wants_start(request: web.Request) -> bool:
    """Whether a request asks for the file from its start, as a media element's first request does
    (no Range, or ``bytes=0-``): the one request a view still being made can answer."""
    asked = request.headers.get("Range")
    return asked is None or asked.replace(" ", "") == "bytes=0-"


async def stream_view(request: web.Request, service: "EvidenceService", view: View) -> web.StreamResponse:
    """A view still being made, from its first byte as its fragmented MP4 grows (200, chunked, no length
    and no ranges: the browser plays it as it arrives and cannot seek in it yet).  The answer ends with
    the file; if the making fails, the connection is cut so the player reports an error rather than
    taking a shortened clip for the whole."""
    making = service.views.making(view.view_id)
    try:
        f = open(view.path, "rb")
    except FileNotFoundError:
        f = None  # made ready meanwhile
    if making is None or f is None:
        if f is not None:
            f.close()
        return serve_view(request, await asyncio.to_thread(wait_ready, service, view))
    response = web.StreamResponse(headers={**SERVED_HEADERS, "Content-Type": MEDIA_TYPE,
                                           "Content-Disposition": f'inline; filename="{view.clip_id}.mp4"'})
    response.enable_chunked_encoding()
    with f:
        await response.prepare(request)
        try:
            while True:
                finished = making.live_done.is_set()  # before reading: all written by then is read below
                piece = f.read(STREAM_PIECE)
                if piece:
                    await response.write(piece)
                    continue
                if finished:
                    break
                await asyncio.sleep(STREAM_POLL_S)
        except ConnectionResetError:
            # The viewer went (closed the page, or clip.js switched to the ready file): the view is
            # made all the same, audited once, and removed when it expires or its clip is deleted.
            return response
    if making.failed is not None:
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


_opening: "weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]" = weakref.WeakValueDictionary()


async def view_for(service: "EvidenceService", clip_id: str, viewer: "Principal", *, via: str,
                   ready: bool = True) -> View:
    """The viewer's live view of the clip, or a new one (audited) if they have none; with `ready`, once
    it is ready (the API's /video, fetched range by range by players that do not know about views, and
    the redaction preview's frames), else perhaps still being made (the web page's first request, which
    `stream_view` answers).  One decrypt serves all the viewer's requests: two asked at once do not open
    two views."""
    key = (clip_id, viewer.actor)
    lock = _opening.get(key)
    if lock is None:
        lock = _opening[key] = asyncio.Lock()
    async with lock:
        view = await asyncio.to_thread(service.views.live_view_of, clip_id, viewer.actor)
        if view is not None and not view.ready and service.views.making(view.view_id) is None:
            again = await asyncio.to_thread(service.views.get, clip_id, view.view_id)  # made ready meanwhile?
            if again is not None and again.ready:
                view = again
            else:  # left half made by a process that is gone
                await asyncio.to_thread(service.views.remove_view, clip_id, view.view_id)
                view = None
        if view is None:
            view = await asyncio.to_thread(begin_view, service, clip_id, viewer, via=via)
    if ready:
        view = await asyncio.to_thread(wait_ready, service, view)
    return view


__all__ = ["MEDIA_TYPE", "VIEW_LIFETIME", "View", "ViewCache", "begin_view", "drop_clip_views", "open_view",
           "serve_view", "stream_view", "view_for", "viewer_view", "views_root", "wait_ready", "wants_start"]
