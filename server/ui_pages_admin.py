"""The web application's administration pages: staff accounts and which officer wears which camera.

Each form is read as the API's own request body (api_models: AddUserBody, ChangeUserBody,
AssignBody), so it has the API's limits and messages, and is then done by the function the API
calls (users.add_user, users.change_user, lifecycle.assign_device), with the same audit records.
Administrators only (user.manage, device.manage), as in the API; and no one changes their own
role here either (users.OwnRoleChange: the refusal is on the record).
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any, Mapping

from aiohttp import web

from . import api_models as models
from . import geoindex, lifecycle, users
from .errors import NotFound
from .staff_api import now_iso

ROLE_CHOICES = users.ROLES


def add_account(db: sqlite3.Connection, form: Mapping[str, Any], *, actor: str) -> str:
    given = models.parse(models.AddUserBody, {
        "username": str(form.get("username", "")).strip(), "role": str(form.get("role", "")),
        "password": str(form.get("password", "")), "full_name": str(form.get("full_name", "")).strip() or None})
    users.add_user(db, given.username, given.role, given.password, full_name=given.full_name or "", actor=actor)
    return given.username


def change_account(db: sqlite3.Connection, username: str, form: Mapping[str, Any], *, actor: str) -> None | Exception:
    """One change from the account's row: a new role, a password reset, or (dis)abling.  Returns the
    OwnRoleChange refusal instead of raising it, so that the caller commits its audit record first."""
    doc: dict[str, Any] = {}
    if form.get("role"):
        doc["role"] = str(form["role"])
    if form.get("password"):
        doc["password"] = str(form["password"])
    if form.get("disabled") in ("yes", "no"):
        doc["disabled"] = form["disabled"] == "yes"
    given = models.parse(models.ChangeUserBody, doc)
    if given.role is None and given.password is None and given.disabled is None:
        from .errors import BadRequest
        raise BadRequest("nothing to change: choose a role, type a new password, or disable or enable the account")
    try:
        users.change_user(db, username, actor=actor, role=given.role, password=given.password,
                          disabled=given.disabled)
    except users.OwnRoleChange as e:
        return e
    return None


def assign_camera(db: sqlite3.Connection, form: Mapping[str, Any], *, actor: str) -> int:
    device = str(form.get("device_id", "")).strip()
    from .staff_api import DEVICE_RE
    if not DEVICE_RE.match(device):
        from .errors import BadRequest
        raise BadRequest(f"camera {device[:80]!r} is not 1-64 letters, digits, '.', '_' or '-'")
    start, end = str(form.get("from", "")).strip(), str(form.get("to", "")).strip()
    doc = {"officer": str(form.get("officer", "")).strip(), "from": _utc(start)} | ({"to": _utc(end)} if end else {})
    given = models.parse(models.AssignBody, doc)
    if not any(u["username"] == given.officer for u in users.users(db)):
        raise NotFound(f"no staff account {given.officer!r}")
    return lifecycle.assign_device(db, device, given.officer, geoindex.to_utc_us(given.from_),
                                   geoindex.to_utc_us(given.to) if given.to else None, actor=actor, at=now_iso())


def _utc(text: str) -> str:
    """A browser's date-and-time field has no zone; the form says UTC."""
    return text + "Z" if len(text) in (16, 19) and "T" in text and text[-1].isdigit() else text


# --------------------------------------------------------------------------- pages
def add_routes(router: web.UrlDispatcher) -> None:
    from .ui import pagekit as kit

    item = kit.NavItem("Staff accounts", "/ui/admin/users", "user.manage")
    if item not in kit.NAV:
        kit.NAV.append(item)
    router.add_get("/admin/users", accounts_page)
    router.add_post("/admin/users", add_account_form)
    router.add_post("/admin/users/{username}", change_account_form)
    router.add_post("/admin/assignments", assign_form)
    docks = kit.NavItem("Docks and cameras", "/ui/admin/docks", "device.manage")
    if docks not in kit.NAV:
        kit.NAV.append(docks)
    router.add_get("/admin/docks", docks_page)
    router.add_post("/admin/docks", dock_token_form)


