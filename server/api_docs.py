"""The published description of the HTTP API, generated from routes.py so it cannot drift.

`openapi()` is an OpenAPI 3.1 document of every route (with its permission
and roles in ``x-openbwv-permission`` / ``x-openbwv-roles``);
`access_matrix()` is docs/access-control.md, endpoint x role.  `bwv server
api-docs` writes both into docs/; a test fails if the files in the
repository differ from what the code would write.
"""

from __future__ import annotations

import json
import re

from .. import __version__
from .routes import ROUTES, Route
from .users import DOCK, PERMISSIONS, ROLES

_PATH_PARAM = re.compile(r"{(\w+)}")

_ERRORS = {
    "400": "malformed or out-of-range input; the body says what",
    "401": "no token, or an unknown, expired or revoked one (audited)",
    "403": "the caller's role may not do this (audited)",
    "404": "no such thing held here",
    "409": "conflicts with what is held (deleted clip, closed request, fork)",
}


def _success(route: Route) -> dict:
    ok: dict = {"description": "success (201 for what is created)"}
    if route.produces != "application/json":  # a file or a stream, not a JSON document
        ok["content"] = {route.produces: {"schema": {"type": "string", "format": "binary"}}}
    return ok


def _operation(route: Route) -> dict:
    op: dict = {
        "summary": route.summary,
        "operationId": route.handler.replace(".", "_") + "_" + route.method.lower(),
        "x-openbwv-permission": route.permission or "public",
        "x-openbwv-roles": list(route.roles()),
        "responses": {"200": _success(route),
                      **{code: {"description": text, "content": {"application/json": {"schema": {
                          "$ref": "#/components/schemas/Error"}}}} for code, text in _ERRORS.items()
                         if route.permission is not None or code not in ("401", "403")}},
    }
    if route.own_footage:
        op["description"] = "An officer may call this only for clips recorded on a device assigned to them."
    params = []
    declared = {p.name for p in route.params}
    for name in _PATH_PARAM.findall(route.path):
        if name not in declared:
            params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
    for p in route.params:
        params.append({"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                       "description": p.description, "schema": {"type": p.type}})
    if params:
        op["parameters"] = params
    if route.body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "description": f"fields: {route.body}"}}}}
    if route.permission is not None:
        op["security"] = [{"bearer": []}]
    return op


def openapi() -> dict:
    paths: dict[str, dict] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpenBWV evidence server", "version": __version__,
                 "description": "Uploads from docks (tus 1.0, docs/upload-protocol.md) and the staff API: "
                                "footage, retention, subject access requests, audit, accounts. Every "
                                "operation names the permission it needs and the roles holding it; every "
                                "refusal is audited."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a dock token (bwvd_...) or a user token (bwvu_..., "
                                                          "from POST /api/v1/login)"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
        },
        "paths": paths,
    }


def openapi_text() -> str:
    return json.dumps(openapi(), indent=2, sort_keys=False) + "\n"


def access_matrix() -> str:
    """docs/access-control.md: every endpoint x every role."""
    columns = [DOCK, *ROLES]
    lines = [
        "# Access control: every endpoint x every role",
        "",
        "Generated from `server/routes.py` by `bwv server api-docs`; a test keeps this file equal to what the",
        "code enforces, and calls every row as every role (tests/lifecycle/test_role_matrix.py).",
        "",
        "`yes` = allowed; `own` = an officer, only for clips from a device assigned to them at the time;",
        "`-` = 403 Forbidden, and the refusal is written to the audit trail. Public rows need no token.",
        "",
        "| Method | Path | Permission | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for route in ROUTES:
        if route.permission is None:
            cells = ["public"] * len(columns)
        else:
            allowed = PERMISSIONS[route.permission]
            cells = [("own" if route.own_footage and role == "officer" else "yes") if role in allowed else "-"
                     for role in columns]
        lines.append(f"| {route.method} | `{route.path}` | {route.permission or 'public'} | " + " | ".join(cells)
                     + " |")
    lines += [
        "",
        "Roles: **dock** (a dock token: uploads and receipts), **officer** (own footage, read only),",
        "**supervisor** (all footage, the due list and the sweep's dry run, may mark evidence),",
        "**evidence_officer** (marks, categories, tracks, evidential exports of marked clips, running the",
        "sweep), **disclosure_officer** (subject access requests and their redacted exports), **auditor**",
        "(the audit trail, its export and signed checkpoints; no footage), **admin** (accounts and devices,",
        "no footage; never their own role).",
        "",
        "The same actions are available to the server's operator on its shell (`bwv retention`,",
        "`bwv request`, `bwv audit`, `bwv user`), audited as `local:<unix user>`.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["access_matrix", "openapi", "openapi_text"]
