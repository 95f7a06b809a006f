"""The pages every staff member meets: sign-in, sign-out, and the start page that says what their
role lets them do."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .. import audit, users
from . import session as sessions
from .pagekit import NAV, csrf_token, page, render, safe_next, state, who

# What each role is for, in words for the person holding it (the start page).
ROLE_DUTIES = {
    users.OFFICER: "You can find and watch footage from cameras assigned to you.",
    users.SUPERVISOR: "You can find and watch all footage, see what is due for deletion and mark clips as "
                      "evidence before they are deleted.",
    users.EVIDENCE_OFFICER: "You can find and watch all footage, mark and unmark evidence, change retention "
                            "categories and run deletion sweeps.",
    users.DISCLOSURE_OFFICER: "You can find and watch footage and handle requests from the public for footage "
                              "of themselves.",
    users.AUDITOR: "You can search and export the audit trail and check that it has not been altered.",
    users.ADMIN: "You can manage staff accounts, docks and cameras. You cannot see footage.",
}


@page(None, signed_in=False)
async def signin_form(request: web.Request) -> web.Response:
    if request.get("principal") is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")))
    return render(request, "signin.html", title="Sign in", next=safe_next(request.query.get("next")), error=None,
                  username="")


@page(None, signed_in=False)
async def signin(request: web.Request) -> web.StreamResponse:
    ui = state(request)
    form = request["form"]
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    target = safe_next(str(form.get("next", "")))
    brought = request.cookies.get(sessions.SESSION_COOKIE)

    def attempt():
        with ui.service.db.transaction() as db:
            try:
                return sessions.sign_in(db, username, password, ui.policy, brought=brought,
                                        audit_failure=ui.service.login_failure_gate(db))
            except users.LoginFailed as e:
                return e  # the failure count and its audit record commit; then refuse
    result = await asyncio.to_thread(attempt)
    if isinstance(result, users.LoginFailed):
        request.pop("principal", None)
        request.pop("ui_token", None)
        message = ("That account is locked after too many failed attempts. Try again later or ask an administrator."
                   if "locked" in result.reason else "The user name or password is not right.")
        return render(request, "signin.html", status=401, title="Sign in", next=target, error=message,
                      username=username)
    token, _principal = result
    response = web.HTTPSeeOther(target)
    response.set_cookie(sessions.SESSION_COOKIE, token, path=sessions.COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=request.secure)
    response.del_cookie(sessions.PRESESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response


@page(None)
async def signout(request: web.Request) -> web.StreamResponse:
    ui = state(request)
    token, p = request["ui_token"], who(request)

    def run():
        with ui.service.db.transaction() as db:
            users.revoke_token(db, token)
            audit.append(db, actor=p.actor, action="logout", target="session")
    await asyncio.to_thread(run)
    response = web.HTTPSeeOther("/ui/signin?signed_out=1")
    response.del_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response


@page(None)
async def home(request: web.Request) -> web.Response:
    p = who(request)
    return render(request, "home.html", title="Start", duty=ROLE_DUTIES.get(p.role, ""),
                  links=[item for item in NAV if p.may(item.permission)])


@page(None, signed_in=False)
async def not_found(request: web.Request) -> web.Response:
    return render(request, "error.html", status=404, title="Not found", heading="Not found",
                  message="There is no page at this address. Use the menu to find what you need.")


__all__ = ["home", "not_found", "signin", "signin_form", "signout", "csrf_token"]
