"""The web application's subject access pages, for disclosure officers.

A dashboard of the requests not closed (overdue first, then by due date, those from the public page
still to verify marked), a form to log one that arrived by post, phone or at a counter, and one
page per request: what was asked, verifying a request from the public, the clips it holds, a
search for more (time window, camera, officer, place) with a hold on the chosen ones, extending and
closing, and its exports: running one with a progress bar, then downloading the playable files and
their signed manifest.

Every action is the function the JSON API calls (sar.py, sar_export.py) under the API's permission
(request.manage; request.export for exports and their files) with the same audit records, and
forms are read through the API's own body models, so the pages refuse what the API refuses.

An export runs in a thread of this server process (`ExportJobs`); its page asks for progress every
second.  In a fleet the load balancer must send a signed-in browser back to the same node for that
page (cookie or source stickiness: docs/deployment.md); the export itself, once made, is on record
in the shared database and its files under the node's server home.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from . import api_models as models
from . import audit, geoindex, sar
from .errors import BadRequest, NotFound, ServerError
from .staff_api import check_request_id, now_iso

_LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?\Z")


def local_to_utc_iso(text: str, zone: ZoneInfo, what: str) -> str:
    """A browser's date-and-time field (no zone; the form says it is local time) as UTC ISO 8601."""
    text = text.strip()
    if not _LOCAL.match(text):
        raise BadRequest(f"{what}: give a date and time, for example 2026-12-01T14:30")
    return datetime.fromisoformat(text).replace(tzinfo=zone).astimezone(timezone.utc).isoformat().replace(
        "+00:00", "Z")


def utc_to_local(text: str | None, zone: ZoneInfo) -> str:
    """An ISO 8601 UTC time as the page shows it: local, to the minute."""
    if not text:
        return ""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(zone).strftime("%Y-%m-%d %H:%M")


def dashboard(db: sqlite3.Connection, *, actor: str, today: date | None = None) -> list[dict]:
    """Requests not closed: overdue first, then by due date; `days_left` for the page.  On the record."""
    today = today or sar.today_utc()
    rows = [r for r in sar.requests(db) if r["status"] != sar.CLOSED]
    for r in rows:
        r["days_left"] = (date.fromisoformat(r["due_date"]) - today).days
    rows.sort(key=lambda r: (not r["overdue"], r["due_date"], r["id"]))
    audit.append(db, actor=actor, action="view", target="requests", detail={"status": "not closed",
                                                                             "listed": len(rows), "via": "web"})
    return rows


def form_details(form, zone: ZoneInfo) -> sar.RequestDetails:
    """The staff form as the API's LogRequestBody (its limits and messages), then sar's own checks."""
    doc: dict[str, Any] = {k: str(form.get(k, "")).strip() for k in (
        "requester", "description", "contact", "place", "device", "officer")}
    doc = {k: v for k, v in doc.items() if v or k in ("requester", "description")}
    if str(form.get("received", "")).strip():
        doc["received"] = str(form["received"]).strip()
    doc["from"] = local_to_utc_iso(str(form.get("from", "")), zone, "when the encounter began")
    doc["to"] = local_to_utc_iso(str(form.get("to", "")), zone, "when it ended")
    for name in ("lat", "lon", "radius_m"):
        text = str(form.get(name, "")).strip()
        if text:
            try:
                doc[name] = float(text)
            except ValueError:
                raise BadRequest(f"{name} must be a number, not {text[:20]!r}") from None
    given = models.parse(models.LogRequestBody, doc)
    details = sar.RequestDetails(
        requester=given.requester, description=given.description, received=given.received or sar.today_utc(),
        window_from_us=geoindex.to_utc_us(given.from_), window_to_us=geoindex.to_utc_us(given.to),
        contact=given.contact or "", place=given.place or "", lat=given.lat, lon=given.lon,
        radius_m=given.radius_m, device_id=given.device or None, officer=given.officer or None)
    details.check()
    return details