def fleet(service) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The docks (id, since) and the enrolled cameras (id, who wears it now) the admin page lists."""
    from datetime import datetime, timezone

    from openbwv.registry import DeviceRegistry

    from . import geoindex, lifecycle

    wearers = lifecycle.current_wearers(service.db.reader(), geoindex.to_utc_us(datetime.now(timezone.utc)))
    cameras = [(d, wearers.get(d, "")) for d in DeviceRegistry(service.home.registry_dir).devices()]
    return service.db.docks(), cameras


async def docks_page(request: web.Request, *, token: tuple[str, str] | None = None) -> web.Response:
    from .ui import pagekit as kit

    ui = kit.state(request)
    docks, cameras = await asyncio.to_thread(fleet, ui.service)
    return kit.render(request, "admin_docks.html", title="Docks and cameras", docks=docks, cameras=cameras,
                      token=token)


async def dock_token_form(request: web.Request) -> web.Response:
    """Add a dock, or give an existing one a new token (the old one stops working at once).  The token is
    shown on this one answer only (no-store), as `bwv` prints it once, and the issue is audited."""
    from .auth import DockTokens
    from .ui import pagekit as kit

    ui, p = kit.state(request), kit.who(request)
    dock_id = str(request["form"].get("dock_id", "")).strip()
    known = {d for d, _ in await asyncio.to_thread(ui.service.db.docks)}
    token = await asyncio.to_thread(DockTokens(ui.service.db).add_dock, dock_id, rotate=dock_id in known)
    await asyncio.to_thread(ui.service.audit, p.actor, "token_issued", f"dock:{dock_id}",
                            {"rotated": dock_id in known, "via": "web"})
    return await docks_page(request, token=(dock_id, token))


async def accounts_page(request: web.Request) -> web.Response:
    from .ui import pagekit as kit

    ui = kit.state(request)
    listed = await asyncio.to_thread(lambda: users.users(ui.service.db.reader()))
    return kit.render(request, "admin_users.html", title="Staff accounts", accounts=listed, roles=ROLE_CHOICES,
                      done=request.query.get("done", ""), me=kit.who(request).name)


async def _write(request: web.Request, fn) -> Any:
    from .ui import pagekit as kit

    ui = kit.state(request)

    def run():
        with ui.service.db.transaction() as db:
            return fn(db)
    return await asyncio.to_thread(run)


async def add_account_form(request: web.Request) -> web.StreamResponse:
    from .ui import pagekit as kit

    actor, form = kit.who(request).actor, request["form"]
    name = await _write(request, lambda db: add_account(db, form, actor=actor))
    raise web.HTTPSeeOther(f"/ui/admin/users?done=added+{name}")


async def change_account_form(request: web.Request) -> web.StreamResponse:
    from .ui import pagekit as kit

    actor, form, username = kit.who(request).actor, request["form"], request.match_info["username"]
    refused = await _write(request, lambda db: change_account(db, username, form, actor=actor))
    if refused is not None:
        raise refused
    raise web.HTTPSeeOther(f"/ui/admin/users?done=changed+{username}")


async def assign_form(request: web.Request) -> web.StreamResponse:
    from .ui import pagekit as kit

    actor, form = kit.who(request).actor, request["form"]
    await _write(request, lambda db: assign_camera(db, form, actor=actor))
    raise web.HTTPSeeOther("/ui/admin/users?done=camera+assigned")


accounts_page.ui_permission = "user.manage"  # type: ignore[attr-defined]
add_account_form.ui_permission = "user.manage"  # type: ignore[attr-defined]
change_account_form.ui_permission = "user.manage"  # type: ignore[attr-defined]
assign_form.ui_permission = "device.manage"  # type: ignore[attr-defined]
docks_page.ui_permission = dock_token_form.ui_permission = "device.manage"  # type: ignore[attr-defined]

__all__ = ["add_account", "add_routes", "assign_camera", "change_account"]
