"""`bwv server migrate` as an operator runs it: killed at random points and run again until it finishes, the
reconciliation matches, and `bwv verify --held` and `bwv audit verify` pass on the node it prepared."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from s3.migration_kit import build, snapshot
from openbwv.server.db import MetadataStore

BWV = str(Path(sys.executable).with_name("bwv"))


@pytest.fixture(scope="module")
def installation(tmp_path_factory):
    return build(tmp_path_factory.mktemp("embedded") / "home", segments=8)


def env(rgw) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), **rgw.env()}


def argv(inst, db_url: str, blobs_url: str, *extra: str) -> list[str]:
    return [BWV, "server", "migrate", "--from", f"sqlite://{inst.database}", "--to", db_url, "--blobs", blobs_url,
            "--batch", "2", *extra]


def run_until_killed(command: list[str], environment: dict[str, str], after_lines: int) -> int | None:
    """Run the migration and SIGKILL it once it has printed `after_lines` progress lines; its exit status if it
    finished first, None if it was killed."""
    proc = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    try:
        for line in proc.stderr:
            if line.startswith("  "):
                seen += 1
                if seen >= after_lines:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    return None
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stderr.close()


def test_a_migration_killed_at_random_points_and_run_again_ends_reconciled_and_verifiable(
        installation, pg, rgw, bucket, tmp_path):
    before = snapshot(installation.home)
    db_url, blobs_url = pg.new_database(), rgw.blobs_url(bucket)
    node = tmp_path / "node"
    command = argv(installation, db_url, blobs_url, "--to-home", str(node))
    rng = random.Random(12)
    kills = 0
    for _ in range(5):  # blobs, then rows: the kills land somewhere in both
        if run_until_killed(command, env(rgw), rng.randint(2, 14)) is None:
            kills += 1
    assert kills >= 4, "the migration finished before it could be killed: give it more to copy"

    done = subprocess.run(command, env=env(rgw), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming the migration a previous run began" in done.stderr
    lines = done.stdout.splitlines()
    table = {line.split()[0]: line for line in lines if line.endswith((" ok", "DIFFERS"))}
    assert {"segments", "tombstones", "subject_requests", "sar_holds", "audit_log", "blobs"} <= set(table)
    assert all(line.endswith(" ok") for line in table.values()), done.stdout
    assert any(line.endswith("every line matches") for line in lines)
    assert snapshot(installation.home) == before, "the migration changed its source"

    dest = MetadataStore(db_url)
    try:  # each row and blob once, whatever the kills interrupted
        r = dest.reader()
        assert r.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == len(installation.held)
        assert r.execute("SELECT COUNT(*) FROM migration_blobs").fetchone()[0] == len(installation.held)
        assert r.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'migrate'").fetchone()[0] == 1
    finally:
        dest.close()

    exports = installation.home / "server" / "exports"
    exported = sorted(p.relative_to(installation.home) for p in exports.rglob("*.json"))
    assert exported and all((node / p).is_file() for p in exported)  # where the node's sweep will find them

    node_env = {**env(rgw), "BWV_HOME": str(node)}
    verify = subprocess.run([BWV, "verify", "--held"], env=node_env, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    audit = subprocess.run([BWV, "audit", "verify"], env=node_env, capture_output=True, text=True, timeout=120)
    assert audit.returncode == 0 and "verified: intact" in audit.stdout, audit.stdout + audit.stderr

    again = subprocess.run(command, env=env(rgw), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "finished earlier" in again.stderr, again.stdout + again.stderr


@pytest.mark.parametrize("change, message", [
    (("--to", "sqlite:///tmp/x.db"), "the destination is the fleet's database, postgresql://"),
    (("--blobs", "local"), "the destination is an S3 bucket with Object Lock"),
    (("--from", "postgresql://bwv@127.0.0.1:1/evidence"), "the source is an embedded installation, sqlite:///"),
    (("--to", "mysql://db/evidence"), "engine 'mysql' is not supported"),
])
def test_wrong_url_schemes_are_refused_with_what_to_give(installation, pg, rgw, bucket, change, message):
    command = argv(installation, pg.new_database(), rgw.blobs_url(bucket))
    i = command.index(change[0])
    command[i + 1] = change[1]
    done = subprocess.run(command, env=env(rgw), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_destination_with_other_records_is_refused_and_left_alone(installation, pg, rgw, bucket):
    db_url = pg.new_database()
    other = MetadataStore(db_url)
    try:
        from openbwv.server.auth import DockTokens

        DockTokens(other).add_dock("dock-elsewhere")
    finally:
        other.close()
    done = subprocess.run(argv(installation, db_url, rgw.blobs_url(bucket)), env=env(rgw), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "is not empty (rows in docks)" in done.stderr, done.stderr
    check = MetadataStore(db_url)
    try:
        assert check.docks()[0][0] == "dock-elsewhere" and len(check.docks()) == 1
    finally:
        check.close()
