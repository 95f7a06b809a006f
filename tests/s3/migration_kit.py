"""An embedded installation with something in every table, for the migration tests.

Footage is really sealed and ingested (lifecycle_kit.Evidence: SQLite and the
local blob store), some with a GNSS track; then the lifecycle acts on it as
staff would: an evidence mark, a subject access request holding a clip, a
device assignment, a category, a staff account with a token, a dock token,
an upload still in progress, and a retention sweep that deletes the clips
past their period (tombstones), with signed audit checkpoints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from lifecycle.lifecycle_kit import UTC, Evidence, Held
from openbwv.server import lifecycle, sar, users
from openbwv.server.auth import DockTokens
from openbwv.server.db import UploadRecord
from openbwv.server.retention import RetentionPolicy
from openbwv.server.service import sign_audit_head
from openbwv.server.sweep import Sweeper

POLICY = RetentionPolicy(categories={"unmarked": 31, "training": 365}, notice_days=7)
PLACE = (51.5007, -0.1246)


@dataclass
class Installation:
    home: Path
    held: list[Held] = field(default_factory=list)
    marked: Held | None = None
    requested: Held | None = None
    free: Held | None = None
    deleted: list[Held] = field(default_factory=list)

    @property
    def database(self) -> Path:
        return self.home / "server" / "evidence.db"


def build(root: Path, *, segments: int = 6) -> Installation:
    """An installation under `root` (its BWV_HOME), closed: nothing holds its database open."""
    ev = Evidence(root)
    (root / "config.toml").write_text("[retention]\nunmarked_days = 31\nnotice_days = 7\n"
                                      "[retention.categories]\ntraining = 365\n")
    inst = Installation(root)
    now = datetime.now(UTC)
    try:
        old = now - timedelta(days=90)
        inst.deleted = [ev.record("cam-old", old + timedelta(minutes=i), place=PLACE) for i in range(2)]
        recent = now - timedelta(days=2)
        inst.held = [ev.record(f"cam-{i % 2}", recent + timedelta(hours=3 * i),
                               place=PLACE if i % 2 else None) for i in range(segments)]
        inst.marked, inst.requested, inst.free = inst.held[0], inst.held[1], inst.held[2]
        at = now.isoformat()
        with ev.db.transaction() as db:
            lifecycle.mark_evidence(db, inst.marked.clip_id, case_ref="CR-1/26", reason="assault", actor="user:eo",
                                    at=at)
            lifecycle.set_category(db, POLICY, inst.held[3].clip_id, "training", actor="user:sup",
                                   reason="good practice", at=at)
            users.add_user(db, "alice", "evidence_officer", "correct horse battery", full_name="Alice",
                           actor="local:test", kdf_n=2**10)
            users.add_user(db, "pc-4421", "officer", "another good passphrase", actor="local:test", kdf_n=2**10)
            lifecycle.assign_device(db, "cam-0", "pc-4421", int(recent.timestamp() * 1e6), None, actor="user:sup",
                                    at=at)
            users.issue_token(db, "alice", actor="local:test")
        t = int((recent + timedelta(hours=3)).timestamp() * 1e6)  # held[1]; the others lie beyond the clock margin
        with ev.db.transaction() as db:
            request_id, holds = sar.log_request(db, sar.RequestDetails(
                "A. Person", "at the station", date.today(), t - 5_000_000, t + 5_000_000), actor="user:do", at=at)
            db.execute("INSERT INTO sar_exports (sar_id, created_utc, created_by, directory, manifest_sha256, clips) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (request_id, at, "user:do", "exports/1", "0" * 64, 1))
        assert inst.requested.clip_id in holds
        export = root / "server" / "exports" / request_id / "1"  # as sar_export.py lays an export out
        export.mkdir(parents=True)
        (export / "manifest.json").write_text('{"request": "%s"}\n' % request_id)
        DockTokens(ev.db).add_dock("dock-1")
        ev.db.create_upload(UploadRecord("u-1", "dock-1", {"filename": "x.bwv"}, "cam-9", 1, "e" * 64, 4096,
                                         offset=1024, created_utc=at, updated_utc=at))
        sign_audit_head(ev.db, ev.keys, root / "server" / "audit-checkpoints.jsonl")
        report = Sweeper(ev.db, ev.blobs, POLICY).run(now=now)
        assert sorted(report.deleted_clips) == sorted(h.clip_id for h in inst.deleted)
        sign_audit_head(ev.db, ev.keys, root / "server" / "audit-checkpoints.jsonl")
    finally:
        ev.close()
    return inst


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` and the SHA-256 of its bytes (to show a source unchanged)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


__all__ = ["Installation", "POLICY", "build", "snapshot"]
