"""What the cameras record (H.264 video and AAC sound in MPEG-TS, firmware/encoder.py and
audio_encoder.py) plays in the browser the tests use, Debian's chromium, once the server has remuxed
it: the browser cannot play MPEG-TS, it can play H.264 + AAC in MP4, and the view served is that,
sound included, without re-encoding (the frames shown are the frames sealed).

The clip page's first request for a fresh view is answered as the view is made (a fragmented MP4,
streamed as its segments are decrypted); once the whole clip is ready it is served by range, the page
switches to it and seeking works.  Each view is one audit record however it is fetched, and a viewer
who leaves mid-stream leaves a view that is finished, kept for its hour like any other, and reused.
"""

from __future__ import annotations

import io
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
import requests

from kit import wait_for
from media.media_kit import mux_tone_and_flush
from openbwv.enrol import create_server_keys, device_storage, enrol_device
from openbwv.home import Home
from openbwv.importer import import_video
from openbwv.server import audit
from openbwv.server.auth import DockTokens
from openbwv.server.service import open_metadata
from ui import footage_kit as fk

server_kit = fk.server_kit
PASSWORD = "correct horse battery"
VIEWERS = {"ed": "evidence_officer", "sam": "supervisor", "una": "evidence_officer"}
WIDTH, HEIGHT, SECONDS = 320, 180, 12  # a second a segment: a clip of 12 segments


def camera_like_video(path) -> None:
    """H.264 and AAC-LC, as the camera encodes: a moving bar and a 440 Hz tone."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=Fraction(25))
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"preset": "ultrafast", "g": "25", "bf": "0"}
        audio = out.add_stream("aac", rate=48_000)
        audio.layout = "mono"
        for i in range(SECONDS * 25):
            img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            img[:, (i * 4) % WIDTH:(i * 4) % WIDTH + 16] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        mux_tone_and_flush(out, video, audio, SECONDS)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("playback")
    home = Home(root / "home")
    create_server_keys(home)
    db = open_metadata(home)
    try:
        dock_token = DockTokens(db).add_dock("dock-p")
    finally:
        db.close()
    enrol_device(home, "cam-s")
    camera_like_video(root / "camera.mp4")
    sealed = import_video(root / "camera.mp4", device_storage(home, "cam-s"), segment_seconds=1.0)
    token = server_kit.staff_token(home, "eve", "evidence_officer", password=PASSWORD)
    for name, role in VIEWERS.items():  # each test that needs a fresh view has a viewer of its own
        server_kit.staff_token(home, name, role, password=PASSWORD)
    with server_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        dock = server_kit.TusSession(server.url, dock_token)
        for info in sealed.segments:
            reply = dock.upload(server_kit.Segment(info.path, "cam-s", info.sequence, info.segment_hash.hex(),
                                                   info.preamble.prev_hash.hex()))
            assert reply.status == 204, reply.body
        yield SimpleNamespace(url=server.url, clip=str(sealed.clip_id), token=token, home=home)


def test_the_view_is_the_cameras_h264_and_aac_remuxed_into_a_faststart_mp4(world):
    reply = server_kit.TusSession(world.url, world.token).get(f"/api/v1/clips/{world.clip}/video")
    assert reply.status == 200 and reply.headers["Content-Type"] == "video/mp4"
    assert reply.body.find(b"moov") < reply.body.find(b"mdat")
    with av.open(io.BytesIO(reply.body)) as mp4:
        assert [s.codec_context.name for s in mp4.streams.video] == ["h264"]
        assert [s.codec_context.name for s in mp4.streams.audio] == ["aac"]
        assert mp4.streams.video[0].codec_context.width == WIDTH


def test_chromium_plays_it_picture_and_sound_and_could_not_play_the_sealed_ts(world):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = fk.launch(p)
        try:
            page = browser.new_page()
            fk.sign_in(page, world, "eve", password=PASSWORD, next_path=f"/ui/clips/{world.clip}")
            # Why the server remuxes: this browser has no MPEG-TS player, and does have H.264 + AAC in MP4.
            assert page.evaluate("document.createElement('video').canPlayType('video/mp2t')") == ""
            assert page.evaluate("document.createElement('video').canPlayType("
                                 "'video/mp4; codecs=\"avc1.64001f, mp4a.40.2\"')") == "probably"
            video = page.locator("#clip-video")
            video.evaluate("v => { v.muted = true; return v.play(); }")
            wait_for(lambda: video.evaluate("v => v.readyState >= 2 && v.currentTime > 1"), timeout=30)
            assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [WIDTH, HEIGHT]
            assert video.evaluate("v => v.webkitAudioDecodedByteCount") > 0  # the sound was decoded too
            assert video.evaluate("v => v.error") is None
        finally:
            browser.close()


def signed_in(world, username: str) -> requests.Session:
    """A requests session signed in through the web application's form, as a browser is."""
    from ui.ui_kit import csrf_of

    s = requests.Session()
    form = s.get(f"{world.url}/ui/signin", timeout=30)
    reply = s.post(f"{world.url}/ui/signin", timeout=60, allow_redirects=False, data={
        "csrf": csrf_of(form.text), "username": username, "password": PASSWORD, "next": "/ui/"})
    assert reply.status_code == 303, reply.text[:300]
    return s


def decrypts(world, username: str) -> list:
    db = open_metadata(world.home)
    try:
        return audit.query(db.reader(), action="decrypt", target=f"clip:{world.clip}", actor=f"user:{username}")
    finally:
        db.close()


