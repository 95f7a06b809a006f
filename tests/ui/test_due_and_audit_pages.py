"""The supervisor's due list and the auditor's audit page, in Debian's chromium, on a real server with
real footage (footage_kit): what each page shows, who it refuses, and that each is on the record.

* a supervisor sees the clip due within the week and keeps it, from the list, with a case reference:
  the mark is lifecycle's own (the clip's record says so, and the audit trail names the supervisor);
* an auditor finds records in the audit trail (and their own search is one) and sees the chain checks out;
* each page refuses the roles the API refuses (retention.due, audit.read), with a page saying so;
* no page asks another origin for anything, and axe-core finds no WCAG A/AA violation on either.
"""

from __future__ import annotations

import json

import pytest

from openbwv.server import audit, lifecycle
from openbwv.server.service import open_metadata

from ui import footage_kit as fk


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    yield from fk.make_world(tmp_path_factory.mktemp("ui-due-audit"))


@pytest.fixture
def tab(browser, footage):
    context = browser.new_context()
    page = context.new_page()
    page.watch = fk.OffOrigin(footage.origin)
    page.on("request", page.watch)
    try:
        yield page
    finally:
        context.close()


def records(world, **filters) -> list[audit.AuditRecord]:
    db = open_metadata(world.home)
    try:
        return audit.query(db.reader(), limit=10_000, **filters)
    finally:
        db.close()


def active_marks(world, clip_id: str) -> list[dict]:
    db = open_metadata(world.home)
    try:
        return lifecycle.marks(db.reader(), clip_id, active_only=True)
    finally:
        db.close()


def test_a_supervisor_keeps_a_clip_from_the_due_list(footage, tab):
    fk.sign_in(tab, footage, "sue")
    tab.get_by_role("link", name="Due for deletion").first.click()
    row = tab.get_by_role("row").filter(has_text=footage.due_clip[:8])
    assert row.count() == 1, tab.inner_text("main")
    assert "cam-b" in row.inner_text() and "unmarked" in row.inner_text()
    assert footage.clip[:8] not in tab.inner_text("main")  # two days old: not due this week
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "retention-due")

    row.get_by_label("Case reference").fill("CR-2026-0099")
    row.get_by_label("Reason").fill("Shows the arrest outside the station")
    row.get_by_role("button", name=f"Mark clip {footage.due_clip[:8]} as evidence").click()
    tab.wait_for_load_state("load")

    status = tab.get_by_role("status")
    assert "is marked as evidence for case CR-2026-0099" in status.inner_text()
    assert tab.get_by_role("row").filter(has_text=footage.due_clip[:8]).count() == 0  # kept: no longer due
    marks = active_marks(footage, footage.due_clip)
    assert [(m["case_ref"], m["marked_by"]) for m in marks] == [("CR-2026-0099", "user:sue")]
    assert records(footage, action="view", target="retention:due", actor="user:sue")
    assert tab.watch.elsewhere() == []
    fk.screenshot(tab, "retention-due-marked")


def test_an_auditor_finds_records_and_sees_the_chain_intact(footage, tab):
    fk.sign_in(tab, footage, "aud")
    tab.get_by_role("link", name="Audit trail").first.click()
    assert "Yes." in tab.get_by_role("status").inner_text()
    tab.get_by_label("What they did").fill("login")
    tab.get_by_label("Who did it").fill("user:aud")
    tab.get_by_role("button", name="Find records").click()
    tab.wait_for_load_state("load")
    table = tab.get_by_role("table")
    assert "user:aud" in table.inner_text() and "login" in table.inner_text()
    assert tab.get_by_label("What they did").input_value() == "login"  # the search is shown back
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "audit")
    searched = records(footage, action="view", target="audit", actor="user:aud")
    assert searched and json.loads(searched[-1].detail)["filters"] == {"actor": "user:aud", "action": "login"}
    assert tab.watch.elsewhere() == []


def test_a_bad_time_in_the_audit_search_is_explained(footage, tab):
    fk.sign_in(tab, footage, "aud")
    tab.goto(footage.url + "/ui/audit?since=yesterday")
    assert "since" in tab.get_by_role("alert").inner_text()


@pytest.mark.parametrize(("user", "path"), [
    ("olive", "/ui/retention/due"), ("dora", "/ui/retention/due"), ("aud", "/ui/retention/due"),
    ("ada", "/ui/retention/due"), ("sue", "/ui/audit"), ("evan", "/ui/audit"), ("ada", "/ui/audit"),
])
def test_each_page_refuses_whom_the_api_refuses(footage, tab, user, path):
    fk.sign_in(tab, footage, user)
    reply = tab.goto(footage.url + path)
    assert reply.status == 403
    assert "cannot use this page" in tab.get_by_role("alert").inner_text()
    menu = tab.get_by_role("navigation", name="Main menu")
    label = "Due for deletion" if "retention" in path else "Audit trail"
    assert menu.count() == 0 or menu.get_by_role("link", name=label).count() == 0
    assert records(footage, actor=f"user:{user}", action="access_denied", outcome="denied")


