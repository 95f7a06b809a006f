"""The clip page in Debian's chromium, on a real server with real footage (footage_kit).

* an evidence officer opens a clip, presses play: the video (a view decrypted for them, remuxed to
  MP4) plays, its currentTime advances, and the camera's position moves along the track on the map
  in step; the decrypt is in the audit trail with their name and the web as the way in;
* the page shows the chain of the clip's segments, its retention category and due date, its marks
  and holds; the officer marks it as evidence with a case reference and reason, and lifts the mark;
* a supervisor may mark but not lift; an officer sees their own clip (no track: the API's clip.track
  is not theirs) and is refused another officer's; the admin and the auditor are refused footage;
* a clip the retention sweep deleted shows its parts as gaps deleted by policy, and nothing to play;
* no request goes to another origin; axe-core finds no WCAG A/AA violation.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kit import wait_for
from openbwv.server import audit, lifecycle
from openbwv.server.service import open_metadata

from ui import footage_kit as fk


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    yield from fk.make_world(tmp_path_factory.mktemp("ui-clip"))


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


def marks(world, clip_id: str) -> list[dict]:
    db = open_metadata(world.home)
    try:
        return lifecycle.marks(db.reader(), clip_id)
    finally:
        db.close()


def open_clip(tab, footage, who: str, clip: str | None = None) -> None:
    path = f"/ui/clips/{clip or footage.tracked}"
    fk.sign_in(tab, footage, who, next_path=path)
    assert tab.url.endswith(path), tab.url


def until(tab, expression: str) -> None:
    """Wait until a page expression holds (polled from here: the page's CSP forbids the eval that
    Playwright's wait_for_function needs, as it should)."""
    wait_for(lambda: tab.evaluate(expression), timeout=30)


def marker_position(tab) -> tuple[float, float]:
    m = tab.locator("#clip-map")
    return float(m.get_attribute("data-lat")), float(m.get_attribute("data-lon"))


def test_an_evidence_officer_watches_the_clip_and_the_position_follows_it(footage, tab):
    open_clip(tab, footage, "evan")
    assert tab.get_by_role("heading", level=1).inner_text() == f"Clip {footage.tracked[:8]}"
    assert records(footage, action="decrypt", target=f"clip:{footage.tracked}") == []  # looking is not watching
    until(tab, "document.getElementById('clip-map').getAttribute('data-fixes') !== null")
    assert int(tab.locator("#clip-map").get_attribute("data-fixes")) == len(footage.track)
    start = marker_position(tab)
    assert start == pytest.approx(footage.track[0][1:], abs=1e-6)
    summary = tab.locator("#track-summary").inner_text()
    assert f"{len(footage.track)} positions" in summary and "plain background" in summary

    video = tab.locator("#clip-video")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    until(tab, "document.getElementById('clip-video').readyState >= 2")
    until(tab, "document.getElementById('clip-video').currentTime > 0.8")
    moved = marker_position(tab)
    assert moved[0] > start[0] and moved[1] > start[1]  # north-east, as the camera walked
    t = video.evaluate("v => v.currentTime")
    # In step: where the track says the camera was at that moment (a fix every 0.1 s, 6.6 m apart).
    assert moved[0] == pytest.approx(fk.TRACK_START[0] + t * 10 * fk.TRACK_STEP[0], abs=3 * fk.TRACK_STEP[0])
    assert "into the clip" in tab.locator("#position").inner_text()
    assert video.evaluate("v => v.videoWidth") == 160
    fk.screenshot(tab, "clip-playing")

    (opened,) = records(footage, action="decrypt", target=f"clip:{footage.tracked}", actor="user:evan")
    assert opened.details["purpose"] == "view" and opened.details["via"] == "web"
    assert records(footage, action="view", target=f"clip:{footage.tracked}", actor="user:evan")
    assert tab.watch.elsewhere() == []


def test_the_page_shows_chain_retention_marks_and_holds(footage, tab):
    open_clip(tab, footage, "evan")
    chain = tab.get_by_role("table", name="Parts of the clip, in the order they were recorded")
    rows = chain.get_by_role("row")
    assert rows.count() == 3  # the header and the clip's two one-second segments
    assert rows.nth(1).inner_text().count("Verified") == 1 and "Verified" in rows.nth(2).inner_text()
    assert "All 2 parts of the clip are held" in tab.locator("main").inner_text()
    due = tab.locator("#due-date").inner_text()
    due_at = (footage.recorded - timedelta(hours=3) + timedelta(days=31)).astimezone(ZoneInfo("Europe/London"))
    assert due.startswith(f"{due_at:%Y-%m-%d %H:%M}")  # the default 31-day rule, in local time as the page says
    assert "No evidence mark keeps this clip." in tab.locator("main").inner_text()
    assert "No open request from the public holds this clip." in tab.locator("main").inner_text()
    assert fk.axe_violations(tab) == []
    assert tab.watch.elsewhere() == []


def test_an_evidence_officer_marks_the_clip_and_lifts_the_mark_by_keyboard(footage, tab):
    open_clip(tab, footage, "evan")
    tab.get_by_label("Case reference").fill("CR-2026-0142")
    tab.get_by_label("Reason").fill("Shows the assault on the bridge")
    with tab.expect_navigation():
        tab.get_by_label("Reason").press("Enter")
    assert "marked as evidence for case CR-2026-0142" in tab.get_by_role("status").inner_text()
    (mark,) = [m for m in marks(footage, footage.tracked) if m["lifted_utc"] is None]
    assert (mark["case_ref"], mark["marked_by"]) == ("CR-2026-0142", "user:evan")
    assert "Not while it is held as evidence" in tab.locator("#due-date").inner_text()
    table = tab.get_by_role("table", name="Marks keeping this clip as evidence")
    assert "CR-2026-0142" in table.inner_text()
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "clip-marked")

    tab.get_by_label("Why the mark is lifted").fill("No further action")
    tab.get_by_role("button", name=f"Lift mark {mark['id']} (case CR-2026-0142)").focus()
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert f"Evidence mark {mark['id']} is lifted." in tab.get_by_role("status").inner_text()
    assert [m for m in marks(footage, footage.tracked) if m["lifted_utc"] is None] == []
    (lifted,) = records(footage, action="unmark", target=f"clip:{footage.tracked}")
    assert lifted.actor == "user:evan" and lifted.details["reason"] == "No further action"


