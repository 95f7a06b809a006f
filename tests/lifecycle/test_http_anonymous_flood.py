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
