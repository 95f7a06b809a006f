"""The faces page (ui_pages_faces.py): staff see every face in a held clip and pick the requester's as a track.

On a real server with real footage of real faces (tests/redact: the astronaut still at the top left, her
mirror image walking across the top, a face from LFW walking up from the bottom right):

* the faces are found in the background, with a progress bar that works without JavaScript (the page
  reloads itself), and the survey's decrypt is on the audit trail like the preview's;
* every face is listed once for the whole clip: a thumbnail described in words, when it is on screen
  (mm:ss) and for how many frames, a link to its first frame in the preview;
* picking a face and blurring it again change only the choices in the page's address;
* the page is refused to every role without request.export, for a clip the request does not hold
  (saying so), and for a face number the survey does not have;
* in Debian's chromium, a disclosure officer finds the faces, picks the person walking across the top by
  keyboard alone and exports: the export's signed report keeps that track clear for its whole length,
  blurs every other, and the export's audit record names the track kept.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from openbwv.server import audit, sar
from openbwv.server.service import open_metadata

from ui import footage_kit as fk

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_LISTED = re.compile(r'<h2 id="faces-heading">\d+ faces? found in')


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    yield from fk.make_world(tmp_path_factory.mktemp("ui-faces"))


@dataclass(frozen=True)
class Held:
    request_id: str
    clip: str
    frames: int

    @property
    def faces(self) -> str:
        return f"/ui/requests/{self.request_id}/clips/{self.clip}/faces"


def hold_street_scene(world, hours_ago: int, requester: str, *, segment_s: float = 2.0) -> Held:
    """The street scene (tests/redact/footage.py) sealed on cam-a `hours_ago` hours back in segments of
    `segment_s`, uploaded by the dock, and a request logged for that time, which holds it."""
    from openbwv.enrol import device_storage
    from openbwv.importer import import_video

    from redact import footage as faces

    scene = faces.street_scene(frames=45)
    source = world.root / f"faces-{hours_ago}.mp4"
    faces.write_h264(source, scene.frames, container="mp4", keyframe_every=15)
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=hours_ago)
    sealed = import_video(source, device_storage(world.home, "cam-a"), segment_seconds=segment_s, start=start)
    fk._upload(fk.server_kit.TusSession(world.url, world.extra["dock_token"]), sealed, "cam-a")
    assert len(sealed.segments) == max(1, round(len(scene.frames) / scene.fps / segment_s))
    clip = str(sealed.clip_id)
    db = open_metadata(world.home)
    try:
        with db.transaction() as conn:
            request_id, held = sar.log_request(conn, sar.RequestDetails(
                requester, "filmed in the street", start.date(), int(start.timestamp() * 1e6),
                int(start.timestamp() * 1e6) + 60_000_000), actor="user:dora", at=start.isoformat())
    finally:
        db.close()
    assert clip in held
    return Held(request_id, clip, len(scene.frames))


@pytest.fixture(scope="module")
def held(footage) -> Held:
    return hold_street_scene(footage, 5, "Robin Faces")


def signed_in(world, user: str) -> requests.Session:
    s = requests.Session()
    form = s.get(world.url + "/ui/signin", timeout=10)
    r = s.post(world.url + "/ui/signin", timeout=30, allow_redirects=False, data={
        "csrf": _CSRF.search(form.text).group(1), "username": user, "password": fk.PASSWORD, "next": "/ui/"})
    assert r.status_code == 303, r.text[:300]
    return s


def records(world, **filters) -> list[audit.AuditRecord]:
    db = open_metadata(world.home)
    try:
        return audit.query(db.reader(), limit=10_000, **filters)
    finally:
        db.close()


@pytest.fixture(scope="module")
def surveyed(footage, held) -> requests.Session:
    """Dora starts the survey from the page, over HTTP, and the page is read until the faces are listed."""
    s = signed_in(footage, "dora")
    request_page = s.get(footage.url + f"/ui/requests/{held.request_id}", timeout=60).text
    assert f'<a href="{held.faces}">choose the requester\'s face in clip {held.clip[:8]}</a>' in request_page
    first = s.get(footage.url + held.faces, timeout=60)
    assert first.status_code == 200 and "Find every face in this clip" in first.text
    started = s.post(footage.url + held.faces, data={"csrf": _CSRF.search(first.text).group(1)}, timeout=120)
    assert started.status_code == 200
    page = started.text
    s.extra = {"while_running": page}  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while not _LISTED.search(page):
        assert time.monotonic() < deadline, page
        progress = s.get(footage.url + held.faces + "/progress", timeout=10).json()
        assert 0 <= progress["percent"] <= 100 and not progress["error"]
        time.sleep(0.5)
        page = s.get(footage.url + held.faces, timeout=60).text
    s.extra["listed"] = page  # type: ignore[attr-defined]
    return s


def test_the_survey_runs_in_the_background_with_a_progress_bar_that_needs_no_script(surveyed):
    running = surveyed.extra["while_running"]
    if "Progress of finding the faces" in running:  # still running when the page came back
        assert "<progress" in running and 'aria-live="polite"' in running
        assert '<noscript><meta http-equiv="refresh"' in running
    else:
        assert _LISTED.search(running)


def render_faces_page(job) -> str:
    """The faces page as the server renders it before a survey is in the store, with `job` its state."""
    from openbwv.server.ui.pagekit import make_env

    return make_env().get_template("faces.html").render(
        title=f"Faces in clip {job.clip_id[:8]}", principal=None, nav=[], path="/ui/", csrf="-", role_label=str,
        idle_minutes=30, request_id="SAR-2026-00001", clip_id=job.clip_id, base="/ui/x/faces", keep_texts=[],
        manual_texts=[], preview_url="/ui/x/preview", survey=None, job=job, faces=[], choices=[],
        refresh_s=5)


def test_while_the_faces_are_being_found_the_page_shows_a_progress_bar_and_without_script_reloads_itself():
    from openbwv.server.ui_pages_faces import SurveyJob

    job = SurveyJob("0b2f6c1e-3a5d-4e7f-9a1b-2c3d4e5f6a7b", "ab" * 32, frames=30, total_frames=120, waiting=False)
    html = render_faces_page(job)
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in html
    assert '<label for="survey-bar">Progress of finding the faces in clip 0b2f6c1e</label>' in html
    assert '<progress id="survey-bar" max="100" value="25">25%</progress>' in html
    assert 'aria-live="polite">25% done. This page updates by itself.' in html
    assert '<script src="/ui/static/job-progress.js">' in html and "Find every face" not in html


def test_a_survey_waiting_for_another_clips_says_so_in_words():
    from openbwv.server.ui_pages_faces import SurveyJob

    html = render_faces_page(SurveyJob("0b2f6c1e-3a5d-4e7f-9a1b-2c3d4e5f6a7b", "ab" * 32))
    assert ('aria-live="polite">Waiting for the faces of another clip to be found first: one clip at a time. '
            'This page updates by itself.') in html
    assert '<progress id="survey-bar" max="100" value="0">0%</progress>' in html


def test_a_survey_that_failed_says_why_and_offers_to_try_again():
    from openbwv.server.ui_pages_faces import SurveyJob

    job = SurveyJob("0b2f6c1e-3a5d-4e7f-9a1b-2c3d4e5f6a7b", "ab" * 32, done=True,
                    error="the faces could not be found: the view was removed")
    html = render_faces_page(job)
    assert 'role="alert"' in html and "the view was removed" in html and "Find every face in this clip" in html
    assert "http-equiv" not in html and "job-progress.js" not in html


def test_every_face_is_listed_once_with_when_it_is_on_screen_and_for_how_long(footage, held, surveyed):
    page = surveyed.extra["listed"]
    listed = re.findall(r"Face (\d+): on screen (\d\d:\d\d)–(\d\d:\d\d), (\d+) frames?", page)
    assert len(listed) >= 3, page  # the requester and the two people passing
    assert [int(n) for n, *_ in listed] == list(range(1, len(listed) + 1))
    assert all(int(frames) <= held.frames for *_, frames in listed)
    assert any(start == "00:00" and int(frames) > held.frames // 2 for _, start, _, frames in listed)
    assert "First seen top left" in page and "First seen top centre" in page
    firsts = re.findall(r'href="([^"]+/preview\?t=[^"]+)">Show face (\d+)\'s first frame in the preview', page)
    lasts = re.findall(r'href="([^"]+/preview\?t=[^"]+)">Show face (\d+)\'s last frame', page)
    assert len(firsts) == len(lasts) == len(listed)
    shown = surveyed.get(footage.url + firsts[0][0].replace("&amp;", "&"), timeout=60)
    assert shown.status_code == 200 and "Redaction preview" in shown.text
    alts = re.findall(r'<img src="[^"]+/thumbnail.jpg" width="128" height="128" alt="([^"]+)"', page)
    assert len(alts) == len(listed) and all("pixels" in a and "clearest" in a for a in alts)
    thumb = surveyed.get(footage.url + held.faces + "/1/thumbnail.jpg", timeout=60)
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg"
    assert thumb.headers["Cache-Control"] == "no-store" and thumb.content[:2] == b"\xff\xd8"
    decrypts = records(footage, action="decrypt", target=f"clip:{held.clip}", actor="user:dora")
    assert any("face survey" in json.loads(r.detail).get("via", "") for r in decrypts)


def test_keeping_a_face_and_blurring_it_again_change_only_the_choices_in_the_address(footage, held, surveyed):
    kept = surveyed.get(footage.url + held.faces, params={"keep_face": "2"}, timeout=60, allow_redirects=False)
    assert kept.status_code == 303 and kept.headers["Location"].endswith("#face-2")
    keep = parse_qs(urlsplit(kept.headers["Location"]).query)["keep"]
    assert len(keep) == 1 and len(keep[0].split(",")) == 6
    page = surveyed.get(footage.url + kept.headers["Location"], timeout=60).text
    assert "Face 2 is kept clear as the requester's for its whole time on screen" in page
    assert "Blur face 2 again" in page and "Keep face 2 clear" not in page
    again = surveyed.get(footage.url + held.faces, params={"keep": keep[0], "keep_face": "2"}, timeout=60,
                         allow_redirects=False)
    assert parse_qs(urlsplit(again.headers["Location"]).query)["keep"] == keep  # picked once, not twice
    blurred = surveyed.get(footage.url + held.faces, params={"keep": keep[0], "blur_face": "2"}, timeout=60,
                           allow_redirects=False)
    assert blurred.status_code == 303 and "keep=" not in blurred.headers["Location"]


def test_a_face_number_the_survey_does_not_have_is_refused(footage, held, surveyed):
    listed = len(re.findall(r"Face \d+: on screen", surveyed.extra["listed"]))
    missing = surveyed.get(footage.url + held.faces, params={"keep_face": str(listed + 1)}, timeout=60)
    assert missing.status_code == 404
    assert f"this clip has no face {listed + 1}: the survey found faces 1 to {listed}" in missing.text
    for bad in ("0", "two", "-1"):
        r = surveyed.get(footage.url + held.faces, params={"keep_face": bad}, timeout=60)
        assert r.status_code == 400 and "is not a face number" in r.text, bad
    assert surveyed.get(footage.url + held.faces + f"/{listed + 1}/thumbnail.jpg", timeout=60).status_code == 404
    assert surveyed.get(footage.url + held.faces + "/x/thumbnail.jpg", timeout=60).status_code == 400


def test_a_clip_the_request_does_not_hold_is_refused_saying_why(footage, held):
    s = signed_in(footage, "dora")
    for path in ("", "/progress", "/1/thumbnail.jpg"):
        r = s.get(footage.url + f"/ui/requests/{held.request_id}/clips/{footage.clip}/faces" + path, timeout=30)
        assert r.status_code == 409, path
        assert f"clip {footage.clip} is not held for {held.request_id}: hold it first" in r.text


@pytest.mark.parametrize("user", ["olive", "sue", "evan", "aud", "ada"])
def test_no_role_without_request_export_reaches_the_faces(footage, held, user):
    s = signed_in(footage, user)
    for path in ("", "/progress", "/1/thumbnail.jpg"):
        r = s.get(footage.url + held.faces + path, timeout=30)
        assert r.status_code == 403 and "cannot use this page" in r.text, (user, path)
    form = s.get(footage.url + "/ui/", timeout=30)
    r = s.post(footage.url + held.faces, data={"csrf": _CSRF.search(form.text).group(1)}, timeout=30)
    assert r.status_code == 403
    refused = records(footage, actor=f"user:{user}", action="access_denied", outcome="denied")
    assert any("request.export" in r.detail for r in refused)


def tab_to(page, name: str, *, limit: int = 80) -> None:
    """Press Tab until the focused element is the button or link named `name`, as a keyboard user does."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement && document.activeElement.innerText.trim()")
        if focused == name:
            return
    raise AssertionError(f"{name!r} was not reached by {limit} presses of Tab")


