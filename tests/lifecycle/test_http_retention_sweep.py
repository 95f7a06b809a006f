"""The retention sweep over HTTP: a dry run for those who watch the due list, a real sweep for the
evidence officer, both against a real server holding really sealed footage recorded weeks ago."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from lifecycle import http_kit
from lifecycle.lifecycle_kit import UTC, Evidence
from openbwv.server import audit, lifecycle
from openbwv.server.service import open_metadata


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Footage recorded 40 days ago (due), 40 days ago but marked as evidence, and 10 days ago; a
    server over it; a supervisor and an evidence officer."""
    root = tmp_path_factory.mktemp("http-sweep")
    ev = Evidence(root / "home")
    now = datetime.now(UTC)
    due = ev.record("cam-s1", now - timedelta(days=40), received=now - timedelta(days=39))
    marked = ev.record("cam-s1", now - timedelta(days=40), received=now - timedelta(days=39))
    recent = ev.record("cam-s2", now - timedelta(days=10), received=now - timedelta(days=9))
    with ev.db.transaction() as db:
        lifecycle.mark_evidence(db, marked.clip_id, case_ref="CR-7", reason="assault, Market St",
                                actor="test:setup", at=now.isoformat())
    ev.close()
    with http_kit.ServerProcess(ev.home.root, "--reserve-mb", "0") as server:
        staff = {role: http_kit.TusSession(server.url, http_kit.staff_token(ev.home, name, role))
                 for role, name in (("supervisor", "sgt-sweep"), ("evidence_officer", "eo-sweep"))}
        yield ev, server, staff, {"due": due, "marked": marked, "recent": recent}


def records(ev: Evidence, **filters) -> list[audit.AuditRecord]:
    db = open_metadata(ev.home)
    try:
        return audit.query(db.reader(), limit=100_000, **filters)
    finally:
        db.close()


def clip_state(ev: Evidence, clip_id: str) -> str:
    db = open_metadata(ev.home)
    try:
        return lifecycle.clip(db.reader(), clip_id).state
    finally:
        db.close()


def test_a_supervisor_previews_what_a_sweep_would_delete_and_nothing_is_changed(world):
    ev, _server, staff, clips = world
    before = records(ev)[-1].seq

    reply = staff["supervisor"].get("/api/v1/retention/sweep-preview")

    assert reply.status == 200, reply.body
    preview = reply.json()
    assert preview["dry_run"] is True
    assert preview["would_delete"] == [clips["due"].clip_id]
    assert preview["deleted_clips"] == 1 and preview["listed"] == 1
    assert ev.blob_digest(clips["due"].segment_hash) is not None
    assert clip_state(ev, clips["due"].clip_id) == "held"
    after = [r for r in records(ev) if r.seq > before]
    assert [(r.actor, r.action, r.target) for r in after] == [
        ("user:sgt-sweep", "view", "retention:sweep-preview")]  # that somebody looked, and nothing else
    assert after[0].details == {"would_delete": 1}


def test_the_preview_lists_at_most_limit_clip_ids_but_counts_them_all(world):
    _ev, _server, staff, _clips = world
    preview = staff["evidence_officer"].get("/api/v1/retention/sweep-preview?limit=0").json()
    assert preview["would_delete"] == [] and preview["deleted_clips"] == 1 and preview["listed"] == 0
    assert staff["evidence_officer"].get("/api/v1/retention/sweep-preview?limit=-1").status == 400


def test_a_supervisor_may_preview_a_sweep_but_not_run_one(world):
    ev, _server, staff, clips = world
    refused = staff["supervisor"].request("POST", "/api/v1/retention/sweep")
    assert refused.status == 403
    assert "retention.sweep" in refused.json()["error"]
    assert ev.blob_digest(clips["due"].segment_hash) is not None
    (denial,) = [r for r in records(ev, action="access_denied", actor="user:sgt-sweep")
                 if r.target == "POST /api/v1/retention/sweep"]
    assert denial.outcome == "denied"


@pytest.fixture(scope="module")
def swept(world):
    """The evidence officer's sweep (once), with the bytes of what should survive it, read before."""
    ev, _server, staff, clips = world
    kept = {name: ev.blob_digest(clips[name].segment_hash) for name in ("marked", "recent")}
    return staff["evidence_officer"].request("POST", "/api/v1/retention/sweep"), kept


def test_an_evidence_officer_runs_a_sweep_that_deletes_what_is_due_and_nothing_else(world, swept):
    ev, _server, _staff, clips = world
    reply, kept = swept
    assert reply.status == 200, reply.body
    report = reply.json()
    assert report["dry_run"] is False
    assert report["clips"] == [clips["due"].clip_id]
    assert report["deleted_segments"] == 1 and report["bytes_freed"] > 0
    assert ev.blob_digest(clips["due"].segment_hash) is None
    assert clip_state(ev, clips["due"].clip_id) == "deleted"
    assert {name: ev.blob_digest(clips[name].segment_hash) for name in kept} == kept  # byte for byte


def test_the_sweep_is_on_the_record_in_the_name_of_whoever_ran_it_and_signed(world, swept):
    ev, _server, _staff, clips = world
    (started,) = records(ev, action="sweep_started")
    (deleted,) = records(ev, action="delete", target=f"clip:{clips['due'].clip_id}")
    (finished,) = records(ev, action="sweep_finished")
    assert started.actor == deleted.actor == finished.actor == "user:eo-sweep"
    assert deleted.details["sweep"] == finished.details["sweep_id"] == started.target.removeprefix("sweep:")
    # Deletions are the records most worth a signature: the sweep ends by signing a checkpoint over them.
    assert [r for r in records(ev, action="checkpoint") if r.seq > finished.seq], "no checkpoint after the sweep"


def test_a_second_sweep_finds_nothing_more_to_delete(world, swept):
    ev, _server, staff, clips = world
    again = staff["evidence_officer"].request("POST", "/api/v1/retention/sweep").json()
    assert again["clips"] == [] and again["deleted_clips"] == 0
    assert len(records(ev, action="delete", target=f"clip:{clips['due'].clip_id}")) == 1
    assert staff["supervisor"].get("/api/v1/retention/sweep-preview").json()["would_delete"] == []


def test_the_preview_and_the_sweep_are_in_the_published_api_with_who_may_call_them():
    from openbwv.server.api_docs import openapi

    paths = openapi()["paths"]
    assert paths["/api/v1/retention/sweep-preview"]["get"]["x-openbwv-roles"] == ["supervisor", "evidence_officer"]
    assert paths["/api/v1/retention/sweep"]["post"]["x-openbwv-roles"] == ["evidence_officer"]
