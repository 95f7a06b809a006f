"""What the cameras record (H.264 video and AAC sound in MPEG-TS, firmware/encoder.py and
audio_encoder.py) plays in the browser the tests use, Debian's chromium, once the server has remuxed
it: the browser cannot play MPEG-TS, it can play H.264 + AAC in MP4, and the view served is that,
sound included, without re-encoding (the frames shown are the frames sealed).
"""

from __future__ import annotations

import io
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest

from kit import wait_for
from openbwv.enrol import create_server_keys, device_storage, enrol_device
from openbwv.home import Home
from openbwv.importer import import_video
from openbwv.server.auth import DockTokens
from openbwv.server.service import open_metadata
from ui import footage_kit as fk

server_kit = fk.server_kit
PASSWORD = "correct horse battery"
WIDTH, HEIGHT, SECONDS = 320, 180, 3


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
        samples = 1024
        for n in range(SECONDS * 48_000 // samples):
            t = (np.arange(samples) + n * samples) / 48_000
            frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :],
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48_000, n * samples
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


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
