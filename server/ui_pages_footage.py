"""The web application's footage search: clips recorded in a time window, by camera, officer and place.

The search is the API's: the window, camera and officer as ``GET /api/v1/clips`` reads them
(sar.find_candidates, under clip.list; an officer's search is always narrowed to their own footage,
whatever the form says), and the place as ``GET /api/v1/search`` checks it (geoindex.SearchQuery:
the same limits on radius and window, the same track index), which only roles holding clip.search
may use.  Each search is a ``search`` record of ``clips`` naming who searched for what and how many
clips were found, as the API writes it.  Results link to the clip page (ui_pages_clip.py); after a
search by place, the routes of the first clips found are drawn on its map (footage-tracks.js, from
each clip's track address, under clip.track and audited there, as every role that may search by
place holds).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from aiohttp import web

from . import audit, geoindex, sar, users
from .errors import BadRequest
from .geoindex import MAX_RADIUS_M, QueryInvalid, SearchQuery
from .staff_api import DEVICE_RE
from .ui import pagekit as kit

DEFAULT_RADIUS_M = 200
TRACKS_DRAWN = 20  # routes of the first clips found by place, drawn on the search map
MAX_SHOWN = 500  # rows on one page of results; the page says when there are more
_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?\Z")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")


@dataclass(frozen=True)
class FootageQuery:
    """What the form asked, checked: a window (UTC µs), and optionally a camera, an officer and a place."""

    from_us: int
    to_us: int
    device: str | None
    officer: str | None
    place: SearchQuery | None


def _local_us(text: str, zone: ZoneInfo, what: str) -> int:
    text = text.strip()
    if not _LOCAL.match(text):
        raise BadRequest(f"{what}: give a date and a time, for example 2026-12-01 14:30")
    return geoindex.to_utc_us(datetime.fromisoformat(text).replace(tzinfo=zone))


def read_query(q, zone: ZoneInfo, principal: users.Principal) -> FootageQuery:
    """The form's fields as a search, or BadRequest saying which field is wrong, in the form's words.
    An officer's search is narrowed to them; a place needs clip.search, as over the API."""
    t0, t1 = _local_us(q.get("from", ""), zone, "From"), _local_us(q.get("to", ""), zone, "Until")
    if t1 < t0:
        raise BadRequest("Until is before From: the end of the time window must come after its start")
    device = (q.get("device") or "").strip() or None
    if device and not DEVICE_RE.match(device):
        raise BadRequest("Camera: choose a camera from the list")
    officer = (q.get("officer") or "").strip() or None
    if officer and not _NAME.match(officer):
        raise BadRequest("Officer: choose an officer from the list")
    if principal.role == users.OFFICER:
        officer = principal.name
    lat, lon = (q.get("lat") or "").strip(), (q.get("lon") or "").strip()
    place = None
    if lat or lon:
        if not principal.may("clip.search"):
            raise BadRequest("Your role cannot search footage by place")
        if not (lat and lon):
            raise BadRequest("Place: click the map to choose a point, or remove the point to search without a place")
        try:
            place = SearchQuery.parse(lat, lon, (q.get("radius_m") or "").strip() or str(DEFAULT_RADIUS_M),
                                      geoindex.iso_utc(t0), geoindex.iso_utc(t1))
        except QueryInvalid as e:
            raise BadRequest(_plain(str(e))) from None
    return FootageQuery(t0, t1, device, officer, place)


def _plain(reason: str) -> str:
    """geoindex's reasons, in the words of the form's fields."""
    for name, label in (("radius_m", "Radius"), ("lat", "Latitude"), ("lon", "Longitude")):
        if reason.startswith(name):
            return f"{label}: {reason[len(name):].strip()}"
    if "days" in reason and "window" in reason:
        return ("A search by place covers at most " + str(geoindex.MAX_WINDOW.days) +
                " days: make the time window shorter, or remove the point from the map")
    return reason


