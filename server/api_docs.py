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

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from . import api_models as models
from .routes import ROUTES, Route
from .users import DOCK, PERMISSIONS, ROLES

_PATH_PARAM = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{model}"

# Why each error status is sent, for the routes that can send it (route.also adds the rest).
_ERRORS = {
    400: "malformed or out-of-range input; the body says which field and what is wrong",
    401: "no token, or an unknown, expired or revoked one (audited)",
    403: "the caller's role may not do this (audited)",
    404: "no such thing held here",
    413: "the JSON body is over 64 KiB",
}


def _models() -> tuple[list[type[BaseModel]], list[type[BaseModel]]]:
    """The request and answer models the routes name, each once, in the table's order."""
    bodies: dict[str, type[BaseModel]] = {}
    answers: dict[str, type[BaseModel]] = {"Error": models.Error}
    for route in ROUTES:
        if route.body is not None:
            bodies.setdefault(route.body.__name__, route.body)
        for model in (route.answer, *(_answer_of(v) for v in route.also.values())):
            if model is not None:
                answers.setdefault(model.__name__, model)
    return list(bodies.values()), list(answers.values())


def _answer_of(also: str | tuple[str, type[BaseModel]]) -> type[BaseModel] | None:
    return also[1] if isinstance(also, tuple) else None


def _schemas() -> dict:
    """components/schemas: the JSON Schema of every model, as pydantic writes it (validation for what the
    server reads, serialisation for what it sends)."""
    bodies, answers = _models()
    _, doc = models_json_schema([(b, "validation") for b in bodies] + [(a, "serialization") for a in answers],
                                ref_template=_REF, by_alias=True)
    return doc.get("$defs", {})


def _json(model: type[BaseModel] | None) -> dict:
    return {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)} if model else
                                 {"type": "object"}}}


def _responses(route: Route) -> dict:
    ok: dict = {"description": "success" if route.status != 201 else "created"}
    if route.produces != "application/json":  # a file or a stream, not a JSON document
        media = (route.produces,) if isinstance(route.produces, str) else route.produces
        ok["content"] = {kind: {"schema": {"type": "object", "description": "the export's signed manifest"}
                                if kind == "application/json" else {"type": "string", "format": "binary"}}
                         for kind in media}
    elif route.answer is not None and route.method != "HEAD":
        ok["content"] = _json(route.answer)
    statuses: dict[int, dict] = {route.status: ok}
    has_path = bool(_PATH_PARAM.search(route.path))
    errors = {400: bool(route.params or route.body), 401: route.permission is not None,
              403: route.permission is not None, 404: has_path,
              413: route.body is not None and route.body_type == "application/json"}
    for code, sent in errors.items():
        if sent:
            statuses[code] = {"description": _ERRORS[code]}
    for code, also in route.also.items():
        statuses[code] = {"description": also[0] if isinstance(also, tuple) else also}
        if code < 300 and "content" in ok:  # another success (206: part of the same file)
            statuses[code]["content"] = ok["content"]
        if isinstance(also, tuple):
            statuses[code]["content"] = _json(also[1])
    for code, answer in statuses.items():
        if code >= 400 and route.method != "HEAD":  # every refusal is {"error": reason}; a HEAD has no body
            answer["content"] = _json(models.Error)
    return {str(code): statuses[code] for code in sorted(statuses)}


def _operation(route: Route) -> dict:
    op: dict = {
        "summary": route.summary,
        "operationId": route.handler.replace(".", "_") + "_" + route.method.lower(),
        "x-openbwv-permission": route.permission or "public",
        "x-openbwv-roles": list(route.roles()),
        "responses": _responses(route),
    }
    if route.own_footage:
        op["description"] = "An officer may call this only for clips recorded on a device assigned to them."
    declared = {p.name for p in route.params}
    missing = [name for name in _PATH_PARAM.findall(route.path) if name not in declared]
    if missing:
        raise ValueError(f"{route.method} {route.path} does not describe its path parameter(s) {missing}")
    params = [{"name": p.name, "in": p.where, "required": p.required or p.where == "path",
               "description": p.description, "schema": dict(p.schema)} for p in route.params]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": _json(route.body)}
    elif route.body_type != "application/json":
        op["requestBody"] = {"required": True, "content": {route.body_type: {
            "schema": {"type": "string", "format": "binary"}}}}
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
                                "refusal is audited. Request and answer bodies are the models of "
                                "server/api_models.py, which the server checks input with."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a dock token (bwvd_...) or a user token (bwvu_..., "
                                                          "from POST /api/v1/login)"}},
            "schemas": _schemas(),
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