# --------------------------------------------------------------------------- export jobs
@dataclass
class ExportJob:
    """One export running (or done) in this process, as its page reports it."""

    id: str
    request_id: str
    actor: str
    clips: list[str]
    started: float = field(default_factory=time.monotonic)
    clip_index: int = 0  # the clip being redacted (0-based)
    frames: int = 0
    total_frames: int = 0
    done: bool = False
    error: str | None = None
    export: int | None = None

    @property
    def percent(self) -> int:
        if self.done:
            return 100
        within = self.frames / self.total_frames if self.total_frames else 0.0
        return min(99, int(100 * (self.clip_index + within) / max(1, len(self.clips))))

    @property
    def said(self) -> str:
        """The progress in a sentence: the page shows it, and job-progress.js puts it there as it changes."""
        if self.done:
            return "Finished."
        return f"Clip {min(self.clip_index + 1, len(self.clips))} of {len(self.clips)}: {self.percent}% done."

    def to_dict(self) -> dict:
        return {"percent": self.percent, "done": self.done, "error": self.error, "export": self.export,
                "clip": min(self.clip_index + 1, len(self.clips)), "clips": len(self.clips), "said": self.said}


class ExportJobs:
    """The exports this process is running; a job is forgotten an hour after it ends."""

    KEEP_S = 3600.0

    def __init__(self) -> None:
        self._jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()

    def start(self, service, request_id: str, doc: dict, actor: str) -> ExportJob:
        """Start the export `doc` describes (the API's ExportBody: clips, and keep/manual boxes)."""
        from . import sar_export

        plan = sar_export.ExportPlan.from_json(doc)  # checks ids and boxes before a thread starts
        job = ExportJob(id=secrets.token_urlsafe(12), request_id=request_id, actor=actor, clips=list(plan.clips))
        with self._lock:
            self._forget_old()
            self._jobs[job.id] = job

        def progress(frames: int, total: int) -> None:
            if frames < job.frames:  # the next clip began
                job.clip_index += 1
            job.frames, job.total_frames = frames, total

        def run() -> None:
            try:
                result = sar_export.export_request(service, request_id, plan, actor=actor, progress=progress)
                job.export = int(result["manifest"]["export"])
            except ServerError as e:
                job.error = e.reason
            except Exception as e:  # reported on the page; the export directory was removed (sar_export)
                job.error = f"the export failed: {e}"[:500]
            finally:
                job.done = True
        threading.Thread(target=run, name=f"export-{request_id}", daemon=True).start()
        return job

    def get(self, job_id: str, request_id: str, actor: str) -> ExportJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.request_id != request_id or job.actor != actor:
            raise NotFound("no export with that number is running here for you (it may have finished over an hour "
                           "ago: see the request's exports)")
        return job

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, j in self._jobs.items() if j.done and now - j.started > self.KEEP_S]:
            del self._jobs[key]


# --------------------------------------------------------------------------- pages
def add_routes(router: web.UrlDispatcher) -> None:
    from .ui import pagekit as kit

    item = kit.NavItem("Requests from the public", "/ui/requests", "request.manage")
    if item not in kit.NAV:
        kit.NAV.append(item)
    router.add_get("/requests", dashboard_page)
    router.add_get("/requests/new", new_form)
    router.add_post("/requests/new", create)
    router.add_get("/requests/{request_id}", request_page)
    router.add_post("/requests/{request_id}/verify", verify)
    router.add_post("/requests/{request_id}/holds", hold)
    router.add_post("/requests/{request_id}/extend", extend)
    router.add_post("/requests/{request_id}/close", close)
    router.add_post("/requests/{request_id}/exports", start_export)
    router.add_get("/requests/{request_id}/exports/job/{job}", job_page)
    router.add_get("/requests/{request_id}/exports/job/{job}/progress", job_progress)
    router.add_get("/requests/{request_id}/exports/{export}/{name}", download)


def _kit():
    from .ui import pagekit

    return pagekit


def _zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(_kit().state(request).service.config.local_time_zone)


def _jobs(request: web.Request) -> ExportJobs:
    ui = _kit().state(request)
    return ui.extra.setdefault("export_jobs", ExportJobs())


async def _write(request: web.Request, fn):
    ui = _kit().state(request)

    def run():
        with ui.service.db.transaction() as db:
            return fn(db)
    return await asyncio.to_thread(run)


async def dashboard_page(request: web.Request) -> web.Response:
    kit = _kit()
    p = kit.who(request)
    rows = await _write(request, lambda db: dashboard(db, actor=p.actor))
    return kit.render(request, "requests.html", title="Requests for footage", rows=rows,
                      overdue=sum(1 for r in rows if r["overdue"]), pending=sum(1 for r in rows if r["pending"]))


def _new_page(request: web.Request, form: dict, error: str | None = None, status: int = 200) -> web.Response:
    kit = _kit()
    config = kit.state(request).service.config
    return kit.render(request, "request_new.html", status=status, title="Log a request for footage", form=form,
                      error=error, zone=config.local_time_zone, today=sar.today_utc().isoformat(),
                      tiles=config.map_tiles or "", attribution=config.map_attribution)


