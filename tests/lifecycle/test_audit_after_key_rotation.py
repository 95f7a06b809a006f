"""The audit trail still verifies after the server's keys are rotated (`bwv keys server --force-new`).

A checkpoint names the key that signed it; one signed before the rotation verifies only with the key
set aside in keys.old-<time>.  Every verifier of the trail (the command, the staff API, the web page)
is given all the keys the installation ever had, not the current one alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lifecycle import http_kit
from openbwv.server import audit
from openbwv.server.service import open_metadata

BWV = str(Path(sys.executable).with_name("bwv"))


def bwv(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BWV, *args], env=dict(os.environ, BWV_HOME=str(home.root)), capture_output=True,
                          text=True, timeout=120)


def append(home, n: int, label: str) -> None:
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            for i in range(n):
                audit.append(conn, actor="test:setup", action="view", target=f"clip:{label}-{i}")
    finally:
        db.close()


def test_checkpoints_signed_before_and_after_a_rotation_all_verify(tmp_path):
    home = http_kit.make_home(tmp_path / "home")
    append(home, 5, "before")
    assert bwv(home, "audit", "checkpoint").returncode == 0
    rotated = bwv(home, "keys", "server", "--force-new")
    assert rotated.returncode == 0, rotated.stderr
    assert len(list(home.server_dir.glob("keys.old-*"))) == 1
    append(home, 5, "after")
    assert bwv(home, "audit", "checkpoint").returncode == 0
    checkpoints = audit.read_checkpoint_file(home.server_dir / "audit-checkpoints.jsonl")
    assert len({cp.key_id for cp in checkpoints}) == 2  # one signed by each key

    verified = bwv(home, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verified: intact" in verified.stdout

    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        auditor = http_kit.TusSession(server.url, http_kit.staff_token(home, "aud-1", "auditor"))
        reply = auditor.get("/api/v1/audit/verify")
        assert reply.status == 200, reply.body
        assert json.loads(reply.body)["ok"] is True


def test_a_checkpoint_signed_by_a_key_the_installation_never_had_is_still_refused(tmp_path):
    home = http_kit.make_home(tmp_path / "home")
    append(home, 3, "x")
    assert bwv(home, "audit", "checkpoint").returncode == 0
    # The old keys are removed (not kept as a rotation keeps them): the first checkpoint now names a
    # key nobody can produce, and verification must say so rather than pass.
    rotated = bwv(home, "keys", "server", "--force-new")
    assert rotated.returncode == 0, rotated.stderr
    for folder in home.server_dir.glob("keys.old-*"):
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    verified = bwv(home, "audit", "verify")
    assert verified.returncode == 1
    assert "NOT INTACT" in verified.stdout