def test_an_admin_adds_an_account_that_can_then_sign_in(footage, tab):
    fk.sign_in(tab, footage, "ada")
    tab.get_by_role("link", name="Staff accounts").first.click()
    assert fk.axe_violations(tab) == []
    tab.get_by_label("User name", exact=True).fill("pc-new")
    tab.get_by_label("Full name").fill("New Officer")
    tab.get_by_label("Role", exact=True).select_option("officer")
    tab.get_by_label("Password (at least 12 characters)").fill(fk.PASSWORD)
    tab.get_by_role("button", name="Add account").click()
    tab.wait_for_load_state("load")
    assert "added pc-new" in tab.get_by_role("status").inner_text()
    assert tab.get_by_role("row").filter(has_text="pc-new").count() == 1
    fk.screenshot(tab, "admin-users")
    assert records(footage, actor="user:ada", action="user_added", target="user:pc-new")
    other = tab.context.browser.new_context().new_page()
    fk.sign_in(other, footage, "pc-new")
    assert "Signed in as" in other.inner_text("header")
    other.context.close()


def test_an_admin_cannot_change_their_own_role_here_either(footage, tab):
    fk.sign_in(tab, footage, "ada")
    tab.goto(footage.url + "/ui/admin/users")
    assert tab.get_by_label("New role for ada").count() == 0  # not offered
    csrf = tab.locator("input[name=csrf]").first.input_value()
    reply = tab.request.post(footage.url + "/ui/admin/users/ada", form={"csrf": csrf, "role": "auditor"})
    assert reply.status == 403
    assert records(footage, actor="user:ada", action="user_changed", target="user:ada", outcome="denied")


def test_the_due_page_shows_what_recent_sweeps_deleted(footage, tab):
    """A real sweep, run as the retention timer would forty days from now, deletes the clips past their
    retention; the page lists each from the sweep's tombstones, with the sweep's own report."""
    from datetime import datetime, timedelta, timezone

    from openbwv.server.blobstore import LocalBlobStore
    from openbwv.server.retention import RetentionPolicy
    from openbwv.server.sweep import Sweeper

    db = open_metadata(footage.home)
    try:
        report = Sweeper(db, LocalBlobStore(footage.home.server_dir / "store"), RetentionPolicy(),
                         actor="user:evan").run(now=datetime.now(timezone.utc) + timedelta(days=40))
    finally:
        db.close()
    assert footage.clip in report.deleted_clips
    fk.sign_in(tab, footage, "sue")
    tab.goto(footage.url + "/ui/retention/due")
    sweeps = tab.get_by_role("region", name="Recent deletion sweeps")
    table = sweeps.get_by_role("table").first
    assert footage.clip[:8] in table.inner_text() and "cam-a" in table.inner_text()
    assert f"{len(report.deleted_clips)} clip" in sweeps.inner_text() and "Run by user:evan" in sweeps.inner_text()
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "retention-sweeps")


def test_an_auditor_downloads_the_records_found_and_the_download_is_on_the_record(footage, tab):
    fk.sign_in(tab, footage, "aud")
    tab.goto(footage.url + "/ui/audit?action=login")
    with tab.expect_download() as got:
        tab.get_by_role("link", name="Download every matching record").click()
    lines = [json.loads(line) for line in open(got.value.path()).read().splitlines()]
    assert lines and {r["action"] for r in lines} == {"login"}
    taken = records(footage, action="export", target="audit", actor="user:aud")
    assert taken and json.loads(taken[-1].detail)["records"] == len(lines)


def test_an_admin_issues_a_dock_token_shown_once_and_sees_the_cameras(footage, tab):
    fk.sign_in(tab, footage, "ada")
    tab.get_by_role("link", name="Docks and cameras").first.click()
    assert tab.get_by_role("row").filter(has_text="dock-ui").count() == 1
    assert "olive" in tab.get_by_role("row").filter(has_text="cam-a").inner_text()
    tab.get_by_label("Dock name").fill("dock-station-9")
    tab.get_by_role("button", name="Issue a dock token").click()
    tab.wait_for_load_state("load")
    token = tab.get_by_label("Dock token").input_value()
    assert token and "shown only this once" in tab.get_by_role("status").inner_text()
    assert fk.axe_violations(tab) == []
    import requests

    hello = requests.post(footage.url + "/tus/", headers={"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"},
                          timeout=30)
    assert hello.status_code != 401  # the dock is known by that token now (the empty creation is refused otherwise)
    tab.reload()
    assert token not in tab.content()  # never shown again
    assert records(footage, actor="user:ada", action="token_issued", target="dock:dock-station-9")
