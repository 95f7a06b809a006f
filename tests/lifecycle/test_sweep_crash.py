"""A sweep killed at random points (SIGKILL) and re-run deletes each due clip exactly once and nothing else."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from lifecycle.lifecycle_kit import UTC, Evidence
from openbwv.server import audit, lifecycle

# Each test once per metadata engine: SQLite, then PostgreSQL (conftest.py).
pytestmark = pytest.mark.usefixtures("db_engine")

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DUE, KEPT = 300, 40


def bwv_command() -> list[str]:
    exe = Path(sys.executable).with_name("bwv")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "openbwv.cli"]


@pytest.mark.slow
def test_a_sweep_killed_anywhere_and_run_again_deletes_each_due_clip_exactly_once(tmp_path):
    rng = random.Random(20261125)
    ev = Evidence(tmp_path / "home")
    due = [ev.record(f"cam-{i % 4}", NOW - timedelta(days=32 + i % 20)) for i in range(DUE)]
    kept = [ev.record(f"cam-{i % 4}", NOW - timedelta(days=i % 30)) for i in range(KEPT)]
    kept_bytes = {h.segment_hash: ev.blob_digest(h.segment_hash) for h in kept}
    key_digests = dict(ev.db.reader().execute("SELECT segment_hash, wrapped_key_sha256 FROM segments"))
    ev.close()

    env = dict(os.environ, BWV_HOME=str(ev.home.root))
    argv = [*bwv_command(), "retention", "sweep", "--now", NOW.isoformat(), "--batch", "3"]
    kills = 0
    for attempt in range(60):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt < 40:
            # Kill on the sweep's own progress, not on the wall clock: the sweep prints a line per
            # batch, so waiting for a random number of lines and then a random instant lands the
            # kill inside a batch (between intent, shred and record) however fast this machine is.
            # Zero lines kills during start-up or the first batch.
            lines = rng.randint(0, 6)
            for _ in range(lines):
                if not proc.stderr.readline():
                    break
            time.sleep(rng.uniform(0.0, 0.02) if lines else rng.uniform(0.2, 0.8))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc.stderr.close()
                kills += 1
                continue
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        break
    else:
        pytest.fail("the sweep never completed")
    assert kills >= 5, f"only {kills} runs were killed: the test did not exercise the crash paths"

    from openbwv.server.service import open_metadata

    db = open_metadata(ev.home)
    try:
        reader = db.reader()
        for h in due:
            assert lifecycle.clip(reader, h.clip_id).state == "deleted"
            assert len(audit.query(reader, action="delete", target=f"clip:{h.clip_id}")) == 1
            [stone] = lifecycle.tombstones_of(reader, h.clip_id)
            assert stone["segment_hash"] == h.segment_hash
            # The key destroyed is named by the digest taken at ingest, even when a killed run had
            # already zeroed it and the re-run found only zeros.
            assert stone["wrapped_key_sha256"] == key_digests[h.segment_hash] != ""
            assert not ev.blobs.path(h.segment_hash).exists()
        for h in kept:
            assert lifecycle.clip(reader, h.clip_id).state == "held"
            assert db.segment(h.segment_hash) is not None
        assert {h: ev.blob_digest(h) for h in kept_bytes} == kept_bytes
        assert lifecycle.counts_by_state(reader) == {"deleted": DUE, "held": KEPT}
        assert len(audit.query(reader, action="delete", limit=10_000)) == DUE
        report = audit.verify(reader, ev.keys.public.receipt_verifier())
        assert report.ok, report.to_dict()
    finally:
        db.close()