async def new_form(request: web.Request) -> web.Response:
    return _new_page(request, {})


async def create(request: web.Request) -> web.Response:
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    form = request["form"]
    try:
        details = form_details(form, _zone(request))
        request_id, held = await _write(request, lambda db: sar.log_request(db, details, actor=p.actor,
                                                                           at=now_iso()))
    except BadRequest as e:
        return _new_page(request, {k: str(v) for k, v in form.items() if k != "csrf"}, error=e.reason, status=400)
    await asyncio.to_thread(ui.service.settle_locks, held)
    raise web.HTTPSeeOther(f"/ui/requests/{request_id}?logged={len(held)}")


async def request_page(request: web.Request) -> web.Response:
    from . import sar_export

    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    q = request.query
    zone = _zone(request)
    search: dict[str, str] = {k: q.get(k, "").strip() for k in ("from", "to", "device", "officer", "lat", "lon",
                                                                  "radius_m")}
    searched = bool(q.get("search"))

    def run(db):
        doc = sar.request(db, request_id)
        audit.append(db, actor=p.actor, action="view", target=f"request:{request_id}",
                     detail={"what": "record", "via": "web"})
        found = None
        if searched:
            t0 = geoindex.to_utc_us(datetime.fromisoformat(local_to_utc_iso(
                search["from"] or utc_to_local(doc["window_from"], zone).replace(" ", "T"), zone, "search from")))
            t1 = geoindex.to_utc_us(datetime.fromisoformat(local_to_utc_iso(
                search["to"] or utc_to_local(doc["window_to"], zone).replace(" ", "T"), zone, "search until")))
            lat = lon = radius = None
            if search["lat"] and search["lon"]:
                try:
                    lat, lon = float(search["lat"]), float(search["lon"])
                    radius = float(search["radius_m"] or 200)
                except ValueError:
                    raise BadRequest("the place to search must be numbers (click the map)") from None
            sar.RequestDetails("-", "-", date.today(), t0, t1, lat=lat, lon=lon, radius_m=radius).check()
            found = sar.find_candidates(db, t0, t1, device_id=search["device"] or None,
                                        officer=search["officer"] or None, lat=lat, lon=lon, radius_m=radius)
            audit.append(db, actor=p.actor, action="search", target=f"request:{request_id}", detail={
                "from": geoindex.iso_utc(t0), "to": geoindex.iso_utc(t1), "device": search["device"] or None,
                "officer": search["officer"] or None, "place": None if lat is None else [lat, lon, radius],
                "found": len(found), "via": "web"})
        return doc, found
    doc, found = await _write(request, run)
    exports = await asyncio.to_thread(sar_export.export_listing, ui.service, request_id)
    config = ui.service.config
    held = set(doc["held_clips"])
    return kit.render(
        request, "request.html", title=f"Request {request_id}", r=doc, exports=exports, found=found, held=held,
        search=search, searched=searched, local=lambda t: utc_to_local(t, zone), zone=config.local_time_zone,
        may_export=p.may("request.export"), notice=request.query.get("notice", ""),
        tiles=config.map_tiles or "", attribution=config.map_attribution,
        window_local=(utc_to_local(doc["window_from"], zone).replace(" ", "T"),
                      utc_to_local(doc["window_to"], zone).replace(" ", "T")))


def _back(request_id: str, notice: str) -> web.HTTPSeeOther:
    from urllib.parse import quote

    return web.HTTPSeeOther(f"/ui/requests/{request_id}?notice={quote(notice[:300], safe='')}")


async def verify(request: web.Request) -> web.Response:
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    note = models.parse(models.VerifyBody, {"how": str(request["form"].get("how", ""))}).how
    added = await _write(request, lambda db: sar.verify_request(db, request_id, note=note, actor=p.actor,
                                                                at=now_iso()))
    await asyncio.to_thread(ui.service.settle_locks, added)
    raise _back(request_id, f"The requester is verified. {len(added)} more clip(s) recorded in the window are "
                            "now held.")


async def hold(request: web.Request) -> web.Response:
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    form = request["form"]
    given = models.parse(models.HoldBody, {"clips": [str(c) for c in form.getall("clip", [])] or [],
                                           "why": str(form.get("why", "")).strip() or None})
    added = await _write(request, lambda db: sar.add_holds(db, request_id, given.clips, actor=p.actor, at=now_iso(),
                                                           why=given.why or "added by staff"))
    await asyncio.to_thread(ui.service.settle_locks, given.clips)
    raise _back(request_id, f"{len(added)} clip(s) newly held for this request.")