def test_an_officer_picks_the_requesters_face_by_keyboard_and_the_export_keeps_that_track(footage, browser):
    held = hold_street_scene(footage, 7, "Sam Walker", segment_s=0.5)  # three segments: times across the joins
    tab = browser.new_context(accept_downloads=True).new_page()
    watch = fk.OffOrigin(footage.origin)
    tab.on("request", watch)
    fk.sign_in(tab, footage, "dora", next_path=f"/ui/requests/{held.request_id}/clips/{held.clip}/preview")
    tab_to(tab, "See every face in the whole clip, and choose the requester's there")
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert fk.axe_violations(tab) == []
    tab_to(tab, "Find every face in this clip")
    tab.keyboard.press("Enter")
    tab.get_by_role("heading", name=re.compile(r"faces? found in")).wait_for(timeout=120_000)
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "faces-listed")

    listed = re.findall(r"Face (\d+): on screen \S+, (\d+) frames?", tab.inner_text("main"))
    walker = tab.get_by_role("listitem").filter(has_text="First seen top centre")
    assert walker.count() == 1, tab.inner_text("main")
    number = int(re.search(r"Face (\d+):", walker.inner_text()).group(1))
    tab_to(tab, f"Keep face {number} clear: it is the requester")
    with tab.expect_navigation(url=re.compile(r"[?&]keep=")):
        tab.keyboard.press("Enter")
    walker = tab.locator(f"#face-{number}")
    assert "Kept clear: this is the requester." in walker.inner_text()
    others = tab.get_by_role("listitem").filter(has_text="Blurred in the export.")
    assert others.count() >= 2
    choices = tab.get_by_role("region", name="Your choices").inner_text()
    assert f"Face {number} is kept clear" in choices
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "faces-requester-kept")

    tab_to(tab, "Export this clip with these choices")
    tab.keyboard.press("Enter")
    tab.get_by_text(re.compile(r"Export \d+ is ready|The export was not made")).wait_for(timeout=120_000)
    assert "is ready" in tab.inner_text("main"), tab.inner_text("main")
    with tab.expect_download() as got:
        tab.get_by_role("link", name="Manifest (what was done to each clip)").click()
    manifest = json.loads(open(got.value.path()).read())
    report = manifest["clips"][0]["redaction"]
    track = number - 1  # the report counts tracks from 0, the page faces from 1
    assert [t["id"] for t in report["tracks"] if t["kept"]] == [track]
    assert len(report["tracks"]) >= 3 and all(not t["kept"] for t in report["tracks"] if t["id"] != track)
    # The faces listed are the export's tracks (surveyed from the officer's view, exported from the decrypted
    # original): as many, each as long.
    assert [(int(n) - 1, int(frames)) for n, frames in listed] == [
        (t["id"], t["last_frame"] - t["first_frame"] + 1) for t in report["tracks"]]
    kept = next(t for t in report["tracks"] if t["id"] == track)
    assert report["keep_boxes"][0]["track"] == track
    assert report["keep_boxes"][0]["frames_active"] == kept["last_frame"] - kept["first_frame"] + 1
    exported = records(footage, action="export", target=f"request:{held.request_id}", actor="user:dora")
    made = [json.loads(r.detail) for r in exported if "what" not in json.loads(r.detail)]  # not the downloads
    assert len(made) == 1
    detail = made[0]
    assert detail["kept"] == {held.clip: [{"box": manifest["clips"][0]["kept_boxes"][0], "track": track}]}
    assert watch.elsewhere() == []
    tab.context.close()
