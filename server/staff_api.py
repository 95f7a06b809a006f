"""The staff side of the HTTP API: footage, retention, subject access, audit, accounts.

Each handler checks its input (400 with a reason), does its work in one
database transaction off the event loop, and appends its audit record in
that same transaction.  Who may call what is decided before a handler runs
(app.py, from routes.py); an officer's own-footage limit too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sqlite3
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, TypeVar

from aiohttp import web

from pydantic import BaseModel

from . import api_models as models
from ..enrol import receipt_verifiers
from . import audit, geoindex, lifecycle, media, sar, users
from .api_models import CLIP_ID_RE, REQUEST_ID_RE
from .errors import BadRequest, Conflict, NotFound, ServerError, TooLarge
from .retention import due_utc_us
from .service import EvidenceService
from .users import OFFICER, Principal

log = logging.getLogger("bwv.server.staff")

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
DEVICE_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
MAX_BODY = 64 * 1024  # a JSON request body; only tus PATCH takes more, and it streams
AUDIT_PAGE = 5000  # audit records read per step of a streamed export
MAX_LISTED = 100_000  # clip ids in one sweep answer


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def principal(request: web.Request) -> Principal:
    return request["principal"]


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise TooLarge(f"request body of {request.content_length} bytes is over the {MAX_BODY} bytes a JSON "
                       "body may have")
    raw = bytearray()
    while len(raw) <= MAX_BODY:  # read() gives what has arrived so far, not all it was asked for
        piece = await request.content.read(MAX_BODY + 1 - len(raw))
        if not piece:
            break
        raw += piece
    if len(raw) > MAX_BODY:
        raise TooLarge(f"request body is over the {MAX_BODY} bytes a JSON body may have")
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    return doc


async def body(request: web.Request, model: type[B]) -> B:
    """The request's JSON body as `model` (api_models): 413 over the size limit, 400 naming the field and what
    is wrong with it; an empty body is an empty object (so a missing field is named, not the body)."""
    return models.parse(model, await json_body(request))


def number_field(doc: dict, name: str) -> float | None:
    value = doc.get(name)
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise BadRequest(f"{name} must be a finite number")
    return v


def time_us(name: str, text: Any) -> int:
    try:
        return geoindex.to_utc_us(geoindex.parse_utc(name, text if isinstance(text, str) else None))
    except geoindex.QueryInvalid as e:
        raise BadRequest(str(e)) from None


def check_clip_id(clip_id: str) -> str:
    if not CLIP_ID_RE.match(clip_id):
        raise BadRequest(f"clip id {clip_id[:80]!r} is not a UUID (8-4-4-4-12 lowercase hexadecimal)")
    return clip_id


def check_request_id(request_id: str) -> str:
    if not REQUEST_ID_RE.match(request_id):
        raise BadRequest(f"request id {request_id[:40]!r} is not of the form SAR-YYYY-NNNNN")
    return request_id


def export_number(text: str) -> int:
    if not text.isdigit() or len(text) > 7 or int(text) < 1:
        raise BadRequest(f"export {text[:20]!r} is not an export number (1, 2, ...)")
    return int(text)


def int_param(q, name: str, default: int, lo: int, hi: int) -> int:
    text = q.get(name)
    if text is None or text == "":
        return default
    try:
        v = int(text)
    except ValueError:
        raise BadRequest(f"{name} {text[:20]!r} is not a whole number") from None
    if not lo <= v <= hi:
        raise BadRequest(f"{name} {v} is outside {lo}..{hi}")
    return v


def clip_details(db: sqlite3.Connection, service: EvidenceService, clip_id: str) -> dict:
    """What GET /api/v1/clips/{id} answers (and the web application's clip page shows): the clip, its
    retention category and due date, its marks and open holds, its held and deleted segments."""
    policy = service.config.retention
    record = lifecycle.require_clip(db, clip_id)
    segs = [service.db.segment(h) for h in lifecycle.segment_hashes(db, clip_id)]
    holds = [dict(zip(("request", "added_utc", "why"), r)) for r in db.execute(
        "SELECT h.sar_id, h.added_utc, h.why FROM sar_holds h JOIN subject_requests r ON r.id = h.sar_id "
        "WHERE h.clip_id = ? AND r.status != 'closed'", (clip_id,))]
    due = due_utc_us(policy, record.facts()) if record.category in policy.categories else None
    return {
        "clip_id": record.clip_id, "device_id": record.device_id, "state": record.state,
        "recorded": geoindex.iso_utc(record.camera_start_us), "ends": geoindex.iso_utc(record.last_utc_us),
        "retention": {"category": record.category, "counted_from": geoindex.iso_utc(record.recorded_utc_us),
                      "due": geoindex.iso_utc(due) if due is not None else None,
                      "held_by_marks": record.active_marks, "held_by_requests": record.open_requests},
        "marks": lifecycle.marks(db, clip_id), "holds": holds,
        "segments": [s.public() for s in segs if s is not None],
        "deleted_segments": lifecycle.tombstones_of(db, clip_id),
    }


class StaffEndpoint:
    """Handlers for the staff routes of routes.py."""

    def __init__(self, service: EvidenceService):
        self.service = service
        self._sweeping = asyncio.Lock()  # one HTTP-started sweep at a time

    # ------------------------------------------------------------------ plumbing
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with self.service.db.transaction() as db:
                return fn(db)
        return await asyncio.to_thread(run)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(lambda: fn(self.service.db.reader()))

    async def settle(self, clip_ids: list[str]) -> None:
        """After the change has committed, the blob store's locks and legal holds follow it."""
        await asyncio.to_thread(self.service.settle_locks, list(clip_ids))

    @property
    def policy(self):
        return self.service.config.retention

    # ------------------------------------------------------------------ session
    async def login(self, request: web.Request) -> web.Response:
        given = await body(request, models.LoginBody)
        username, password = given.username, given.password

        def attempt(db: sqlite3.Connection):
            try:
                return users.login(db, username, password, audit_failure=self.service.login_failure_gate(db))
            except users.LoginFailed as e:
                return e  # commit the failure count and its audit record, then refuse
        result = await self.write(attempt)
        if isinstance(result, users.LoginFailed):
            raise result
        token, expires = result
        request["note"] = f"login {username}"
        role = (await self.read(lambda db: users.principal_for_token(db, token))).role
        return web.json_response(models.Session(token=token, expires=expires, username=username, role=role).wire())

    async def whoami(self, request: web.Request) -> web.Response:
        p = principal(request)
        allowed = sorted(name for name, roles in users.PERMISSIONS.items() if p.role in roles)
        return web.json_response(models.WhoAmI(username=p.name, role=p.role, permissions=allowed).wire())

    async def logout(self, request: web.Request) -> web.Response:
        token = request["token"]
        p = principal(request)

        def run(db):
            users.revoke_token(db, token)
            audit.append(db, actor=p.actor, action="logout", target="session")
        await self.write(run)
        return web.json_response(models.Status(status="logged out").wire())

    # ------------------------------------------------------------------ footage
    async def clips(self, request: web.Request) -> web.Response:
        q = request.query
        p = principal(request)
        t0, t1 = time_us("from", q.get("from")), time_us("to", q.get("to"))
        if t1 < t0:
            raise BadRequest("'to' is before 'from'")
        device = q.get("device") or None
        if device and not DEVICE_RE.match(device):
            raise BadRequest(f"device {device[:80]!r} is not 1-64 letters, digits, '.', '_' or '-'")
        officer = p.name if p.role == OFFICER else (q.get("officer") or None)

        def run(db):
            found = sar.find_candidates(db, t0, t1, device_id=device, officer=officer)
            audit.append(db, actor=p.actor, action="search", target="clips", detail={
                "from": geoindex.iso_utc(t0), "to": geoindex.iso_utc(t1), "device": device, "officer": officer,
                "found": len(found)})
            return found
        found = await self.write(run)
        return web.json_response({"clips": [c.to_dict() for c in found]})

    async def clip(self, request: web.Request) -> web.Response:
        clip_id = check_clip_id(request.match_info["clip_id"])
        p = principal(request)

        def run(db):
            view = clip_details(db, self.service, clip_id)
            audit.append(db, actor=p.actor, action="view", target=f"clip:{clip_id}", detail={"what": "record"})
            return view
        return web.json_response(await self.write(run))

    async def clip_video(self, request: web.Request) -> web.StreamResponse:
        """The clip as MP4, by range, from the caller's live view of it (media.py): the first request opens
        the view (verified, decrypted, audited: key_use and decrypt naming the caller), the player's further
        ranges read the same file until the view expires."""
        clip_id = check_clip_id(request.match_info["clip_id"])
        view = await media.view_for(self.service, clip_id, principal(request), via="api")
        request["note"] = f"view {view.view_id} of clip {clip_id}"
        return media.serve_view(request, view)

    async def mark(self, request: web.Request) -> web.Response:
        clip_id = check_clip_id(request.match_info["clip_id"])
        given = await body(request, models.MarkBody)
        p = principal(request)
        case_ref, reason = given.case_ref, given.reason
        mark_id = await self.write(lambda db: lifecycle.mark_evidence(db, clip_id, case_ref=case_ref, reason=reason,
                                                                     actor=p.actor, at=now_iso()))
        await self.settle([clip_id])
        return web.json_response(models.Marked(clip_id=clip_id, mark=mark_id).wire(), status=201)

    async def unmark(self, request: web.Request) -> web.Response:
        clip_id = check_clip_id(request.match_info["clip_id"])
        try:
            mark_id = int(request.match_info["mark_id"])
        except ValueError:
            raise BadRequest("mark id is not a whole number") from None
        reason = (await body(request, models.LiftBody)).reason
        p = principal(request)
        await self.write(lambda db: lifecycle.lift_mark(db, clip_id, mark_id, reason=reason, actor=p.actor,
                                                        at=now_iso()))
        await self.settle([clip_id])
        return web.json_response(models.Lifted(clip_id=clip_id, mark=mark_id, lifted=True).wire())

    async def category(self, request: web.Request) -> web.Response:
        clip_id = check_clip_id(request.match_info["clip_id"])
        given = await body(request, models.CategoryBody)
        p = principal(request)
        category, reason = given.category, given.reason
        try:
            await self.write(lambda db: lifecycle.set_category(db, self.policy, clip_id, category, actor=p.actor,
                                                               reason=reason, at=now_iso()))
        except Exception as e:
            if type(e).__name__ == "ConfigError":
                raise BadRequest(str(e)) from None
            raise
        await self.settle([clip_id])
        return web.json_response(models.Categorised(clip_id=clip_id, category=category).wire())

    async def evidential_export(self, request: web.Request) -> web.Response:
        from . import sar_export

        clip_id = check_clip_id(request.match_info["clip_id"])
        given = await body(request, models.EvidentialExportBody)
        p = principal(request)
        case_ref, reason = given.case_ref, given.reason
        result = await asyncio.to_thread(sar_export.export_evidence, self.service, clip_id, case_ref=case_ref,
                                         reason=reason, actor=p.actor)
        result["files"] = _file_links(f"/api/v1/clips/{clip_id}/exports", result["manifest"])
        request["note"] = f"evidential export {result['manifest']['export']} of clip {clip_id} for {case_ref}"
        return web.json_response(result, status=201)

    async def evidential_file(self, request: web.Request) -> web.StreamResponse:
        clip_id = check_clip_id(request.match_info["clip_id"])
        return await self._download(request, clip_id, f"clip:{clip_id}")

    # ------------------------------------------------------------------ retention
    async def due(self, request: web.Request) -> web.Response:
        q = request.query
        days = int_param(q, "days", 7, 0, 366)
        include_held = q.get("include_held") in ("1", "true", "yes")
        now = datetime.now(timezone.utc)
        until = geoindex.to_utc_us(now + timedelta(days=days))
        p = principal(request)

        def run(db):
            rows = lifecycle.due_between(db, self.policy, until, include_held=include_held, limit=10_000)
            audit.append(db, actor=p.actor, action="view", target="retention:due",
                         detail={"days": days, "listed": len(rows)})
            return rows
        rows = await self.write(run)
        return web.json_response({
            "now": geoindex.iso_utc(geoindex.to_utc_us(now)), "until": geoindex.iso_utc(until),
            "clips": [{"clip_id": c.clip_id, "device_id": c.device_id, "category": c.category,
                       "recorded": geoindex.iso_utc(c.camera_start_us),
                       "due": geoindex.iso_utc(due_utc_us(self.policy, c.facts())),
                       "held_by_marks": c.active_marks, "held_by_requests": c.open_requests} for c in rows]})

    def _sweeper(self, actor: str):
        from .sweep import Sweeper

        # As `bwv retention sweep` builds it, on the server's own stores; a real sweep ends by signing
        # an audit checkpoint, since deletions are the records most worth a signature.
        return Sweeper(self.service.db, self.service.blobs, self.policy, actor=actor,
                       checkpoint=self.service.checkpoint)

    async def sweep_preview(self, request: web.Request) -> web.Response:
        limit = int_param(request.query, "limit", 1000, 0, MAX_LISTED)
        p = principal(request)
        report = await asyncio.to_thread(self._sweeper(p.actor).run, dry_run=True)
        await self.write(lambda db: audit.append(db, actor=p.actor, action="view", target="retention:sweep-preview",
                                                 detail={"would_delete": len(report.deleted_clips)}))
        request["note"] = f"sweep preview: {len(report.deleted_clips)} clip(s) due"
        return web.json_response(report.to_dict() | {"would_delete": report.deleted_clips[:limit],
                                                     "listed": min(limit, len(report.deleted_clips))})

    async def sweep(self, request: web.Request) -> web.Response:
        """One sweep, in a worker thread: the server goes on answering while it deletes.  Its records
        (sweep_started, each delete, sweep_finished) name the caller."""
        p = principal(request)
        if self._sweeping.locked():
            raise Conflict("a retention sweep started over HTTP is still running; its report will say what "
                           "it deleted (GET /api/v1/audit?action=sweep_finished)")
        metrics = self.service.metrics
        async with self._sweeping:
            try:
                report = await asyncio.to_thread(self._sweeper(p.actor).run)
            except Exception:
                metrics.sweep_runs.labels("failed").inc()
                raise
        metrics.sweep_runs.labels("ok").inc()
        metrics.sweep_deletions.inc(len(report.deleted_clips))
        request["note"] = f"sweep {report.sweep_id}: {len(report.deleted_clips)} clip(s) deleted"
        return web.json_response(report.to_dict() | {"clips": report.deleted_clips[:MAX_LISTED],
                                                     "listed": min(MAX_LISTED, len(report.deleted_clips))})

    # ------------------------------------------------------------------ subject access
    async def log_request(self, request: web.Request) -> web.Response:
        given = await body(request, models.LogRequestBody)
        p = principal(request)
        received = given.received or sar.today_utc()
        details = sar.RequestDetails(
            requester=given.requester, description=given.description, received=received,
            window_from_us=geoindex.to_utc_us(given.from_), window_to_us=geoindex.to_utc_us(given.to),
            contact=given.contact or "", place=given.place or "", lat=given.lat, lon=given.lon,
            radius_m=given.radius_m, device_id=given.device or None, officer=given.officer or None)
        request_id, held = await self.write(lambda db: sar.log_request(db, details, actor=p.actor, at=now_iso()))
        await self.settle(held)
        request["note"] = f"{request_id}: {len(held)} clip(s) held"
        return web.json_response(models.RequestLogged(request=request_id, held_clips=held,
                                                      due=sar.due_date(received).isoformat()).wire(), status=201)

    async def requests(self, request: web.Request) -> web.Response:
        q = request.query
        overdue = q.get("overdue") in ("1", "true", "yes")
        status = q.get("status") or None
        if status and status not in (sar.OPEN, sar.EXTENDED, sar.CLOSED):
            raise BadRequest(f"status {status[:20]!r} is not open, extended or closed")
        p = principal(request)

        def run(db):
            rows = sar.requests(db, status=status, overdue_on=sar.today_utc() if overdue else None)
            # Who asked for footage of themselves is personal data: reading the list is on the record.
            audit.append(db, actor=p.actor, action="view", target="requests",
                         detail={"status": status, "overdue": overdue, "listed": len(rows)})
            return rows
        return web.json_response({"requests": await self.write(run)})

    async def request(self, request: web.Request) -> web.Response:
        from . import sar_export

        request_id = check_request_id(request.match_info["request_id"])
        p = principal(request)

        def run(db):
            doc = sar.request(db, request_id)
            audit.append(db, actor=p.actor, action="view", target=f"request:{request_id}", detail={"what": "record"})
            return doc
        doc = await self.write(run)
        exports = await asyncio.to_thread(sar_export.export_listing, self.service, request_id)
        for e in exports:  # the manifest names the export's other files
            e["manifest_url"] = f"/api/v1/requests/{request_id}/exports/{e['export']}/manifest.json"
        return web.json_response(doc | {"exports": exports})

    async def candidates(self, request: web.Request) -> web.Response:
        request_id = check_request_id(request.match_info["request_id"])
        q = request.query
        p = principal(request)
        t0, t1 = time_us("from", q.get("from")), time_us("to", q.get("to"))
        lat, lon, radius = number_field(q, "lat"), number_field(q, "lon"), number_field(q, "radius_m")
        device = q.get("device") or None
        officer = q.get("officer") or None
        probe = sar.RequestDetails("-", "-", date.today(), t0, t1, lat=lat, lon=lon, radius_m=radius)
        probe.check()

        def run(db):
            sar.request(db, request_id)
            found = sar.find_candidates(db, t0, t1, device_id=device, officer=officer, lat=lat, lon=lon,
                                        radius_m=radius)
            audit.append(db, actor=p.actor, action="search", target=f"request:{request_id}", detail={
                "from": geoindex.iso_utc(t0), "to": geoindex.iso_utc(t1), "device": device, "officer": officer,
                "place": None if lat is None else [lat, lon, radius], "found": len(found)})
            return found
        found = await self.write(run)
        return web.json_response({"request": request_id, "clips": [c.to_dict() for c in found]})

    async def hold(self, request: web.Request) -> web.Response:
        request_id = check_request_id(request.match_info["request_id"])
        given = await body(request, models.HoldBody)
        p = principal(request)
        ids, why = given.clips, given.why or "added by staff"
        added = await self.write(lambda db: sar.add_holds(db, request_id, ids, actor=p.actor, at=now_iso(), why=why))
        await self.settle(ids)
        return web.json_response(models.HoldsAdded(request=request_id, added=added).wire())

    async def export(self, request: web.Request) -> web.Response:
        from . import sar_export  # OpenCV is loaded only when an export is made

        request_id = check_request_id(request.match_info["request_id"])
        doc = await json_body(request)
        models.parse(models.ExportBody, doc)  # the published shape; the plan checks what the media needs
        p = principal(request)
        plan = sar_export.ExportPlan.from_json(doc)
        result = await asyncio.to_thread(sar_export.export_request, self.service, request_id, plan, actor=p.actor)
        result["files"] = _file_links(f"/api/v1/requests/{request_id}/exports", result["manifest"])
        return web.json_response(result, status=201)

    async def export_file(self, request: web.Request) -> web.StreamResponse:
        request_id = check_request_id(request.match_info["request_id"])
        return await self._download(request, request_id, f"request:{request_id}")

    async def _download(self, request: web.Request, owner: str, target: str) -> web.StreamResponse:
        """A file of an export (sar_export.export_file says which names exist); every download, and every
        refused or failed one, is an `export` record against the request or clip."""
        from . import sar_export

        n = export_number(request.match_info["export"])
        name = request.match_info["name"]
        p = principal(request)
        asked = {"export": n, "file": audit.printable(name, 200), "what": "download"}
        try:
            path, manifest = await asyncio.to_thread(sar_export.export_file, self.service, owner, n, name)
        except ServerError as e:
            outcome = "denied" if isinstance(e, sar_export.ExportFileRefused) else "failed"
            await asyncio.to_thread(self.service.audit, p.actor, "export", target,
                                    asked | {"why": audit.printable(e.reason, 1000)}, outcome)
            raise
        size = path.stat().st_size
        case = {"case_ref": manifest["case_ref"]} if "case_ref" in manifest else {}
        await asyncio.to_thread(self.service.audit, p.actor, "export", target, asked | {"bytes": size} | case)
        request["note"] = f"download {target} export {n} {name}"
        kind = {".mp4": "video/mp4", ".json": "application/json", ".sig": "text/plain; charset=us-ascii"}[path.suffix]
        label = owner if owner.startswith("SAR-") else f"evidential-{owner}"
        return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": "no-store",
                                               "Content-Disposition": f'attachment; filename="{label}-{n}-{name}"'})

    async def extend(self, request: web.Request) -> web.Response:
        request_id = check_request_id(request.match_info["request_id"])
        given = await body(request, models.ExtendBody)
        p = principal(request)
        months, reason = given.months, given.reason
        due = await self.write(lambda db: sar.extend(db, request_id, months, reason=reason, actor=p.actor,
                                                     at=now_iso()))
        return web.json_response(models.Extended(request=request_id, due=due.isoformat()).wire())

    async def verify(self, request: web.Request) -> web.Response:
        request_id = check_request_id(request.match_info["request_id"])
        how = (await body(request, models.VerifyBody)).how
        p = principal(request)
        added = await self.write(lambda db: sar.verify_request(db, request_id, note=how, actor=p.actor,
                                                               at=now_iso()))
        await self.settle(added)
        return web.json_response(models.HoldsAdded(request=request_id, added=added).wire())

    async def close(self, request: web.Request) -> web.Response:
        request_id = check_request_id(request.match_info["request_id"])
        outcome = (await body(request, models.CloseBody)).outcome
        p = principal(request)
        released = await self.write(lambda db: sar.close(db, request_id, outcome=outcome, actor=p.actor,
                                                         at=now_iso()))
        await self.settle((await self.read(lambda db: sar.request(db, request_id)))["held_clips"])
        return web.json_response(models.Closed(request=request_id, status="closed", holds_released=released).wire())

    # ------------------------------------------------------------------ audit
    async def audit(self, request: web.Request) -> web.Response:
        q = request.query
        p = principal(request)
        filters = audit_filters(q)
        limit = int_param(q, "limit", 1000, 1, 10_000)
        after = int_param(q, "after", 0, 0, 2**62)

        def run(db):
            try:
                rows = audit.query(db, limit=limit, after_seq=after, **filters)
            except ValueError as e:
                raise BadRequest(str(e)) from None
            audit.append(db, actor=p.actor, action="view", target="audit",
                         detail={"filters": filters, "after": after, "returned": len(rows)})
            return rows
        rows = await self.write(run)
        return web.json_response({"records": [r.to_dict() for r in rows]})

    async def audit_export(self, request: web.Request) -> web.StreamResponse:
        """`bwv audit export` over HTTP: the matching records as JSON lines, read a page at a time and
        streamed, up to the log's head when the request arrived (so an export ends, however busy the
        server); then one `export` record says what was taken."""
        q = request.query
        p = principal(request)
        filters = audit_filters(q)
        after = int_param(q, "after", 0, 0, 2**62)

        def first(db):
            head = audit.head(db)
            try:
                return (head.seq if head else 0), audit.query(db, limit=AUDIT_PAGE, after_seq=after, **filters)
            except ValueError as e:
                raise BadRequest(str(e)) from None
        head, rows = await self.read(first)
        response = web.StreamResponse(headers={
            "Content-Type": "application/x-ndjson; charset=utf-8", "Cache-Control": "no-store",
            "Bwv-Audit-Head": str(head),
            "Content-Disposition": f'attachment; filename="audit-{after + 1}-{head}.jsonl"'})
        await response.prepare(request)
        count, outcome = 0, "failed"  # until the last line is written: a client that went away got part
        try:
            while rows:
                lines = [r.to_json() + "\n" for r in rows if r.seq <= head]
                if lines:
                    await response.write("".join(lines).encode("utf-8"))
                    count += len(lines)
                if len(lines) < len(rows) or len(rows) < AUDIT_PAGE:
                    break
                last = rows[-1].seq
                rows = await self.read(lambda db: audit.query(db, limit=AUDIT_PAGE, after_seq=last, **filters))
            outcome = "ok"
        except ConnectionError:
            pass
        finally:
            await asyncio.to_thread(self.service.audit, p.actor, "export", "audit",
                                    {"records": count, "filters": filters, "after": after, "through": head,
                                     "via": "http"}, outcome)
        request["note"] = f"audit export: {count} record(s){'' if outcome == 'ok' else ', cut short'}"
        if outcome == "ok":
            await response.write_eof()
        return response

    async def audit_checkpoints(self, request: web.Request) -> web.Response:
        after = int_param(request.query, "after", 0, 0, 2**62)
        p = principal(request)

        def run(db):
            found = [cp for cp in audit.stored_checkpoints(db) if cp.size > after]
            audit.append(db, actor=p.actor, action="view", target="audit:checkpoints",
                         detail={"after": after, "returned": len(found)})
            return found
        found = await self.write(run)
        return web.Response(body="".join(cp.to_json() + "\n" for cp in found).encode("utf-8"),
                            headers={"Content-Type": "application/x-ndjson; charset=utf-8",
                                     "Cache-Control": "no-store"})

    async def audit_verify(self, request: web.Request) -> web.Response:
        report = await self.read(lambda db: audit.verify(
            db, receipt_verifiers(self.service.home),
            external=audit.read_checkpoint_file(self.service.checkpoint_file)
            if self.service.checkpoint_file.exists() else ()))
        return web.json_response(report.to_dict())

    # ------------------------------------------------------------------ administration
    async def users(self, request: web.Request) -> web.Response:
        return web.json_response({"users": await self.read(users.users)})

    async def add_user(self, request: web.Request) -> web.Response:
        given = await body(request, models.AddUserBody)
        p = principal(request)
        username, role, password, full_name = given.username, given.role, given.password, given.full_name or ""
        await self.write(lambda db: users.add_user(db, username, role, password, full_name=full_name,
                                                   actor=p.actor))
        return web.json_response(models.UserCreated(username=username, role=role).wire(), status=201)

    async def change_user(self, request: web.Request) -> web.Response:
        username = request.match_info["username"]
        given = await body(request, models.ChangeUserBody)
        p = principal(request)
        role, password, disabled = given.role or None, given.password, given.disabled
        if role is None and password is None and disabled is None:
            raise BadRequest("nothing to change: give role, password or disabled")

        def run(db):
            try:
                users.change_user(db, username, actor=p.actor, role=role, password=password, disabled=disabled)
            except users.OwnRoleChange as e:
                return e  # commit the refusal's audit record, then refuse
        refused = await self.write(run)
        if refused is not None:
            raise refused
        return web.json_response(models.UserChanged(username=username, changed=True).wire())

    async def assign(self, request: web.Request) -> web.Response:
        device_id = request.match_info["device_id"]
        if not DEVICE_RE.match(device_id):
            raise BadRequest(f"device id {device_id[:80]!r} is not 1-64 letters, digits, '.', '_' or '-'")
        given = await body(request, models.AssignBody)
        p = principal(request)
        officer = given.officer
        t0 = geoindex.to_utc_us(given.from_)
        t1 = geoindex.to_utc_us(given.to) if given.to else None

        def run(db):
            row = db.execute("SELECT role FROM users WHERE username = ?", (officer,)).fetchone()
            if row is None:
                raise NotFound(f"no user {officer!r}")
            return lifecycle.assign_device(db, device_id, officer, t0, t1, actor=p.actor, at=now_iso())
        assignment = await self.write(run)
        return web.json_response(models.Assigned(assignment=assignment).wire(), status=201)


def audit_filters(q) -> dict[str, Any]:
    """The audit query filters of a request's query string (as `bwv audit list/export` takes them)."""
    filters: dict[str, Any] = {k: q[k] for k in ("actor", "action", "target", "outcome") if q.get(k)}
    for k in ("since", "until"):
        if q.get(k):
            filters[k] = geoindex.iso_utc(time_us(k, q[k]))
    return filters


def _file_links(base: str, manifest: dict) -> dict[str, str]:
    """Where each file of an export is downloaded: the manifest, its signature, every output."""
    n = manifest["export"]
    names = ["manifest.json", "manifest.sig", *(c["output"] for c in manifest.get("clips", []))]
    return {name: f"{base}/{n}/{name}" for name in names}


__all__ = ["StaffEndpoint", "audit_filters", "json_body", "now_iso", "principal"]
