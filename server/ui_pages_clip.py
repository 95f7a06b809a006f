"""The web application's clip page: watch a clip, see where it was recorded as it plays, and keep it.

What the page shows is what ``GET /api/v1/clips/{id}`` answers (staff_api.clip_details), read under
the same permission (clip.read; an officer only their own clips) and put on the record the same way
(a ``view`` of the clip's record).  Playing it opens an audited view (media.py, as
``GET /api/v1/clips/{id}/video`` does, under clip.view): the decrypt is recorded with the viewer's
name when they press play, not when they only look at the page.  The map reads the clip's track as
JSON from this server (under clip.track, as the GPX of the API; audited), and clip.js moves the
position along it in step with the video.  Marking and lifting are lifecycle.mark_evidence and
lift_mark, the forms read as the API's MarkBody and LiftBody, under clip.mark and clip.unmark, the
blob store's locks following once committed (service.settle_locks).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo
from urllib.parse import quote

from aiohttp import web

from . import api_models as models
from . import audit, geoindex, lifecycle, media
from .api_models import CLIP_ID_RE
from .errors import BadRequest, Conflict, NotFound, ServerError
from .staff_api import clip_details, now_iso
from .ui import pagekit as kit
from .ui_pages_retention import mark_clip

# A segment's place in the clip's chain, in the words the page uses.
VERIFIED, GAP_DELETED, MISSING = "verified", "deleted by policy", "missing"


@dataclass(frozen=True)
class ChainRow:
    """One segment of the clip (by its index in the clip), and what the server holds of it."""

    index: int
    sequence: int | None  # the camera's sequence number (None: never received, so unknown)
    status: str  # VERIFIED, GAP_DELETED or MISSING
    start: str | None  # ISO 8601 UTC, when known
    note: str  # one sentence for the person reading the page


def chain_of(db: sqlite3.Connection, details: dict) -> list[ChainRow]:
    """The clip's segments in order: each held one was verified on arrival (hash, signature, chain);
    one the retention sweep deleted has a tombstone (deleted by policy); an index with neither between
    the first and the last known is missing (never received, or lost).  A held segment that arrived
    after a break in its camera's chain says whether the segments before it were deleted by policy or
    are missing, as `bwv server status` does for the whole store."""
    rows: dict[int, ChainRow] = {}
    for s in details["segments"]:
        note = "Checked on arrival: its seal, signature and place in the camera's chain are intact."
        status = s["chain_status"]
        if status.startswith("gap after "):
            after = int(status.removeprefix("gap after ").split()[0])
            between = (after + 1, s["sequence"] - 1)
            deleted = db.execute("SELECT COUNT(*) FROM tombstones WHERE device_id = ? AND sequence BETWEEN ? AND ?",
                                 (s["device_id"], *between)).fetchone()[0] if between[0] <= between[1] else 0
            gap = between[1] - between[0] + 1
            if gap > 0 and deleted == gap:
                note = (f"Checked on arrival. The {gap} segment(s) the camera recorded just before it were deleted "
                        "by the retention policy, as the rules require.")
            elif gap > 0:
                note = (f"Checked on arrival, but {gap - deleted} segment(s) the camera recorded just before it "
                        "never reached the server.")
        rows[s["segment_index"]] = ChainRow(s["segment_index"], s["sequence"], VERIFIED,
                                            geoindex.iso_utc(s["start_utc_us"]), note)
    for index, sequence, start_us, deleted_utc in db.execute(
            "SELECT segment_index, sequence, start_utc_us, deleted_utc FROM tombstones WHERE clip_id = ?",
            (details["clip_id"],)):
        rows.setdefault(index, ChainRow(index, sequence, GAP_DELETED, geoindex.iso_utc(start_us),
                                        f"Deleted by the retention policy on {deleted_utc[:10]}; its record is kept."))
    if not rows:
        return []
    for index in range(0, max(rows) + 1):
        rows.setdefault(index, ChainRow(index, None, MISSING, None,
                                        "Never received by the server (or lost before it arrived)."))
    return [rows[i] for i in sorted(rows)]


def track_document(db: sqlite3.Connection, clip_id: str) -> dict:
    """The clip's GNSS track for the map, with the media time each held segment starts at, so the
    page can put the camera where it was at any moment of the video."""
    segments = geoindex.clip_track(db, clip_id)
    if not segments:
        raise NotFound(f"no segment of clip {clip_id} is held here")
    times = {h: (start, end) for h, start, end in db.execute(
        "SELECT segment_hash, start_utc_us, end_utc_us FROM segments WHERE clip_id = ?", (clip_id,))}
    out, media_s = [], 0.0
    for seg in segments:
        start, end = times[seg.segment_hash]
        out.append({"index": seg.segment_index, "media_start_s": round(media_s, 3), "start_utc_us": start,
                    "end_utc_us": end, "fixes": [[f.utc_us, f.lat, f.lon] for f in seg.fixes]})
        media_s += max(0, end - start) / 1e6
    return {"clip_id": clip_id, "segments": out, "fixes": sum(len(s["fixes"]) for s in out)}


def _check(clip_id: str) -> str:
    if not CLIP_ID_RE.match(clip_id):
        raise BadRequest(f"“{clip_id[:40]}” is not a clip reference. Open clips from the footage search.")
    return clip_id


def local_times(zone: ZoneInfo) -> Callable[[str | None], str]:
    """ISO 8601 UTC as staff read it, in the force's local time: 2026-12-04 11:50:00."""
    def when(iso: str | None) -> str:
        if not iso:
            return "not known"
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
        return t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
    return when


