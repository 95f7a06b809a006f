"""The staff web application's plumbing: who is signed in, what they may see, how a page is sent.

Every page handler is declared with the permission it needs (users.PERMISSIONS,
the same table the JSON API's routes use), so a page refuses exactly whom the
API refuses; the navigation is drawn from the same declarations, so nobody is
shown a link the server would refuse.  Refusals are audited as the API's are
(service.record_denial).

What every response under /ui/ carries (`security_headers`): a strict
Content-Security-Policy (only this server's own scripts, styles, images and
media; no inline script or style; no framing), nosniff, no Referrer, and
Cache-Control: no-store on pages (they show personal data), while static
files may be cached.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from .. import users
from ..errors import ServerError, Unauthorized
from ..service import EvidenceService
from ..users import Principal
from . import session as sessions

log = logging.getLogger("bwv.server.ui")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    permission: str


# The menu, in the order staff meet their work.  A page not listed here is reached from another page.
NAV: list[NavItem] = []


@dataclass
class UiState:
    service: EvidenceService
    env: jinja2.Environment
    secret: bytes
    policy: sessions.SessionPolicy
    tile_origin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


UI = web.AppKey("ui", UiState)


def page(permission: str | None, *, own_footage: bool = False, signed_in: bool = True) -> Callable[[Handler], Handler]:
    """Declare what a page needs: a permission of users.PERMISSIONS (None: any signed-in staff member,
    or anyone with signed_in=False), and for an officer, that the clip in the URL is their own."""
    def mark(handler: Handler) -> Handler:
        handler.ui_permission = permission  # type: ignore[attr-defined]
        handler.ui_own_footage = own_footage  # type: ignore[attr-defined]
        handler.ui_signed_in = signed_in  # type: ignore[attr-defined]
        return handler
    return mark


def state(request: web.Request) -> UiState:
    return request.config_dict[UI]


def who(request: web.Request) -> Principal:
    return request["principal"]


def csrf_token(request: web.Request) -> str:
    """The token a form on this page must send back (the session's, or the sign-in form's)."""
    ui = state(request)
    if request.get("ui_token"):
        return sessions.csrf_for_session(ui.secret, request["ui_token"])
    return sessions.csrf_for_signin(ui.secret, request["ui_nonce"])


def render(request: web.Request, template: str, *, status: int = 200, title: str, **context: Any) -> web.Response:
    ui = state(request)
    principal: Principal | None = request.get("principal")
    nav = [item for item in NAV if principal is not None and principal.may(item.permission)]
    html = ui.env.get_template(template).render(
        title=title, principal=principal, nav=nav, path=request.path, csrf=csrf_token(request),
        role_label=role_label, idle_minutes=int(ui.policy.idle.total_seconds() // 60), **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


ROLE_LABELS = {
    users.OFFICER: "Officer", users.SUPERVISOR: "Supervisor", users.EVIDENCE_OFFICER: "Evidence officer",
    users.DISCLOSURE_OFFICER: "Disclosure officer", users.AUDITOR: "Auditor", users.ADMIN: "Administrator",
}


def role_label(role: str) -> str:
    return ROLE_LABELS.get(role, role)


def error_page(request: web.Request, status: int, heading: str, message: str) -> web.Response:
    return render(request, "error.html", status=status, title=heading, heading=heading, message=message)


def _is_static(request: web.Request) -> bool:
    return request.path.startswith("/ui/static/")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of this application (never another site)."""
    if not target:
        return "/ui/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or "\\" in target:
        return "/ui/"
    return target


