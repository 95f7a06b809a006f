"""An auditor takes the audit trail away over HTTP: the records as JSON lines (what `bwv audit export`
writes) and the signed checkpoints, and checks one against the other without the server's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle import http_kit
from openbwv.sealed.keys import ServerPublicKey
from openbwv.server import audit
from openbwv.server.service import open_metadata
from openbwv.server.staff_api import AUDIT_PAGE

BWV = str(Path(sys.executable).with_name("bwv"))
FILLER = AUDIT_PAGE + 200  # more records than one page of the export reads: the export must page


def bwv(home, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([BWV, *args], env=dict(os.environ, BWV_HOME=str(home.root)), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A server whose log holds an upload, refusals, and more records than a page; a signed checkpoint;
    an auditor and an admin."""
    root = tmp_path_factory.mktemp("http-audit")
    home = http_kit.make_home(root / "home")
    dock_token = http_kit.add_dock(home, "dock-a")
    http_kit.enrol(home, "cam-a")
    seg = http_kit.DeviceChain(home, "cam-a", root / "sealed").seal(10_000)
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            for n in range(FILLER):
                audit.append(conn, actor="test:setup", action="view", target=f"clip:filler-{n}")
    finally:
        db.close()
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        assert http_kit.TusSession(server.url, dock_token).upload(seg).status == 204
        auditor = http_kit.TusSession(server.url, http_kit.staff_token(home, "aud-1", "auditor"))
        admin = http_kit.TusSession(server.url, http_kit.staff_token(home, "adm-1", "admin"))
        assert admin.get("/api/v1/audit").status == 403  # a refusal on the record
        bwv(home, "audit", "checkpoint")
        yield home, server, auditor, admin


def lines_of(reply) -> list[str]:
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/x-ndjson")
    text = reply.body.decode("utf-8")
    assert text == "" or text.endswith("\n")  # every line ends: a cut-off export is told by its last line
    return text.splitlines()


def public_key(home):
    return ServerPublicKey.load(home.server_public_key).receipt_verifier()


def test_an_auditor_exports_the_whole_log_and_it_verifies_against_the_signed_checkpoints(world):
    home, _server, auditor, _admin = world
    checkpoints = [audit.Checkpoint.from_json(line) for line in lines_of(auditor.get("/api/v1/audit/checkpoints"))]
    reply = auditor.get("/api/v1/audit/export")
    exported = lines_of(reply)

    assert len(exported) == int(reply.headers["Bwv-Audit-Head"]) > FILLER  # paged, and complete
    assert [json.loads(line)["seq"] for line in exported] == list(range(1, len(exported) + 1))
    report = audit.verify_export(exported, public_key(home), external=checkpoints)
    assert report.ok, report.summary()
    assert checkpoints and all(cp.size <= len(exported) for cp in checkpoints)


def test_the_http_export_is_line_for_line_what_bwv_audit_export_writes(world, tmp_path):
    home, _server, auditor, _admin = world
    exported = lines_of(auditor.get("/api/v1/audit/export"))
    out = tmp_path / "cli.jsonl"
    bwv(home, "audit", "export", "--out", str(out))
    from_shell = out.read_text().splitlines()
    assert from_shell[: len(exported)] == exported  # the shell's export is later: it holds a few more


def test_the_export_takes_the_filters_of_bwv_audit_export(world):
    home, _server, auditor, _admin = world
    denied = lines_of(auditor.get("/api/v1/audit/export?action=access_denied&actor=user:adm-1"))
    assert denied and all('"action":"access_denied"' in line and '"actor":"user:adm-1"' in line for line in denied)
    assert audit.verify_export(denied, public_key(home), excerpt=True).ok
    after = lines_of(auditor.get(f"/api/v1/audit/export?after={FILLER}&action=view&actor=test:setup"))
    assert after == []  # the filler is records 1..FILLER


def test_malformed_filters_are_refused_before_anything_is_sent(world):
    _home, _server, auditor, _admin = world
    for query, says in (("action=tea", "action"), ("since=yesterday", "since"), ("after=-1", "after")):
        reply = auditor.get(f"/api/v1/audit/export?{query}")
        assert reply.status == 400 and says in reply.json()["error"], (query, reply.body)


def test_every_export_is_itself_an_audit_record(world):
    home, _server, auditor, _admin = world
    reply = auditor.get("/api/v1/audit/export?action=upload")
    n = len(lines_of(reply))
    db = open_metadata(home)
    try:
        mine = audit.query(db.reader(), actor="user:aud-1", action="export", target="audit", limit=100_000)
    finally:
        db.close()
    last = mine[-1].details
    assert last["records"] == n == 1 and last["filters"] == {"action": "upload"} and last["via"] == "http"
    assert last["through"] == int(reply.headers["Bwv-Audit-Head"])
    assert mine[-1].outcome == "ok"


def test_checkpoints_come_in_the_format_bwv_audit_verify_reads_and_can_be_fetched_incrementally(world, tmp_path):
    home, _server, auditor, _admin = world
    text = auditor.get("/api/v1/audit/checkpoints").body.decode()
    kept = tmp_path / "offsite-checkpoints.jsonl"
    kept.write_text(text)
    assert [cp.to_json() for cp in audit.read_checkpoint_file(kept)] == text.splitlines()
    assert "verified: intact" in bwv(home, "audit", "verify", "--checkpoints", str(kept)).stdout
    newest = audit.Checkpoint.from_json(text.splitlines()[-1])
    assert lines_of(auditor.get(f"/api/v1/audit/checkpoints?after={newest.size}")) == []


def test_only_an_auditor_may_take_the_audit_trail_away(world):
    _home, _server, _auditor, admin = world
    for path in ("/api/v1/audit/export", "/api/v1/audit/checkpoints"):
        reply = admin.get(path)
        assert reply.status == 403 and "audit.read" in reply.json()["error"]