def _track_summary(track: dict, when: Callable[[str | None], str]) -> dict | None:
    fixes = [f for s in track["segments"] for f in s["fixes"]]
    if not fixes:
        return None
    (t0, lat0, lon0), (t1, lat1, lon1) = fixes[0], fixes[-1]
    far = max(geoindex.haversine_m(lat0, lon0, lat, lon) for _, lat, lon in fixes)
    return {"count": len(fixes), "first": when(geoindex.iso_utc(t0)), "last": when(geoindex.iso_utc(t1)),
            "start": f"{lat0:.5f}, {lon0:.5f}", "end": f"{lat1:.5f}, {lon1:.5f}", "farthest_m": round(far)}


# --------------------------------------------------------------------------- pages
def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/clips/{clip_id}", clip_page)
    router.add_get("/clips/{clip_id}/video", clip_video)
    router.add_get("/clips/{clip_id}/video/ready", clip_video_ready)
    router.add_get("/clips/{clip_id}/track.json", clip_track)
    router.add_post("/clips/{clip_id}/marks", mark)
    router.add_post("/clips/{clip_id}/marks/{mark_id}/lift", lift)


async def _render(request: web.Request, clip_id: str, *, status: int = 200, error: str | None = None,
                  done: str | None = None) -> web.Response:
    ui, p = kit.state(request), kit.who(request)
    service = ui.service
    may_track = p.may("clip.track")
    zone = service.config.local_time_zone
    when = local_times(ZoneInfo(zone))

    def run():
        with service.db.transaction() as db:
            details = clip_details(db, service, clip_id)
            audit.append(db, actor=p.actor, action="view", target=f"clip:{clip_id}",
                         detail={"what": "record", "via": "web"})
            chain = chain_of(db, details)
            track = None
            if may_track and details["segments"]:
                track = _track_summary(track_document(db, clip_id), when)
            return details, chain, track
    details, chain, track = await asyncio.to_thread(run)
    held = details["state"] == lifecycle.CLIP_HELD and bool(details["segments"])
    config = service.config
    return kit.render(
        request, "clip.html", status=status, title=f"Clip {clip_id[:8]}", clip=details, chain=chain, when=when, zone=zone,
        track=track, held=held, may_view=p.may("clip.view") and held, may_track=may_track and held,
        may_mark=p.may("clip.mark") and held, may_unmark=p.may("clip.unmark"),
        active_marks=[m for m in details["marks"] if m["lifted_utc"] is None],
        lifted_marks=[m for m in details["marks"] if m["lifted_utc"] is not None],
        counts={s: sum(1 for r in chain if r.status == s) for s in (VERIFIED, GAP_DELETED, MISSING)},
        tiles=config.map_tiles or "", attribution=config.map_attribution or "", error=error, done=done,
        view_minutes=int(media.VIEW_LIFETIME.total_seconds() // 60))


@kit.page("clip.read", own_footage=True)
async def clip_page(request: web.Request) -> web.Response:
    clip_id = _check(request.match_info["clip_id"])
    q = request.query
    done = None
    if q.get("marked"):
        done = f"The clip is marked as evidence for case {q.get('case', '')[:100]}. It will be kept until the mark is lifted."
    elif q.get("lifted"):
        done = f"Evidence mark {q.get('lifted', '')[:8]} is lifted."
    return await _render(request, clip_id, done=done)


@kit.page("clip.view", own_footage=True)
async def clip_video(request: web.Request) -> web.StreamResponse:
    """The clip's MP4 for the page's <video>, from the viewer's view (opened, audited, when they first
    press play).  The element's first request (from byte 0) is answered as the view is made, so the
    first frame waits for the first segment only; once it is ready, by range.  ``?view=<id>``: that
    view of theirs, by range once ready (clip.js switches to it for seeking, at a URL of its own so the
    browser never mixes the growing file's bytes with the ready file's)."""
    clip_id = _check(request.match_info["clip_id"])
    service, p = kit.state(request).service, kit.who(request)
    view_id = request.query.get("view")
    if view_id is not None:
        view = media.viewer_view(service, clip_id, view_id, p)
        return media.serve_view(request, await asyncio.to_thread(media.wait_ready, service, view))
    if not media.wants_start(request):
        return media.serve_view(request, await media.view_for(service, clip_id, p, via="web"))
    view = await media.view_for(service, clip_id, p, via="web", ready=False)
    if view.ready:
        return media.serve_view(request, view)
    return await media.stream_view(request, service, view)


READY_POLL_S = 10.0  # how long one ask of /video/ready waits for the view before answering "not yet"


@kit.page("clip.view", own_footage=True)
async def clip_video_ready(request: web.Request) -> web.Response:
    """Whether the viewer's view of the clip is ready to be served by range (so seeking works), waiting
    up to READY_POLL_S for it; with the address to play it from then.  Opens nothing."""
    clip_id = _check(request.match_info["clip_id"])
    service, p = kit.state(request).service, kit.who(request)
    view = await asyncio.to_thread(service.views.live_view_of, clip_id, p.actor)
    if view is None:
        return web.json_response({"error": "you have no view of this clip open: press play"}, status=404,
                                 headers=dict(media.SERVED_HEADERS))
    if not view.ready:
        try:
            view = await asyncio.to_thread(media.wait_ready, service, view, READY_POLL_S)
        except ServerError:
            making = service.views.making(view.view_id)
            failed = service.views.get(clip_id, view.view_id) is None
            if failed or (making is not None and making.failed):
                return web.json_response({"error": "the clip could not be prepared: reload the page"}, status=409,
                                         headers=dict(media.SERVED_HEADERS))
            return web.json_response({"ready": False}, headers=dict(media.SERVED_HEADERS))
    return web.json_response({"ready": True, "src": f"/ui/clips/{clip_id}/video?view={view.view_id}",
                              "duration_s": view.duration_s}, headers=dict(media.SERVED_HEADERS))


@kit.page("clip.track", own_footage=True)
async def clip_track(request: web.Request) -> web.Response:
    clip_id = _check(request.match_info["clip_id"])
    ui, p = kit.state(request), kit.who(request)

    def run() -> dict:
        with ui.service.db.transaction() as db:
            doc = track_document(db, clip_id)
            audit.append(db, actor=p.actor, action="view", target=f"clip:{clip_id}",
                         detail={"what": "track", "via": "web"})
            return doc
    return web.json_response(await asyncio.to_thread(run), headers={"Cache-Control": "no-store"})


@kit.page("clip.mark", own_footage=True)
async def mark(request: web.Request) -> web.StreamResponse:
    clip_id = _check(request.match_info["clip_id"])
    ui, p = kit.state(request), kit.who(request)
    form = request["form"]
    case_ref, reason = str(form.get("case_ref", "")), str(form.get("reason", ""))

    def run() -> int:
        with ui.service.db.transaction() as db:
            return mark_clip(db, clip_id, case_ref=case_ref, reason=reason, actor=p.actor)
    try:
        mark_id = await asyncio.to_thread(run)
    except (BadRequest, Conflict) as e:
        return await _render(request, clip_id, status=e.status, error=_plain(e))
    await asyncio.to_thread(ui.service.settle_locks, [clip_id])
    raise web.HTTPSeeOther(f"/ui/clips/{clip_id}?marked={mark_id}&case={quote(case_ref.strip()[:100], safe='')}"
                           "#marks")


@kit.page("clip.unmark", own_footage=True)
async def lift(request: web.Request) -> web.StreamResponse:
    clip_id = _check(request.match_info["clip_id"])
    ui, p = kit.state(request), kit.who(request)
    text = request.match_info["mark_id"]
    if not text.isdigit() or len(text) > 12:
        raise BadRequest(f"“{text[:20]}” is not an evidence mark's number")
    mark_id = int(text)
    form = request["form"]

    def run() -> None:
        given = models.parse(models.LiftBody, {"reason": str(form.get("reason", ""))})
        with ui.service.db.transaction() as db:
            lifecycle.lift_mark(db, clip_id, mark_id, reason=given.reason, actor=p.actor, at=now_iso())
    try:
        await asyncio.to_thread(run)
    except (BadRequest, Conflict, NotFound) as e:
        return await _render(request, clip_id, status=e.status, error=_plain(e))
    await asyncio.to_thread(ui.service.settle_locks, [clip_id])
    raise web.HTTPSeeOther(f"/ui/clips/{clip_id}?lifted={mark_id}#marks")


def _plain(e: ServerError) -> str:
    """The API's reason, in the form's words: which field, and what it needs."""
    reason = e.reason
    for field, label in (("case_ref", "Case reference"), ("reason", "Reason")):
        if reason.startswith(field):
            return f"{label}: {reason[len(field):].lstrip(' :')}"
    return reason


__all__ = ["ChainRow", "GAP_DELETED", "MISSING", "VERIFIED", "add_routes", "chain_of", "track_document"]