def search(db: sqlite3.Connection, query: FootageQuery, *, actor: str) -> list[sar.Candidate]:
    """The clips the query finds (the API's find_candidates), and its ``search`` record."""
    place = query.place
    found = sar.find_candidates(db, query.from_us, query.to_us, device_id=query.device, officer=query.officer,
                                lat=place.lat if place else None, lon=place.lon if place else None,
                                radius_m=place.radius_m if place else None, limit=MAX_SHOWN + 1)
    detail = {"from": geoindex.iso_utc(query.from_us), "to": geoindex.iso_utc(query.to_us), "device": query.device,
              "officer": query.officer, "found": len(found), "via": "web"}
    if place:
        detail |= {"lat": place.lat, "lon": place.lon, "radius_m": place.radius_m}
    audit.append(db, actor=actor, action="search", target="clips", detail=detail)
    return found


def choices(db: sqlite3.Connection, principal: users.Principal, enrolled: list[str]) -> tuple[list[str], list[str]]:
    """The cameras and officers the form offers: every enrolled camera and every officer who has worn one;
    for an officer, the cameras they have worn, and no one else.  (Neither list reads the clips: the page
    stays quick however much footage is held.)"""
    if principal.role == users.OFFICER:
        cams = [r[0] for r in db.execute("SELECT DISTINCT device_id FROM device_assignments WHERE officer = ? "
                                         "ORDER BY device_id", (principal.name,))]
        return cams, []
    worn = {r[0] for r in db.execute("SELECT DISTINCT device_id FROM device_assignments")}
    cams = sorted(worn | set(enrolled))
    officers = [r[0] for r in db.execute("SELECT DISTINCT officer FROM device_assignments ORDER BY 1 LIMIT 5000")]
    return cams, officers


def _local(us: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- page
def add_routes(router: web.UrlDispatcher) -> None:
    item = kit.NavItem("Footage", "/ui/footage", "clip.list")
    if item not in kit.NAV:
        kit.NAV.insert(0, item)  # the first thing most staff come for
    router.add_get("/footage", footage_page)


@kit.page("clip.list")
async def footage_page(request: web.Request) -> web.Response:
    ui, p = kit.state(request), kit.who(request)
    zone = ZoneInfo(ui.service.config.local_time_zone)
    q = request.query
    asked = bool(q.get("from") or q.get("to"))
    error, results, query = None, None, None
    try:
        query = read_query(q, zone, p) if asked else None
    except BadRequest as e:
        error = e.reason

    def run():
        db_, enrolled = ui.service.db, ui.service.registry.devices()
        if query is None:
            return choices(db_.reader(), p, enrolled), None
        with db_.transaction() as db:
            return choices(db, p, enrolled), search(db, query, actor=p.actor)
    (cams, officers), found = await asyncio.to_thread(run)
    if found is not None:
        results = [{"clip_id": c.clip_id, "device_id": c.device_id, "from": _local(c.camera_start_us, zone),
                    "to": _local(c.last_utc_us, zone)[11:],
                    "closest_m": None if c.closest_m is None else round(c.closest_m)} for c in found[:MAX_SHOWN]]
    config = ui.service.config
    form = dict(q)
    if not asked:  # a first visit: the last week, which is what people most often look for
        now = datetime.now(zone).replace(second=0, microsecond=0, tzinfo=None)
        form |= {"from": (now - timedelta(days=7)).isoformat(timespec="minutes"),
                 "to": now.isoformat(timespec="minutes")}
    return kit.render(
        request, "footage.html", status=400 if error else 200, title="Find footage", form=form, error=error,
        results=results, more=found is not None and len(found) > MAX_SHOWN, max_shown=MAX_SHOWN, query=query,
        cams=cams, officers=officers, is_officer=p.role == users.OFFICER, may_place=p.may("clip.search"),
        zone=config.local_time_zone, tiles=config.map_tiles or "", attribution=config.map_attribution or "",
        track_ids=[r["clip_id"] for r in results[:TRACKS_DRAWN]] if results and query and query.place else [],
        default_radius=DEFAULT_RADIUS_M, max_radius=int(MAX_RADIUS_M), max_days=geoindex.MAX_WINDOW.days)


__all__ = ["FootageQuery", "add_routes", "choices", "read_query", "search"]
