"""The staff web application, served by `bwv server` under /ui/ (docs/web-app.md).

HTML pages from Jinja2 templates (templates/), scripts and styles from this
server only (static/, with the vendored Leaflet), every page declared with
the permission of users.PERMISSIONS it needs (web.page).  The pages call the
same lifecycle, audit and service functions as the JSON API (staff_api.py),
so the web application refuses what the API refuses.
"""

from __future__ import annotations

from aiohttp import web

from ..service import EvidenceService
from . import pages
from .pagekit import STATIC, UI, guard, new_state, security_headers


def build_ui(service: EvidenceService) -> web.Application:
    """The /ui/ sub-application; app.py mounts it and adds `security_headers` to every /ui response."""
    ui = web.Application(middlewares=[guard])
    ui[UI] = new_state(service)
    r = ui.router
    r.add_get("/", pages.home)
    r.add_get("/signin", pages.signin_form)
    r.add_post("/signin", pages.signin)
    r.add_post("/signout", pages.signout)
    for module in _page_modules():
        module.add_routes(r)
    r.add_static("/static/", STATIC, follow_symlinks=False)
    r.add_route("*", "/{tail:.*}", pages.not_found)
    return ui


def _page_modules() -> list:
    """The feature pages (footage, clip, retention, audit, admin ...), each a module with add_routes."""
    from .. import (ui_pages_admin, ui_pages_audit, ui_pages_clip, ui_pages_faces, ui_pages_footage, ui_pages_public,
                    ui_pages_redaction, ui_pages_requests, ui_pages_retention)

    return [ui_pages_footage, ui_pages_clip, ui_pages_retention, ui_pages_requests, ui_pages_redaction,
            ui_pages_faces, ui_pages_audit, ui_pages_admin, ui_pages_public]


__all__ = ["build_ui", "security_headers"]
