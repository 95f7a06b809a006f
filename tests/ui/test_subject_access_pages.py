"""Subject access in Debian's chromium, on a real server with real footage (footage_kit): the public's request
page, and the disclosure officer's pages that take a request from arrival to an export and its close.

* a member of the public, with no account, says when and where they met the police and gets a reference
  number; the request is pending, the footage of that time is held at once, and the submission is audited;
* a form they got wrong is shown back with what to correct and what they typed; one client can send only
  a few a day, and is told so;
* a disclosure officer finds the request on their dashboard, verifies the requester, sees the held clip,
  exports it with a progress bar, downloads the manifest, extends the deadline and closes the request,
  every step being the API's own function with its audit record;
* staff log a request that came by post through a form, and it holds by time alone;
* no other role reaches these pages; no page asks another origin for anything; axe-core finds no WCAG
  A/AA violation on any of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from openbwv.server import audit, sar
from openbwv.server.service import open_metadata

from ui import footage_kit as fk

LONDON = ZoneInfo("Europe/London")  # the server's default local_time_zone
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_REFERENCE = re.compile(r"SAR-\d{4}-\d{5}")


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    yield from fk.make_world(tmp_path_factory.mktemp("ui-sar"))


@pytest.fixture
def tab(browser, footage):
    context = browser.new_context(accept_downloads=True)
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


def request_doc(world, request_id: str) -> dict:
    db = open_metadata(world.home)
    try:
        return sar.request(db.reader(), request_id)
    finally:
        db.close()


def encounter(world) -> dict[str, str]:
    """The public form's when, in local time: half an hour either side of the clip on cam-a."""
    start = (world.recorded - timedelta(minutes=30)).astimezone(LONDON)
    end = (world.recorded + timedelta(minutes=30)).astimezone(LONDON)
    return {"day": start.date().isoformat(), "time_from": start.strftime("%H:%M"), "time_to": end.strftime("%H:%M")}


def fill_public_form(page, world, *, time_to: str | None = None) -> None:
    when = encounter(world)
    page.get_by_label("Your full name").fill("Alex Member")
    page.get_by_label("How we can contact you").fill("alex.member@example.org")
    page.get_by_label("Date").fill(when["day"])
    page.get_by_label("From (hours and minutes)").fill(when["time_from"])
    page.get_by_label("Until").fill(time_to or when["time_to"])
    page.get_by_label("The place, in words").fill("Outside the library on High Street")
    page.get_by_label("What happened").fill("Two officers stopped me and asked where I was going. I wore a red coat.")


@dataclass
class Submitted:
    reference: str
    seen: dict  # what the browser saw on the way, for the first test below


@pytest.fixture(scope="module")
def submitted(footage, browser) -> Submitted:
    """A member of the public's request, sent through the page once for the module."""
    page = browser.new_context().new_page()
    watch = fk.OffOrigin(footage.origin)
    page.on("request", watch)
    page.goto(footage.url + "/ui/public/request")
    page.wait_for_load_state("load")
    page.extra = {"form_axe": fk.axe_violations(page), "nav": page.get_by_role("navigation").count()}
    fill_public_form(page, footage)
    page.get_by_role("application").click()  # the map: a point, with the radius drawn around it
    page.extra["said"] = page.locator("#map-choice").inner_text()
    page.get_by_role("button", name="Send my request").click()
    page.wait_for_load_state("load")
    text = page.get_by_role("status").inner_text()
    page.extra |= {"received_axe": fk.axe_violations(page), "text": page.inner_text("main"), "off": watch.elsewhere()}
    fk.screenshot(page, "public-request-received")
    reference = _REFERENCE.search(text).group(0)
    page.context.close()
    return Submitted(reference, page.extra)


@pytest.fixture
def public_request(submitted) -> str:
    return submitted.reference


def test_a_member_of_the_public_asks_for_footage_of_themselves_and_gets_a_reference(footage, submitted):
    seen, public_request = submitted.seen, submitted.reference
    assert seen["nav"] == 0 and seen["form_axe"] == [] and seen["received_axe"] == []
    assert "A point is marked on the map" in seen["said"]
    assert "one calendar month" in seen["text"] and "check who you are" in seen["text"]
    assert "/ui/clips/" not in seen["text"] and seen["off"] == []
    doc = request_doc(footage, public_request)
    assert doc["pending"] and doc["source"] == "public" and doc["requester"] == "Alex Member"
    assert doc["lat"] is not None and doc["radius_m"] == 500
    assert footage.clip in doc["held_clips"]  # no fix places the clip: it cannot be ruled out, so it is held
    logged = records(footage, action="request_logged", target=f"request:{public_request}")
    assert len(logged) == 1 and logged[0].actor.startswith("public:")
    assert "127.0.0.1" not in json.dumps([r.detail for r in records(footage)])  # the address is never stored


