"""Who asked to see footage of themselves is personal data: every read of a subject access request, or
of the list of them, leaves a `view` record naming who looked, as every read of footage does."""

from __future__ import annotations

import json

import pytest

from lifecycle import http_kit
from openbwv.server import audit
from openbwv.server.service import open_metadata


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = http_kit.make_home(tmp_path_factory.mktemp("http-views") / "home")
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        officer = http_kit.TusSession(server.url, http_kit.staff_token(home, "dora-v", "disclosure_officer"))
        logged = officer.request("POST", "/api/v1/requests", body=json.dumps({
            "requester": "A. Person", "contact": "a.person@example.org", "description": "stopped in the street",
            "from": "2026-11-20T14:00:00Z", "to": "2026-11-20T15:00:00Z"}).encode())
        assert logged.status == 201, logged.body
        yield home, officer, logged.json()["request"]


def views(home, target: str) -> list[audit.AuditRecord]:
    db = open_metadata(home)
    try:
        return audit.query(db.reader(), action="view", target=target, limit=100_000)
    finally:
        db.close()


def test_listing_requests_is_recorded_as_a_view_with_what_was_asked_and_how_many_were_listed(world):
    home, officer, request_id = world
    reply = officer.get("/api/v1/requests?status=open")
    assert reply.status == 200 and [r["id"] for r in reply.json()["requests"]] == [request_id]
    (seen,) = views(home, "requests")
    assert seen.actor == "user:dora-v" and seen.outcome == "ok"
    assert seen.details == {"status": "open", "overdue": False, "listed": 1}


def test_reading_one_request_is_recorded_as_a_view_of_that_request(world):
    home, officer, request_id = world
    before = len(views(home, f"request:{request_id}"))
    reply = officer.get(f"/api/v1/requests/{request_id}")
    assert reply.status == 200 and reply.json()["requester"] == "A. Person"
    seen = views(home, f"request:{request_id}")
    assert len(seen) == before + 1
    assert seen[-1].actor == "user:dora-v" and seen[-1].details == {"what": "record"}


def test_a_request_that_does_not_exist_shows_nothing_and_records_no_view(world):
    home, officer, _request_id = world
    assert officer.get("/api/v1/requests/SAR-1999-00042").status == 404
    assert views(home, "request:SAR-1999-00042") == []