def views_of(world) -> list:
    root = world.home.server_dir / "views" / world.clip
    return [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []


def ready(session, world) -> dict:
    """The page's question to the server, asked until the view is ready (each answer waits a while)."""
    answers: list[dict] = []

    def asked() -> bool:
        reply = session.get(f"{world.url}/ui/clips/{world.clip}/video/ready", timeout=60)
        assert reply.status_code == 200 and reply.headers["Cache-Control"] == "no-store", reply.text
        answers.append(reply.json())
        return answers[-1]["ready"]
    wait_for(asked, timeout=60)
    return answers[-1]


def test_a_fresh_view_streams_from_its_first_segment_then_is_served_whole_by_range(world):
    ed = signed_in(world, "ed")
    with ed.get(f"{world.url}/ui/clips/{world.clip}/video", stream=True, timeout=60,
                headers={"Range": "bytes=0-"}) as first:  # what a <video> asks first
        assert first.status_code == 200
        assert first.headers["Content-Type"] == "video/mp4" and first.headers["Cache-Control"] == "no-store"
        # Made as it is sent: no length and no ranges yet (12 segments take longer to remux than this
        # answer takes to start).
        assert first.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in first.headers
        streamed = first.raw.read()
    assert streamed[4:8] == b"ftyp" and streamed.find(b"moov") < streamed.find(b"moof")  # fragmented, index first
    with av.open(io.BytesIO(streamed)) as mp4:
        assert [s.codec_context.name for s in mp4.streams.video] == ["h264"]
        assert [s.codec_context.name for s in mp4.streams.audio] == ["aac"]
        frames = sum(1 for p in mp4.demux(mp4.streams.video[0]) if p.size)
    assert frames == SECONDS * 25  # every frame the camera sealed, none lost to streaming

    state = ready(ed, world)
    whole = ed.get(world.url + state["src"], timeout=60)
    assert whole.status_code == 200 and int(whole.headers["Content-Length"]) == len(whole.content)
    assert whole.headers["Accept-Ranges"] == "bytes" and whole.headers["Cache-Control"] == "no-store"
    assert whole.content.find(b"moov") < whole.content.find(b"mdat") and b"moof" not in whole.content  # faststart
    part = ed.get(world.url + state["src"], headers={"Range": "bytes=100-199"}, timeout=60)
    assert (part.status_code, part.content) == (206, whole.content[100:200])
    assert abs(state["duration_s"] - SECONDS) < 0.2

    (record,) = decrypts(world, "ed")  # one view, one record, however many requests read it
    assert record.details["via"] == "web" and record.details["view"] == state["src"].rsplit("=", 1)[1]
    assert ed.get(f"{world.url}/ui/clips/{world.clip}/video", timeout=60).status_code == 200  # now by range
    assert len(decrypts(world, "ed")) == 1


def test_a_viewer_who_leaves_mid_stream_leaves_a_finished_view_that_is_reused(world):
    sam = signed_in(world, "sam")
    before = {d.name for d in views_of(world)}
    with sam.get(f"{world.url}/ui/clips/{world.clip}/video", stream=True, timeout=60) as first:
        assert first.status_code == 200
        assert first.raw.read(64)[4:8] == b"ftyp"
    # The page is closed with the clip half sent: nothing half made is left behind.
    (view,) = [d for d in views_of(world) if d.name not in before]

    def finished() -> bool:  # the view made whole, and no segment copies or half-written file left
        return (sorted(p.name for p in view.iterdir()) == ["clip.mp4", "view.json"]
                and not any((world.home.server_dir / "views" / ".work").iterdir()))
    wait_for(finished, timeout=60)
    (record,) = decrypts(world, "sam")
    assert record.details["view"] == view.name
    again = sam.get(f"{world.url}/ui/clips/{world.clip}/video", headers={"Range": "bytes=0-"}, timeout=60)
    assert again.status_code == 206 and again.headers["Content-Range"].startswith("bytes 0-")  # ready: by range
    assert len(decrypts(world, "sam")) == 1


def test_the_page_switches_to_the_whole_clip_once_ready_and_seeking_works(world):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = fk.launch(p)
        try:
            page = browser.new_page()
            fk.sign_in(page, world, "una", password=PASSWORD, next_path=f"/ui/clips/{world.clip}")
            video = page.locator("#clip-video")
            video.evaluate("v => { v.muted = true; return v.play(); }")
            wait_for(lambda: video.evaluate("v => v.currentTime > 0.2"), timeout=30)
            wait_for(lambda: video.get_attribute("data-ready") == "true", timeout=60)
            assert "ready: you can move to any point" in page.locator("#video-seek").inner_text()
            wait_for(lambda: video.evaluate("v => v.seekable.length === 1 && v.seekable.end(0) > %d" % (SECONDS - 1)),
                     timeout=30)
            target = SECONDS - 2
            video.evaluate(f"v => {{ v.currentTime = {target}; }}")
            wait_for(lambda: video.evaluate(f"v => !v.seeking && v.currentTime >= {target}"), timeout=30)
            assert video.evaluate("v => v.error") is None
            assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [WIDTH, HEIGHT]
            # It played the stream first, then the ready view's own address (served by range).
            assert video.get_attribute("data-switched") == "true"
            assert "/video?view=" in video.evaluate("v => v.currentSrc")
        finally:
            browser.close()
    (record,) = decrypts(world, "una")  # the stream, the switch and the seek read one view
    assert record.details["via"] == "web"