def test_a_public_form_with_a_mistake_says_what_to_correct_and_keeps_what_was_typed(footage, tab):
    tab.goto(footage.url + "/ui/public/request")
    fill_public_form(tab, footage, time_to="23:59" if encounter(footage)["time_from"] < "19:00" else "06:00")
    tab.get_by_label("From (hours and minutes)").fill("08:00" if encounter(footage)["time_from"] < "19:00" else "20:00")
    with tab.expect_response(lambda r: r.request.method == "POST") as answer:
        tab.get_by_role("button", name="Send my request").click()
    assert answer.value.status == 400
    alert = tab.get_by_role("alert").inner_text()
    assert "Please check your request" in alert and "at most 4 hours" in alert
    assert tab.get_by_label("Your full name").input_value() == "Alex Member"
    assert tab.get_by_label("What happened").input_value().startswith("Two officers")
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "public-request-mistake")


def _post_public(world, session: requests.Session) -> requests.Response:
    form = session.get(world.url + "/ui/public/request", timeout=30)
    when = encounter(world)
    return session.post(world.url + "/ui/public/request", timeout=30, data={
        "csrf": _CSRF.search(form.text).group(1), "requester": "Sam Sender", "contact": "sam@example.org",
        "place": "Market Square", "description": "I was filmed at the market.", **when})


def test_one_client_can_send_only_a_few_requests_a_day_and_is_told_why(footage, public_request):
    session = requests.Session()
    replies = [_post_public(footage, session) for _ in range(4)]
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 3 - 1 and statuses[-1] == 429  # the first came from the page above
    assert "in the last 24 hours" in replies[-1].text and replies[-1].headers["Retry-After"]
    refused = records(footage, action="access_denied", outcome="denied")
    assert any("public request refused" in r.detail for r in refused)


def test_a_disclosure_officer_takes_a_public_request_from_verifying_to_closing(footage, tab, public_request):
    fk.sign_in(tab, footage, "dora")
    tab.get_by_role("link", name="Requests from the public").first.click()
    row = tab.get_by_role("row").filter(has_text=public_request)
    assert "to verify" in row.inner_text()
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "requests-dashboard")

    row.get_by_role("link", name=public_request).click()
    tab.get_by_label("How you checked their identity").fill("Driving licence checked by phone call")
    tab.get_by_role("button", name="The requester is verified").click()
    tab.wait_for_load_state("load")
    assert "The requester is verified" in tab.get_by_role("status").inner_text()
    assert not request_doc(footage, public_request)["pending"]
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "request-page")

    tab.get_by_label(f"Clip {footage.clip[:8]}").check()
    tab.get_by_role("button", name="Export the chosen clips").click()
    assert tab.get_by_role("progressbar").count() == 1 or tab.get_by_text("is ready").count() == 1
    tab.get_by_text(re.compile("Export 1 is ready|The export was not made")).wait_for(timeout=120_000)
    assert "Export 1 is ready" in tab.inner_text("main"), tab.inner_text("main")
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "request-export-done")
    with tab.expect_download() as got:
        tab.get_by_role("link", name="Manifest (what was done to each clip)").click()
    manifest = json.loads(open(got.value.path()).read())
    assert manifest["request"] == public_request and [c["clip_id"] for c in manifest["clips"]] == [footage.clip]
    downloads = records(footage, action="export", target=f"request:{public_request}", actor="user:dora")
    assert any(json.loads(r.detail).get("what") == "download" for r in downloads)

    tab.get_by_role("link", name=f"Back to request {public_request}").click()
    tab.get_by_label("Extend a complex request by").select_option("1")
    tab.get_by_label("Reason (the requester must be told)").fill("Footage from several cameras to review")
    tab.get_by_role("button", name="Extend the deadline").click()
    tab.wait_for_load_state("load")
    assert "is extended" in tab.get_by_role("status").inner_text()
    tab.get_by_label("Outcome (what was disclosed, or why nothing)").fill("One redacted clip sent by secure email")
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.get_by_role("button", name="Close the request").click()
    tab.wait_for_load_state("load")
    assert "The request is closed" in tab.get_by_role("status").inner_text()
    doc = request_doc(footage, public_request)
    assert doc["status"] == "closed" and doc["closed_by"] == "user:dora"
    for action in ("request_verified", "request_extended", "request_closed"):
        assert records(footage, action=action, actor="user:dora", target=f"request:{public_request}"), action
    assert tab.watch.elsewhere() == []


