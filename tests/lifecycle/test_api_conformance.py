"""The published API is a contract the running server keeps.

docs/openapi.json is generated from the route table and the typed models (server/api_models.py); here it is
checked as OpenAPI 3.1, then Schemathesis generates requests from it against a real `bwv server` holding
real footage, with a dock token for the upload routes and, for every staff route, the token of a role that
may call it.  It must find no server error, no status the document does not list, and no answer that does
not match its schema.  Bounded (examples per operation, and no stateful phase) to stay within a minute or so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from openbwv.enrol import device_storage
from openbwv.footage import make_synthetic_video
from openbwv.importer import import_video
from openbwv.server import lifecycle
from openbwv.server.api_docs import openapi
from openbwv.server.service import open_metadata
from openbwv.server.users import ROLES

from lifecycle import http_kit

HERE = Path(__file__).resolve().parent
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 40


def test_the_published_document_is_valid_openapi_3_1():
    validate(openapi())


def test_every_request_body_and_identifier_is_described_not_just_named():
    spec = openapi()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    assert "pattern" in p["schema"] or p["schema"]["type"] == "integer", (method, path, p)
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                schema = spec["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]
                assert schema["properties"], (method, path)
    created = [f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m, op in ops.items() if "201" in op["responses"]]
    assert "POST /api/v1/clips/{clip_id}/marks" in created and "POST /tus/" in created
    assert "401" in spec["paths"]["/api/v1/login"]["post"]["responses"]
    tus_patch = spec["paths"]["/tus/{upload_id}"]["patch"]["responses"]
    assert {"412", "413", "415", "422", "423", "460", "503", "507"} <= set(tus_patch)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server holding one real clip (H.264, so it plays), worn by the officer whose token the run uses."""
    root = tmp_path_factory.mktemp("conformance")
    home = http_kit.make_home(root / "home")
    tokens = {"dock": http_kit.add_dock(home, "dock-c")}
    http_kit.enrol(home, "cam-c")
    original = make_synthetic_video(root / "original.mp4", seconds=1, width=160, height=120)
    sealed = import_video(original, device_storage(home, "cam-c"), segment_seconds=1.0,
                          start=datetime.now(timezone.utc) - timedelta(days=1))
    for role in ROLES:
        tokens[role] = http_kit.staff_token(home, f"st-{role.replace('_', '-')}", role)
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            lifecycle.assign_device(conn, "cam-c", "st-officer", 0, None, actor="test:setup",
                                    at="2026-11-25T00:00:00+00:00")
    finally:
        db.close()
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as proc:
        dock = http_kit.TusSession(proc.url, tokens["dock"])
        for info in sealed.segments:
            assert dock.upload(http_kit.kit.Segment(info.path, "cam-c", info.sequence, info.segment_hash.hex(),
                                                   info.preamble.prev_hash.hex())).status == 204
        # Things for the generated requests to find: a mark, a request, an upload left half done, an account.
        first = sealed.segments[0]
        clip = str(sealed.clip_id)
        evidence = http_kit.TusSession(proc.url, tokens["evidence_officer"])
        marked = evidence.request("POST", f"/api/v1/clips/{clip}/marks",
                                  body=json.dumps({"case_ref": "CR-1", "reason": "conformance"}).encode())
        assert marked.status == 201, marked.body
        now = datetime.now(timezone.utc)
        logged = http_kit.TusSession(proc.url, tokens["disclosure_officer"]).request(
            "POST", "/api/v1/requests", body=json.dumps({
                "requester": "A. Person", "description": "stopped in the street",
                "from": (now - timedelta(days=2)).isoformat(), "to": now.isoformat()}).encode())
        assert logged.status == 201, logged.body
        spare = http_kit.kit.DeviceChain(home, "cam-c", root / "spare")
        spare.sequence, spare.prev_hash = sealed.segments[-1].sequence, sealed.segments[-1].segment_hash
        pending = spare.seal(5_000)
        created = dock.create(pending)
        assert created.status == 201, created.body
        http_kit.staff_token(home, "st-spare", "officer")
        known = {"clip_id": clip, "request_id": logged.json()["request"], "segment_hash": first.segment_hash.hex(),
                 "device_id": "cam-c", "sequence": first.sequence, "mark_id": marked.json()["mark"],
                 "upload_id": created.headers["Location"].rsplit("/", 1)[1], "username": "st-spare",
                 "export": 1, "name": "manifest.json"}
        yield home, proc, tokens, known


def test_schemathesis_finds_no_server_error_no_undocumented_status_and_no_stray_answer(server, tmp_path):
    home, proc, tokens, known = server
    doc = openapi()
    for ops in doc["paths"].values():  # the run's copy names what this server holds, so requests get past 404
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["in"] == "path" and p["name"] in known:
                    p["example"] = known[p["name"]]
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(doc))
    # Tokens come from the hooks; Schemathesis must not sign itself up an account of its own.
    (tmp_path / "schemathesis.toml").write_text("[auth]\nauto-signup = false\n")
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks", BWV_CONFORMANCE_TOKENS=json.dumps(tokens),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [SCHEMATHESIS, "run", str(spec), "--url", proc.url, "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
         "--phases", "examples,coverage,fuzzing", "--seed", "11", "--workers", "1", "--request-timeout", "30",
         "--exclude-path", "/api/v1/logout",  # it would revoke the run's own tokens
         "--no-color"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:] + "\n--- server log ---\n" + proc.log()[-3000:]
    health = http_kit.TusSession(proc.url, None).get("/api/v1/health")
    assert health.status == 200  # and it is still serving
