"""Knocking without a token is refused and counted, but cannot grow the audit log without limit."""

from __future__ import annotations

from lifecycle import http_kit
from openbwv.server import audit
from openbwv.server.denials import PER_WINDOW
from openbwv.server.service import open_metadata


def test_a_flood_of_tokenless_requests_is_written_up_to_the_rate_then_summarised(tmp_path):
    home = http_kit.make_home(tmp_path / "home")
    extra = 25
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        nobody = http_kit.TusSession(server.url, None)
        for _ in range(PER_WINDOW + extra):
            assert nobody.get("/api/v1/audit").status == 401
    # The server has stopped: on its way out it summarised what it did not write one by one.
    db = open_metadata(home)
    try:
        denied = audit.query(db.reader(), actor="anonymous", action="access_denied", limit=10_000)
        report = audit.verify(db.reader(), _receipt_key(home))
    finally:
        db.close()
    one_by_one = [r for r in denied if r.target == "GET /api/v1/audit"]
    summaries = [r for r in denied if "suppressed" in r.details]
    assert len(one_by_one) == PER_WINDOW
    assert [s.details["suppressed"] for s in summaries] == [extra]  # every refusal is counted
    assert report.ok and report.unsigned == 0  # and the summary is under the last checkpoint


def _receipt_key(home):
    from openbwv.sealed.keys import ServerPublicKey

    return ServerPublicKey.load(home.server_public_key).receipt_verifier()


def test_a_flood_of_failed_logins_is_written_up_to_the_rate_then_summarised_and_locking_is_always_written(tmp_path):
    import json

    home = http_kit.make_home(tmp_path / "home")
    extra = 15
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        http_kit.staff_token(home, "real-user", "auditor")
        nobody = http_kit.TusSession(server.url, None)
        for n in range(PER_WINDOW + extra):
            name = "real-user" if n >= PER_WINDOW + extra - 5 else f"guess-{n}"  # the last five lock an account
            reply = nobody.request("POST", "/api/v1/login",
                                   body=json.dumps({"username": name, "password": "not the password"}).encode())
            assert reply.status == 401
    db = open_metadata(home)
    try:
        failed = audit.query(db.reader(), action="login_failed", limit=10_000)
    finally:
        db.close()
    one_by_one = [r for r in failed if "suppressed" not in r.details]
    summaries = [r.details["suppressed"] for r in failed if "suppressed" in r.details]
    locking = [r for r in one_by_one if r.details.get("locked_until")]
    assert len(locking) == 1 and locking[0].actor == "user:real-user"  # always on the record, whatever the rate
    assert len(one_by_one) == PER_WINDOW + 1 and sum(summaries) == extra - 1  # every failure counted once