def test_staff_log_a_request_that_came_by_post_and_it_holds_by_time(footage, tab):
    fk.sign_in(tab, footage, "dora", next_path="/ui/requests/new")
    start = (footage.recorded - timedelta(minutes=10)).astimezone(LONDON)
    tab.get_by_label("Requester's name").fill("Pat Post")
    tab.get_by_label("From").fill(start.strftime("%Y-%m-%dT%H:%M"))
    tab.get_by_label("Until").fill((start + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M"))
    tab.get_by_label("What happened, as the requester tells it").fill("Letter received: stopped in the park")
    assert fk.axe_violations(tab) == []
    tab.get_by_role("button", name="Log the request and hold its footage").click()
    tab.wait_for_load_state("load")
    request_id = _REFERENCE.search(tab.inner_text("h1")).group(0)
    doc = request_doc(footage, request_id)
    assert doc["source"] == "staff" and not doc["pending"] and footage.clip in doc["held_clips"]
    assert tab.get_by_role("link", name=f"open clip {footage.clip[:8]}").count() == 1


@pytest.mark.parametrize("user", ["olive", "sue", "evan", "aud", "ada"])
def test_no_other_role_reaches_the_request_pages(footage, tab, user):
    fk.sign_in(tab, footage, user)
    menu = tab.get_by_role("navigation", name="Main menu")
    assert menu.count() == 0 or menu.get_by_role("link", name="Requests from the public").count() == 0
    reply = tab.goto(footage.url + "/ui/requests")
    assert reply.status == 403 and "cannot use this page" in tab.get_by_role("alert").inner_text()
    assert records(footage, actor=f"user:{user}", action="access_denied", outcome="denied")


def test_a_disclosure_officer_previews_the_redaction_keeps_the_requesters_face_and_adds_a_box(footage, tab):
    """A clip with real faces (tests/redact: the astronaut still on the left, two people passing): the preview
    shows each face found, the officer marks the requester's, adds a box over the document, and the export
    carries both choices into its signed manifest."""
    from datetime import datetime, timezone

    from openbwv.enrol import device_storage
    from openbwv.importer import import_video

    from redact import footage as faces

    scene = faces.street_scene(frames=45)
    source = footage.root / "faces.mp4"
    faces.write_h264(source, scene.frames, container="mp4")
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=5)
    sealed = import_video(source, device_storage(footage.home, "cam-a"), segment_seconds=2.0, start=start)
    dock = fk.server_kit.TusSession(footage.url, footage.extra["dock_token"])
    fk._upload(dock, sealed, "cam-a")
    clip = str(sealed.clip_id)
    db = open_metadata(footage.home)
    try:
        with db.transaction() as conn:
            request_id, held = sar.log_request(conn, sar.RequestDetails(
                "Robin Faces", "filmed in the street", start.date(), int(start.timestamp() * 1e6),
                int(start.timestamp() * 1e6) + 60_000_000), actor="user:dora", at=start.isoformat())
    finally:
        db.close()
    assert clip in held

    fk.sign_in(tab, footage, "dora", next_path=f"/ui/requests/{request_id}")
    tab.get_by_role("link", name=f"preview the redaction of clip {clip[:8]}").click()
    tab.wait_for_load_state("load")
    faces_found = tab.get_by_role("region", name="Faces found on this frame").get_by_role("listitem")
    assert faces_found.count() >= 2, tab.inner_text("main")
    image = tab.get_by_role("img")
    assert "faces found" in image.get_attribute("alt")
    requester = faces_found.filter(has_text="top left")
    assert requester.count() == 1, faces_found.all_inner_texts()
    requester.get_by_role("link").click()
    tab.wait_for_load_state("load")
    assert "left clear: the requester" in tab.get_by_role("region", name="Faces found on this frame").inner_text()
    doc = scene.document
    tab.get_by_label("From the left").fill(str(doc.x))
    tab.get_by_label("From the top").fill(str(doc.y))
    tab.get_by_label("Width").fill(str(doc.w))
    tab.get_by_label("Height").fill(str(doc.h))
    tab.get_by_label("Until (seconds)").fill("1.5")
    tab.get_by_role("button", name="Add the box").click()
    tab.wait_for_load_state("load")
    choices = tab.get_by_role("region", name="Your choices").inner_text()
    assert "The requester's face" in choices and f"Box {doc.w}×{doc.h} at {doc.x}, {doc.y}" in choices
    shot = tab.request.get(footage.url + image.get_attribute("src"))
    assert shot.status == 200 and shot.headers["content-type"] == "image/jpeg" and shot.headers["cache-control"] == "no-store"
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "redaction-preview")

    tab.get_by_role("button", name="Export this clip with these choices").click()
    tab.get_by_text(re.compile(r"Export \d+ is ready|The export was not made")).wait_for(timeout=120_000)
    assert "is ready" in tab.inner_text("main"), tab.inner_text("main")
    with tab.expect_download() as got:
        tab.get_by_role("link", name="Manifest (what was done to each clip)").click()
    entry = json.loads(open(got.value.path()).read())["clips"][0]
    assert entry["clip_id"] == clip and len(entry["kept_boxes"]) == 1
    assert entry["manual_boxes"] == [[0.0, 1.5, doc.x, doc.y, doc.w, doc.h]]
    views = records(footage, action="decrypt", target=f"clip:{clip}", actor="user:dora")
    assert any("redaction preview" in json.loads(r.detail).get("via", "") for r in views)
