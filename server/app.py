"""The evidence server's HTTP application: routes, and what every request passes through.

The routes, and who may call each, are the table in routes.py (published as
docs/openapi.json and docs/access-control.md; the tus protocol in
docs/upload-protocol.md).  Docks carry their dock token; staff a user token
from POST /api/v1/login.

Middlewares, outermost first: one log line per request; every error as JSON
``{"error": reason}``; who is calling and whether their role allows the route
(refusals audited); and for tus, the
``Tus-Resumable`` precondition.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Awaitable, Callable

from aiohttp import web

from .. import __version__
from ..sealed.layout import DEVICE_ID_RE
from .geoindex import QueryInvalid, SearchQuery, iso_utc
from .gpx import clip_gpx
from .metrics import CONTENT_TYPE, Check, dependency_checks, may_scrape, parse_networks
from .auth import bearer_text
from .errors import BadRequest, Forbidden, NotFound, PreconditionFailed, ServerError, Unauthorized
from .routes import ROUTES, Route
from .staff_api import MAX_BODY, StaffEndpoint
from .users import DOCK, OFFICER
from .service import EvidenceService
from .tus import HASH_RE, SEQUENCE_RE, TUS_VERSION, TusEndpoint

log = logging.getLogger("bwv.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey("service", EvidenceService)
ROUTE_TABLE = web.AppKey("routes", dict)
MAX_JSON_BODY = MAX_BODY  # a JSON body; over it: 413 (staff_api.json_body). tus PATCH streams its own
CLIP_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
HEALTH_TIMEOUT_S = 5.0
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _is_tus(request: web.Request) -> bool:
    return request.path == "/tus" or request.path.startswith("/tus/")


def error_response(status: int, reason: str, headers: dict[str, str] | None = None,
                   title: str | None = None) -> web.Response:
    """Every error the server sends: JSON ``{"error": reason}``, and the reason in a header too,
    because a HEAD response has no body to read it from."""
    out = dict(headers or {})
    out["Bwv-Error"] = _UNPRINTABLE.sub("?", reason)[:300]
    return web.json_response({"error": reason}, status=status, headers=out, reason=title)


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    note = request.get("note", "")
    level = logging.WARNING if response.status >= 400 and response.status not in (404, 503) else logging.INFO
    if response.status >= 500 and response.status != 503:
        level = logging.ERROR
    who = request.get("principal")
    log.log(level, "%s %s %s %s -> %d%s", request.remote or "-", who.actor if who else "-", request.method,
            request.path, response.status, f"  {note}" if note else "")
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServerError as e:
        if not request.get("note"):
            request["note"] = e.reason
        elif e.reason not in request["note"]:
            request["note"] += f"  ({e.reason})"
        return error_response(e.status, e.reason, e.headers, e.title)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k in ("Allow",)}
        if e.status == 404:
            reason = f"no such endpoint: {request.method} {request.path}"
        elif e.status == 405:
            reason = f"{request.method} is not allowed on {request.path} (allowed: {e.headers.get('Allow', '')})"
        elif e.status == 413:
            reason = f"request body is over the {MAX_JSON_BODY} bytes a JSON body may have"
        else:
            reason = e.text or e.reason
        request["note"] = reason
        return error_response(e.status, reason, headers)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, f"internal server error ({type(e).__name__}); the server log has the details")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is calling (a dock token or a user token), and may they?  Every route names the
    permission it needs (routes.py); a refusal is answered 401/403 and audited.  A request for
    no route at all is answered 404/405 before any token is asked for."""
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception
    route: Route | None = request.app[ROUTE_TABLE].get(request.match_info.route.resource.canonical
                                                         if request.match_info.route.resource else "", {}).get(
        request.method)
    if request.method == "OPTIONS" or route is None or route.permission is None:
        return await handler(request)
    service = request.app[SERVICE]
    try:
        who = await asyncio.to_thread(service.authenticate, request.headers.get("Authorization"))
    except Unauthorized as e:
        await asyncio.to_thread(service.record_denial, "anonymous", request.method, request.path, e.reason, 401)
        raise
    request["principal"] = who
    request["token"] = bearer_text(request.headers.get("Authorization"))
    if who.role == DOCK:
        request["dock"] = who.name
    if not who.may(route.permission):
        reason = (f"{who.actor} ({who.role}) may not {request.method} {request.path}: it needs "
                  f"'{route.permission}', held by {', '.join(route.roles())}")
        await asyncio.to_thread(service.record_denial, who.actor, request.method, request.path, reason, 403)
        raise Forbidden(reason)
    if route.own_footage and who.role == OFFICER and "clip_id" in request.match_info:
        clip_id = request.match_info.get("clip_id", "")
        if not await asyncio.to_thread(service.officer_may_see, who.name, clip_id):
            reason = f"{who.actor} (officer) may see only footage from devices assigned to them; clip {clip_id[:40]} is not"
            await asyncio.to_thread(service.record_denial, who.actor, request.method, request.path, reason, 403)
            raise Forbidden(reason)
    return await handler(request)


