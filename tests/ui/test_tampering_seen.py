"""An auditor sees on the audit page, in the browser, that someone has altered the trail.

Someone with write access to the database (not through the server) rewrites who did something in
one record.  The auditor's page must say at once that the trail is not intact, name the record,
and tell them what to do, rather than show a reassuring summary.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ui import ui_kit


def test_an_auditor_sees_a_record_altered_behind_the_servers_back(world, page):
    ui_kit.sign_in(world.url, "evidence_officer")  # some history: a sign-in and its records
    ui_kit.browser_sign_in(page, world.url, "auditor")
    page.goto(world.url + "/ui/audit")
    assert "Yes." in page.get_by_role("status").inner_text()

    db = sqlite3.connect(Path(world.home.root) / "server" / "evidence.db")
    try:
        seq = db.execute("SELECT MIN(seq) FROM audit_log WHERE action = 'login'").fetchone()[0]
        with db:
            db.execute("UPDATE audit_log SET actor = 'user:nobody' WHERE seq = ?", (seq,))
    finally:
        db.close()

    page.reload()
    alert = page.get_by_role("alert").inner_text()
    assert "No." in alert and "Tell your information security officer" in alert
    assert str(seq) in alert, alert
    assert ui_kit.axe_violations(page) == []
    ui_kit.screenshot(page, "audit-tampered")
