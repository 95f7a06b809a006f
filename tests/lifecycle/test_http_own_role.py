"""No one changes their own role: an admin who could would give themselves any role's powers (footage,
exports) and change back, or demote the force's last admin by mistake.  The refusal is 403, says why,
and is on the record; another admin, or the operator on the server's shell, can make the change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle import http_kit
from openbwv.server import audit
from openbwv.server.service import open_metadata

BWV = str(Path(sys.executable).with_name("bwv"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = http_kit.make_home(tmp_path_factory.mktemp("http-own-role") / "home")
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        first = http_kit.TusSession(server.url, http_kit.staff_token(home, "adm-one", "admin"))
        second = http_kit.TusSession(server.url, http_kit.staff_token(home, "adm-two", "admin"))
        yield home, first, second


def patch(session, username: str, doc: dict):
    return session.request("PATCH", f"/api/v1/users/{username}", body=json.dumps(doc).encode())


def role_of(session, username: str) -> str:
    (user,) = [u for u in session.get("/api/v1/users").json()["users"] if u["username"] == username]
    return user["role"]


def test_an_admin_may_not_change_their_own_role(world):
    _home, first, _second = world
    reply = patch(first, "adm-one", {"role": "evidence_officer"})
    assert reply.status == 403
    assert reply.json()["error"] == ("user:adm-one may not change their own role (admin -> evidence_officer): "
                                     "another admin must do it, or the server's operator with `bwv user set`")
    assert role_of(first, "adm-one") == "admin"
    assert first.get("/api/v1/whoami").json()["role"] == "admin"  # and their session goes on


def test_the_refusal_is_on_the_record(world):
    home, first, _second = world
    patch(first, "adm-one", {"role": "auditor"})
    db = open_metadata(home)
    try:
        refused = audit.query(db.reader(), action="user_changed", target="user:adm-one", outcome="denied")
    finally:
        db.close()
    assert refused and refused[-1].actor == "user:adm-one"
    assert refused[-1].details["role"] == "auditor" and "own role" in refused[-1].details["why"]


def test_an_admin_may_still_reset_their_own_password(world):
    _home, first, _second = world
    assert patch(first, "adm-one", {"password": "a brand new passphrase"}).status == 200
    # A reset password may have been known to someone else: the sessions it opened end with it.
    assert first.get("/api/v1/whoami").status == 401
    login = http_kit.TusSession(first.url, None).request(
        "POST", "/api/v1/login", body=json.dumps({"username": "adm-one", "password": "a brand new passphrase"}).encode())
    assert login.status == 200 and login.json()["role"] == "admin"
    first.token = login.json()["token"]


def test_another_admin_may_change_it(world):
    _home, first, second = world
    assert patch(second, "adm-one", {"role": "auditor"}).status == 200
    assert role_of(second, "adm-one") == "auditor"
    assert first.get("/api/v1/whoami").status == 401  # a changed role ends the sessions of the old one


def test_the_operator_on_the_servers_shell_may_change_anyones_role(world):
    home, _first, second = world
    done = subprocess.run([BWV, "user", "set", "adm-two", "--role", "supervisor"],
                          env=dict(os.environ, BWV_HOME=str(home.root)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert second.get("/api/v1/whoami").status == 401