def test_a_mark_without_a_reason_is_refused_on_the_page_saying_why(footage, tab):
    open_clip(tab, footage, "evan")
    before = len(marks(footage, footage.tracked))
    tab.evaluate("document.getElementById('reason').removeAttribute('required');"
                 "document.getElementById('case_ref').removeAttribute('required')")
    tab.get_by_label("Case reference").fill("CR-1")
    with tab.expect_navigation():
        tab.get_by_role("button", name="Mark as evidence").click()
    assert tab.get_by_role("alert").inner_text().startswith("Reason")
    assert len(marks(footage, footage.tracked)) == before


def test_a_supervisor_may_mark_but_not_lift(footage, tab):
    open_clip(tab, footage, "sue")
    assert tab.get_by_role("button", name="Mark as evidence").count() == 1
    tab.get_by_label("Case reference").fill("CR-2026-0150")
    tab.get_by_label("Reason").fill("Possible evidence of a public order offence")
    with tab.expect_navigation():
        tab.get_by_role("button", name="Mark as evidence").click()
    assert tab.get_by_label("Why the mark is lifted").count() == 0
    (mark,) = [m for m in marks(footage, footage.tracked) if m["lifted_utc"] is None]
    reply = tab.request.post(f"{footage.url}/ui/clips/{footage.tracked}/marks/{mark['id']}/lift",
                             form={"reason": "try", "csrf": tab.locator("input[name=csrf]").first.input_value()})
    assert reply.status == 403
    assert [m["id"] for m in marks(footage, footage.tracked) if m["lifted_utc"] is None] == [mark["id"]]


def test_an_officer_watches_their_own_clip_without_the_track(footage, tab):
    open_clip(tab, footage, "olive")
    assert tab.locator("#clip-map").count() == 0 and tab.get_by_role("button", name="Mark as evidence").count() == 0
    tab.locator("#clip-video").evaluate("v => { v.muted = true; return v.play(); }")
    until(tab, "document.getElementById('clip-video').currentTime > 0.3")
    assert tab.request.get(f"{footage.url}/ui/clips/{footage.tracked}/track.json").status == 403
    assert fk.axe_violations(tab) == []


@pytest.mark.parametrize("who", ["oscar", "ada", "aud"])
def test_others_are_refused_the_clip_and_its_video(footage, tab, who):
    open_clip_path = f"/ui/clips/{footage.tracked}"
    fk.sign_in(tab, footage, who, next_path=open_clip_path)
    assert tab.get_by_role("heading", level=1).inner_text() == "Not allowed"
    for path in ("", "/video", "/track.json"):
        assert tab.request.get(f"{footage.url}{open_clip_path}{path}").status == 403
    assert records(footage, action="decrypt", actor=f"user:{who}") == []
    assert records(footage, action="access_denied", actor=f"user:{who}")


def test_a_clip_the_sweep_deleted_shows_what_is_kept_of_it_and_nothing_to_play(footage, tab):
    after_due = (datetime.now(timezone.utc) + timedelta(days=8)).isoformat()
    done = subprocess.run([str(Path(sys.executable).with_name("bwv")), "retention", "sweep", "--now", after_due],
                          capture_output=True, text=True, timeout=120,
                          env={"BWV_HOME": str(footage.home.root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    open_clip(tab, footage, "evan", footage.due_clip)
    main = tab.locator("main").inner_text()
    assert "Deleted by the retention policy" in main and "Not all of it is held." in main
    chain = tab.get_by_role("table", name="Parts of the clip, in the order they were recorded")
    assert "Gap: deleted by policy" in chain.inner_text()
    assert tab.locator("video").count() == 0 and tab.get_by_role("button", name="Mark as evidence").count() == 0
    assert tab.request.get(f"{footage.url}/ui/clips/{footage.due_clip}/video").status == 404
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "clip-deleted")