@web.middleware
async def tus_resumable(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_tus(request) and request.method != "OPTIONS":
        version = request.headers.get("Tus-Resumable")
        if version != TUS_VERSION:
            raise PreconditionFailed(
                f"Tus-Resumable {version[:20] if version else 'is missing'}"
                f"{' is not supported' if version else ''}; this server speaks tus {TUS_VERSION}",
                headers={"Tus-Version": TUS_VERSION},
            )
    return await handler(request)


async def _tus_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    if _is_tus(request):
        response.headers["Tus-Resumable"] = TUS_VERSION


class ApiEndpoint:
    """The non-tus routes: health, metrics, receipts, segment metadata."""

    def __init__(self, service: EvidenceService):
        self.service = service
        self.networks = parse_networks(service.config.metrics_from)

    async def health(self, request: web.Request) -> web.Response:
        """200 when every dependency answers, else 503 naming the one that does not: a load balancer
        takes the node out of rotation, and whoever looks sees why."""
        try:
            checks = await asyncio.wait_for(asyncio.to_thread(dependency_checks, self.service), HEALTH_TIMEOUT_S)
        except TimeoutError:
            checks = [Check("dependencies", False, f"the checks did not answer within {HEALTH_TIMEOUT_S:.0f} s")]
        failing = [c.name for c in checks if not c.ok]
        if failing:
            request["note"] = f"failing: {', '.join(failing)}"
        return web.json_response({
            "status": "failing" if failing else "ok",
            "service": "openbwv-server",
            "version": __version__,
            "server_key_id": self.service.server_keys.public.key_id.hex(),
            "uploads_in_progress": self.service.active_uploads,
            "max_concurrent_uploads": self.service.config.max_concurrent,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }, status=503 if failing else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        if not may_scrape(request.remote, self.networks):
            raise Forbidden(f"{request.remote or 'this caller'} may not read /metrics: only addresses in the "
                            "server's metrics_from setting may (default loopback)")
        return web.Response(body=self.service.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def receipt(self, request: web.Request) -> web.Response:
        device_id, sequence = request.match_info["device_id"], request.match_info["sequence"]
        if not DEVICE_ID_RE.match(device_id):
            raise BadRequest(f"device id {device_id[:80]!r} is not 1-64 letters, digits, '.', '_' or '-'")
        if not SEQUENCE_RE.match(sequence) or int(sequence) >= 2**63:
            raise BadRequest(f"sequence {sequence[:40]!r} is not a positive decimal integer below 2^63")
        seg = self.service.db.segment_at(device_id, int(sequence))
        if seg is None:
            deleted = self.service.db.tombstone_at(device_id, int(sequence))
            receipt = deleted and self.service.db.tombstone_receipt(deleted[0])
            if receipt and receipt[2]:
                # Held once, deleted by policy since: the receipt stays true of when it was issued, and a
                # camera that never freed the segment needs it to (docs/upload-protocol.md).
                request["note"] = f"receipt {device_id} #{sequence} (deleted by policy on {deleted[1]})"
                return web.Response(body=receipt[2].encode(), content_type="application/json",
                                    headers={"Bwv-Deleted-By-Policy": deleted[1]})
            raise NotFound(f"no segment {device_id} #{sequence} is held here")
        request["note"] = f"receipt {device_id} #{sequence}"
        return web.Response(body=seg.receipt.encode(), content_type="application/json")

    async def segment(self, request: web.Request) -> web.Response:
        segment_hash = request.match_info["segment_hash"]
        if not HASH_RE.match(segment_hash):
            raise BadRequest(f"segment hash {segment_hash[:80]!r} is not 64 hexadecimal characters")
        seg = self.service.db.segment(segment_hash.lower())
        if seg is None:
            raise NotFound(f"no segment {segment_hash.lower()} is held here")
        return web.json_response(seg.public())

    async def search(self, request: web.Request) -> web.Response:
        """Clips with a GNSS fix within radius_m of (lat, lon) between from and to (all inclusive)."""
        q = request.query
        try:
            query = SearchQuery.parse(q.get("lat"), q.get("lon"), q.get("radius_m"), q.get("from"), q.get("to"))
        except QueryInvalid as e:
            raise BadRequest(f"search: {e}") from None
        matches = await asyncio.to_thread(self.service.db.search_tracks, query.lat, query.lon, query.radius_m,
                                          query.from_utc_us, query.to_utc_us)
        request["note"] = f"search found {len(matches)} clip(s)"
        await asyncio.to_thread(self.service.audit, request["principal"].actor, "search", "clips", {
            "lat": query.lat, "lon": query.lon, "radius_m": query.radius_m, "from": iso_utc(query.from_utc_us),
            "to": iso_utc(query.to_utc_us), "found": len(matches)})
        return web.json_response({
            "query": {"lat": query.lat, "lon": query.lon, "radius_m": query.radius_m,
                      "from": iso_utc(query.from_utc_us), "to": iso_utc(query.to_utc_us)},
            "clips": [m.public() | {"first_utc": iso_utc(m.first_utc_us), "last_utc": iso_utc(m.last_utc_us)}
                      for m in matches],
        })

    async def track_gpx(self, request: web.Request) -> web.Response:
        clip_id = request.match_info["clip_id"]
        if not CLIP_ID_RE.match(clip_id):
            raise BadRequest(f"clip id {clip_id[:80]!r} is not a UUID (8-4-4-4-12 lowercase hexadecimal)")
        segments = await asyncio.to_thread(self.service.db.clip_track, clip_id)
        if not segments:
            raise NotFound(f"no segment of clip {clip_id} is held here")
        request["note"] = f"track of clip {clip_id}: {sum(len(s.fixes) for s in segments)} fix(es)"
        await asyncio.to_thread(self.service.audit, request["principal"].actor, "view", f"clip:{clip_id}",
                                {"what": "track (GPX)"})
        return web.Response(body=clip_gpx(clip_id, segments), content_type="application/gpx+xml",
                            headers={"Content-Disposition": f'attachment; filename="{clip_id}.gpx"'})


async def _to_ui(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/ui/")


def build_app(service: EvidenceService) -> web.Application:
    app = web.Application(
        middlewares=[log_requests, json_errors, authenticate, tus_resumable], client_max_size=MAX_JSON_BODY
    )
    app[SERVICE] = service
    endpoints = {"tus": TusEndpoint(service), "api": ApiEndpoint(service), "staff": StaffEndpoint(service)}
    table: dict[str, dict[str, Route]] = {}
    for route in ROUTES:
        owner, name = route.handler.split(".")
        handler = getattr(endpoints[owner], name)
        paths = [route.path] + (["/tus"] if route.path == "/tus/" else [])
        for path in paths:
            app.router.add_route(route.method, path, handler)
            table.setdefault(path, {})[route.method] = route
    tus = endpoints["tus"]
    for path in ("/tus", "/tus/", "/tus/{upload_id}"):
        app.router.add_route("OPTIONS", path, tus.options)
    app[ROUTE_TABLE] = table
    app.on_response_prepare.append(_tus_response_headers)
    # The staff web application (server/ui, docs/web-app.md): its own sign-in, CSRF and role checks.
    from .ui import build_ui, security_headers

    app.router.add_get("/ui", _to_ui)
    app.add_subapp("/ui/", build_ui(service))
    app.on_response_prepare.append(security_headers)
    return app


async def serve(service: EvidenceService, announce: Callable[[str], None], stop: asyncio.Event) -> None:
    """Listen until `stop` is set; `announce` gets the URL actually bound (port 0 picks one)."""
    config = service.config
    runner = web.AppRunner(build_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=config.ssl_context(), backlog=256)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        announce(f"{config.scheme}://{shown}:{port}")
        checkpoints = asyncio.create_task(_sign_audit_periodically(service, stop))
        expiry = asyncio.create_task(_expire_uploads_periodically(service, stop))
        await stop.wait()
        await checkpoints
        await expiry
    finally:
        await runner.cleanup()


async def _sign_audit_periodically(service: EvidenceService, stop: asyncio.Event) -> None:
    """Sign the audit log's head every `checkpoint_interval_s`, and once more on the way out."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), service.config.checkpoint_interval_s)
        except TimeoutError:
            pass
        try:
            await asyncio.to_thread(service.checkpoint, stop.is_set())
        except Exception:
            log.exception("could not sign an audit checkpoint (verification will say where the log stands)")
        if stop.is_set():
            return


UPLOAD_EXPIRY_CHECK_S = 3600.0  # how often a node looks for unfinished uploads past their expiry


async def _expire_uploads_periodically(service: EvidenceService, stop: asyncio.Event) -> None:
    """Discard unfinished uploads past `upload_expiry_hours`, hourly (start-up does it too, in recover)."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), UPLOAD_EXPIRY_CHECK_S)
            return
        except TimeoutError:
            pass
        try:
            for note in await asyncio.to_thread(service.expire_uploads):
                log.info("%s", note)
        except Exception:
            log.exception("could not discard expired uploads (tried again in an hour)")


__all__ = ["ApiEndpoint", "build_app", "error_response", "serve"]