async def read_session(request: web.Request) -> Principal | None:
    """The signed-in staff member, from the session cookie; activity pushes the idle expiry on."""
    token = request.cookies.get(sessions.SESSION_COOKIE)
    if not token or not users.TOKEN_RE.match(token):
        return None
    ui = state(request)
    db = ui.service.db
    try:
        principal = await asyncio.to_thread(lambda: users.principal_for_token(db.reader(), token))
    except Unauthorized:
        return None
    now = datetime.now(timezone.utc)

    def refresh() -> None:
        with db.transaction() as conn:
            sessions.touch(conn, token, ui.policy, now)
    await asyncio.to_thread(refresh)
    request["ui_token"] = token
    return principal


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sign-in, CSRF and role checks for every page; errors as a page a person can read."""
    if _is_static(request):
        return await handler(request)
    ui = state(request)
    nonce = request.cookies.get(sessions.PRESESSION_COOKIE, "")
    fresh_nonce = None
    if len(nonce) != sessions.NONCE_RE_LEN:
        nonce = fresh_nonce = sessions.new_nonce()
    request["ui_nonce"] = nonce
    try:
        response = await _guarded(request, handler, ui)
    except ServerError as e:
        response = error_page(request, e.status, _heading(e.status), e.reason)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = error_page(request, e.status, _heading(e.status), e.text or e.reason)
    if fresh_nonce and not request.get("ui_token"):
        response.set_cookie(sessions.PRESESSION_COOKIE, fresh_nonce, path=sessions.COOKIE_PATH, httponly=True,
                            samesite="Strict", secure=request.secure)
    return response


def _heading(status: int) -> str:
    return {400: "That request could not be used", 401: "Please sign in", 403: "Not allowed",
            404: "Not found", 409: "Not possible now", 413: "Too large"}.get(status, "Something went wrong")


async def _guarded(request: web.Request, handler: Handler, ui: UiState) -> web.StreamResponse:
    needs_sign_in = getattr(handler, "ui_signed_in", True)
    permission = getattr(handler, "ui_permission", None)
    principal = await read_session(request)
    if principal is not None:
        request["principal"] = principal
    if request.method == "POST":
        form = await request.post()
        request["form"] = form
        if not sessions.csrf_matches(csrf_token(request), form.get("csrf")):  # type: ignore[arg-type]
            actor = principal.actor if principal else "anonymous"
            await asyncio.to_thread(ui.service.record_denial, actor, request.method, request.path,
                                    "web form without a valid CSRF token", 403)
            return error_page(request, 403, "This form has expired",
                              "The form was not sent from this application's own page, or it is from an earlier "
                              "session. Go back, reload the page and try again.")
    if needs_sign_in and principal is None:
        if request.method == "GET":
            raise web.HTTPSeeOther(f"/ui/signin?next={quote(request.path_qs, safe='')}")
        return error_page(request, 401, "Please sign in", "Your session has ended. Sign in again to continue.")
    if principal is not None and permission is not None and not principal.may(permission):
        reason = (f"{principal.actor} ({principal.role}) may not {request.method} {request.path}: it needs "
                  f"'{permission}', held by {', '.join(r for r in users.ROLES if r in users.PERMISSIONS[permission])}")
        await asyncio.to_thread(ui.service.record_denial, principal.actor, request.method, request.path, reason, 403)
        return error_page(request, 403, "Not allowed", f"Your role ({role_label(principal.role)}) cannot use this "
                                                       "page. If you need it, ask your supervisor.")
    if (principal is not None and getattr(handler, "ui_own_footage", False) and principal.role == users.OFFICER
            and "clip_id" in request.match_info):
        clip_id = request.match_info["clip_id"]
        if not await asyncio.to_thread(ui.service.officer_may_see, principal.name, clip_id):
            reason = f"{principal.actor} (officer) may see only footage from devices assigned to them; clip {clip_id[:40]} is not"
            await asyncio.to_thread(ui.service.record_denial, principal.actor, request.method, request.path, reason, 403)
            return error_page(request, 403, "Not allowed", "Officers can see only footage from cameras assigned "
                                                           "to them at the time it was recorded.")
    return await handler(request)


def content_security_policy(tile_origin: str | None) -> str:
    images = "'self' data:" + (f" {tile_origin}" if tile_origin else "")
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src " + images + "; media-src 'self'; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith("/ui"):
        return
    ui = request.config_dict.get(UI)
    response.headers["Content-Security-Policy"] = content_security_policy(ui.tile_origin if ui else None)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if _is_static(request):
        response.headers.setdefault("Cache-Control", "public, max-age=3600")
    else:
        response.headers["Cache-Control"] = "no-store"


def tile_origin(url: str | None) -> str | None:
    """The origin the map's tiles come from, when it is not this server (for img-src)."""
    if not url or url.startswith("/"):
        return None
    parts = urlsplit(url.replace("{z}", "0").replace("{x}", "0").replace("{y}", "0").replace("{s}", "a"))
    return f"{parts.scheme}://{parts.netloc}"


def make_env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def new_state(service: EvidenceService) -> UiState:
    config = service.config
    return UiState(service=service, env=make_env(), secret=sessions.load_secret(service.home.server_dir),
                   policy=sessions.SessionPolicy(idle=timedelta(minutes=config.ui_idle_minutes)),
                   tile_origin=tile_origin(config.map_tiles))


__all__ = ["NAV", "NavItem", "UI", "UiState", "content_security_policy", "csrf_token", "error_page", "guard",
           "new_state", "page", "read_session", "render", "role_label", "safe_next", "security_headers", "state",
           "tile_origin", "who"]