async def extend(request: web.Request) -> web.Response:
    kit = _kit()
    p = kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    form = request["form"]
    months = str(form.get("months", ""))
    given = models.parse(models.ExtendBody, {"months": int(months) if months.isdigit() else months,
                                             "reason": str(form.get("reason", ""))})
    due = await _write(request, lambda db: sar.extend(db, request_id, given.months, reason=given.reason,
                                                      actor=p.actor, at=now_iso()))
    raise _back(request_id, f"The request is extended: the answer is now due on {due.isoformat()}.")


async def close(request: web.Request) -> web.Response:
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    given = models.parse(models.CloseBody, {"outcome": str(request["form"].get("outcome", ""))})
    released = await _write(request, lambda db: sar.close(db, request_id, outcome=given.outcome, actor=p.actor,
                                                          at=now_iso()))
    held = (await _write(request, lambda db: sar.request(db, request_id)))["held_clips"]
    await asyncio.to_thread(ui.service.settle_locks, held)
    raise _back(request_id, f"The request is closed. {released} clip(s) it held are released to their normal "
                            "retention.")


async def start_export(request: web.Request) -> web.Response:
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    form = request["form"]
    clips = [str(c) for c in form.getall("clip", [])]
    if not clips:
        raise BadRequest("choose at least one held clip to export")
    doc: dict[str, Any] = {"clips": clips}
    # From the redaction preview (ui_pages_redaction.py): the requester's face and the boxes added, for its clip.
    from .ui_pages_redaction import parse_choices

    keep = parse_choices([str(v) for v in form.getall("keep", [])], "keep")
    manual = parse_choices([str(v) for v in form.getall("manual", [])], "manual")
    if keep or manual:
        if len(clips) != 1:
            raise BadRequest("choices made in a clip's preview export that clip alone")
        doc |= {"keep": {clips[0]: [c.wire() for c in keep]}, "manual": {clips[0]: [c.wire() for c in manual]}}
    models.parse(models.ExportBody, doc)
    job = _jobs(request).start(ui.service, request_id, doc, p.actor)
    raise web.HTTPSeeOther(f"/ui/requests/{request_id}/exports/job/{job.id}")


async def job_page(request: web.Request) -> web.Response:
    kit = _kit()
    p = kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    job = _jobs(request).get(request.match_info["job"], request_id, p.actor)
    return kit.render(request, "export_job.html", title=f"Export for {request_id}", job=job, r_id=request_id)


async def job_progress(request: web.Request) -> web.Response:
    kit = _kit()
    p = kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    job = _jobs(request).get(request.match_info["job"], request_id, p.actor)
    return web.json_response(job.to_dict(), headers={"Cache-Control": "no-store"})


async def download(request: web.Request) -> web.StreamResponse:
    """An export's file, as the API serves it: only names the signed manifest lists, hash re-checked, audited."""
    from . import sar_export
    from .staff_api import export_number

    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    request_id = check_request_id(request.match_info["request_id"])
    n, name = export_number(request.match_info["export"]), request.match_info["name"]
    target = f"request:{request_id}"
    asked = {"export": n, "file": audit.printable(name, 200), "what": "download", "via": "web"}
    try:
        path, _manifest = await asyncio.to_thread(sar_export.export_file, ui.service, request_id, n, name)
    except ServerError as e:
        outcome = "denied" if isinstance(e, sar_export.ExportFileRefused) else "failed"
        await asyncio.to_thread(ui.service.audit, p.actor, "export", target,
                                asked | {"why": audit.printable(e.reason, 1000)}, outcome)
        raise
    await asyncio.to_thread(ui.service.audit, p.actor, "export", target, asked | {"bytes": path.stat().st_size})
    kind = {".mp4": "video/mp4", ".json": "application/json", ".sig": "text/plain; charset=us-ascii"}[path.suffix]
    return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": "no-store",
                                           "Content-Disposition": f'attachment; filename="{request_id}-{n}-{name}"'})


for _handler in (dashboard_page, new_form, create, request_page, verify, hold, extend, close):
    _handler.ui_permission = "request.manage"  # type: ignore[attr-defined]
for _handler in (start_export, job_page, job_progress, download):
    _handler.ui_permission = "request.export"  # type: ignore[attr-defined]

__all__ = ["ExportJob", "ExportJobs", "add_routes", "dashboard", "form_details", "local_to_utc_iso", "utc_to_local"]
