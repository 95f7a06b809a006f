"""Every endpoint called as every role against a real server: what is forbidden gets 403 and an audit record,
what is allowed is never refused for who is asking; the published table says the same."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from openbwv.server import audit, lifecycle
from openbwv.server.api_docs import access_matrix, openapi_text
from openbwv.server.routes import ROUTES
from openbwv.server.service import open_metadata
from openbwv.server.users import DOCK, PERMISSIONS, ROLES

from lifecycle import http_kit as server_kit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A running server holding one uploaded segment; a dock token and an account per role."""
    root = tmp_path_factory.mktemp("matrix")
    home = server_kit.make_home(root / "home")
    dock_token = server_kit.add_dock(home, "dock-m")
    server_kit.enrol(home, "cam-m")
    chain = server_kit.DeviceChain(home, "cam-m", root / "sealed")
    seg = chain.seal(20_000)
    with server_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        dock = server_kit.TusSession(server.url, dock_token)
        assert dock.upload(seg).status == 204
        # The officer of the matrix wore the camera: own-footage routes are theirs to call.
        server_kit.staff_token(home, "pc-owner", "officer")
        db = open_metadata(home)
        try:
            with db.transaction() as conn:
                lifecycle.assign_device(conn, "cam-m", "pc-owner", 0, None, actor="test:setup",
                                        at="2026-11-25T00:00:00+00:00")
        finally:
            db.close()
        yield home, server, dock, seg


def fill(path: str, seg) -> str:
    db_clip = _clip_of(seg)
    filled = (path.replace("{clip_id}", db_clip).replace("{request_id}", "SAR-2026-00001")
              .replace("{mark_id}", "1").replace("{upload_id}", "0" * 32).replace("{device_id}", seg.device_id)
              .replace("{sequence}", str(seg.sequence)).replace("{segment_hash}", seg.segment_hash)
              .replace("{username}", "nobody-here").replace("{export}", "1").replace("{name}", "manifest.json"))
    assert "{" not in filled, f"the matrix does not know how to fill {path}: teach fill() its parameter"
    return filled


_clips: dict[str, str] = {}


def _clip_of(seg) -> str:
    return _clips[seg.segment_hash]


def test_every_route_as_every_role(world):
    home, server, dock, seg = world
    db = open_metadata(home)
    try:
        _clips[seg.segment_hash] = db.segment(seg.segment_hash).clip_id
    finally:
        db.close()
    checked = 0
    for route in ROUTES:
        if route.permission is None:
            continue
        for role in (DOCK, *ROLES):
            if role == DOCK:
                session = dock
            else:
                name = "pc-owner" if role == "officer" else f"{role.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
                session = server_kit.TusSession(server.url, server_kit.staff_token(home, name, role))
            path = fill(route.path, seg)
            headers = session.headers()
            body = b"{}" if route.method in ("POST", "PUT", "PATCH") and not path.startswith("/tus") else b""
            reply = session.request(route.method, path, headers=headers, body=body)
            allowed = role in PERMISSIONS[route.permission]
            who = f"{route.method} {route.path} as {role}"
            if allowed:
                assert reply.status not in (401, 403), f"{who} was refused: {reply.status} {reply.body[:200]!r}"
            else:
                assert reply.status == 403, f"{who} gave {reply.status}, not 403: {reply.body[:200]!r}"
                assert "may not" in (reply.headers.get("Bwv-Error") or "")
            checked += 1
    assert checked == sum(1 for r in ROUTES if r.permission) * (1 + len(ROLES))

    db = open_metadata(home)
    try:
        denials = audit.query(db.reader(), action="access_denied", limit=100_000)
    finally:
        db.close()
    refused = {(r.target, r.actor.split(":")[0]) for r in denials}
    for route in ROUTES:
        if route.permission is None:
            continue
        for role in (DOCK, *ROLES):
            if role not in PERMISSIONS[route.permission]:
                target = f"{route.method} {fill(route.path, seg)}"
                kind = "dock" if role == DOCK else "user"
                assert (target, kind) in refused, f"no audit record of {target} refused to a {role}"


def test_a_request_without_a_token_gets_401_and_is_audited(world):
    home, server, _dock, _seg = world
    anonymous = server_kit.TusSession(server.url, "")
    reply = anonymous.request("GET", "/api/v1/audit", headers={})
    assert reply.status == 401
    db = open_metadata(home)
    try:
        (last,) = [r for r in audit.query(db.reader(), action="access_denied", actor="anonymous", limit=100_000)
                   if r.target == "GET /api/v1/audit"][-1:]
        assert last.outcome == "denied"
    finally:
        db.close()


def test_an_officer_sees_only_footage_from_a_device_assigned_to_them(world):
    home, server, _dock, seg = world
    clip = _clips.get(seg.segment_hash) or open_metadata(home).segment(seg.segment_hash).clip_id
    mine = server_kit.TusSession(server.url, server_kit.staff_token(home, "pc-mine", "officer"))
    theirs = server_kit.TusSession(server.url, server_kit.staff_token(home, "pc-theirs", "officer"))
    admin = server_kit.TusSession(server.url, server_kit.staff_token(home, "root-admin", "admin"))
    assign = admin.request("POST", f"/api/v1/devices/{seg.device_id}/assignments", body=json.dumps(
        {"officer": "pc-mine", "from": "2023-01-01T00:00:00Z"}).encode())
    assert assign.status == 201, assign.body
    assert mine.get(f"/api/v1/clips/{clip}").status == 200
    refused = theirs.get(f"/api/v1/clips/{clip}")
    assert refused.status == 403 and "assigned to them" in refused.json()["error"]
    listing = theirs.get("/api/v1/clips?from=2023-01-01T00:00:00Z&to=2030-01-01T00:00:00Z")
    assert listing.status == 200 and listing.json()["clips"] == []


def test_the_published_table_and_openapi_are_what_the_code_enforces():
    assert (REPO / "docs" / "access-control.md").read_text() == access_matrix(), \
        "docs/access-control.md is stale: run `bwv server api-docs`"
    assert (REPO / "docs" / "openapi.json").read_text() == openapi_text(), \
        "docs/openapi.json is stale: run `bwv server api-docs`"
    spec = json.loads(openapi_text())
    assert sum(len(ops) for ops in spec["paths"].values()) == len(ROUTES)
