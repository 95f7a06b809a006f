"""Watching a clip opens an audited view: the clip decrypted once, remuxed to a faststart MP4 (H.264 +
AAC, what Debian's chromium plays), served by byte range to the one who opened it, never cached, and
deleted with the clip or when the view expires.

One real server, real sealed clips uploaded by a dock (tests/ui/footage_kit.py); the tests run in
file order and the last one deletes a clip by the retention sweep.
"""

from __future__ import annotations

import http.client
import io
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import av
import pytest

from openbwv.server import audit
from openbwv.server.service import open_metadata
from ui import footage_kit

BWV = str(Path(sys.executable).with_name("bwv"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    yield from footage_kit.make_world(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def tokens(world):
    return {name: footage_kit.server_kit.staff_token(world.home, name, role)
            for name, role in footage_kit.ACCOUNTS.items()}


def fetch(world, token: str, path: str, **headers: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    parts = urlsplit(world.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", **headers})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def video(world, tokens, who: str, clip: str | None = None, **headers: str):
    return fetch(world, tokens[who], f"/api/v1/clips/{clip or world.clip}/video", **headers)


def records(world, **query) -> list:
    db = open_metadata(world.home)
    try:
        return audit.query(db.reader(), **query)
    finally:
        db.close()


def views_dir(world, clip: str) -> Path:
    return world.home.server_dir / "views" / clip


def test_the_whole_clip_is_a_faststart_h264_mp4_never_cached(world, tokens):
    status, headers, body = video(world, tokens, "evan")
    assert status == 200
    assert headers["Content-Type"] == "video/mp4"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) == len(body)
    assert body[4:8] == b"ftyp"
    assert body.find(b"moov") < body.find(b"mdat")  # the index first: playback starts before the end arrives
    with av.open(io.BytesIO(body)) as mp4:
        assert [s.codec_context.name for s in mp4.streams.video] == ["h264"]
        assert sum(1 for _ in mp4.demux(mp4.streams.video[0]) if _.size) > 10


def test_a_range_is_answered_206_with_exactly_those_bytes(world, tokens):
    _, _, whole = video(world, tokens, "evan")
    size = len(whole)
    status, headers, part = video(world, tokens, "evan", Range="bytes=0-99")
    assert (status, headers["Content-Range"], part) == (206, f"bytes 0-99/{size}", whole[:100])
    assert headers["Cache-Control"] == "no-store" and headers["Accept-Ranges"] == "bytes"
    status, headers, part = video(world, tokens, "evan", Range=f"bytes={size - 10}-")
    assert (status, headers["Content-Range"], part) == (206, f"bytes {size - 10}-{size - 1}/{size}", whole[-10:])
    status, headers, part = video(world, tokens, "evan", Range="bytes=-25")
    assert (status, part) == (206, whole[-25:])
    status, headers, part = video(world, tokens, "evan", Range=f"bytes=100-{size * 2}")  # clipped to the end
    assert (status, headers["Content-Range"], part) == (206, f"bytes 100-{size - 1}/{size}", whole[100:])


@pytest.mark.parametrize("bad", ["past the end", "bytes=abc", "bytes=50-10", "lines=0-10"])
def test_a_range_that_cannot_be_read_is_416_naming_the_length(world, tokens, bad):
    _, _, whole = video(world, tokens, "evan")
    asked = f"bytes={len(whole)}-" if bad == "past the end" else bad
    status, headers, body = video(world, tokens, "evan", Range=asked)
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(whole)}"
    assert headers["Content-Type"].startswith("application/json") and b"error" in body


def test_the_view_is_audited_once_naming_the_viewer_and_its_ranges_reuse_it(world, tokens):
    decrypts = records(world, action="decrypt", target=f"clip:{world.clip}", actor="user:evan")
    assert len(decrypts) == 1  # all the requests above read the one view the first opened
    (opened,) = decrypts
    assert opened.outcome == "ok"
    assert opened.details["purpose"] == "view" and opened.details["via"] == "api"
    assert len(opened.details["view"]) == 32 and opened.details["expires"].endswith("Z")
    key_use = records(world, action="key_use", target=f"clip:{world.clip}", actor="user:evan")
    assert len(key_use) == 1
    (view,) = [d.name for d in views_dir(world, world.clip).iterdir()]
    assert view == opened.details["view"]
    # Nothing else decrypted is left behind: no TS, no segment copies, no work directory.
    assert sorted(p.name for p in (views_dir(world, world.clip) / view).iterdir()) == ["clip.mp4", "view.json"]
    assert not any((world.home.server_dir / "views" / ".work").iterdir())


def test_another_viewer_gets_a_view_of_their_own(world, tokens):
    status, _, _ = video(world, tokens, "sue")
    assert status == 200
    (opened,) = records(world, action="decrypt", target=f"clip:{world.clip}", actor="user:sue")
    assert opened.details["view"] != records(world, action="decrypt", actor="user:evan")[0].details["view"]
    assert len(list(views_dir(world, world.clip).iterdir())) == 2


def test_an_officer_watches_their_own_clip(world, tokens):
    status, headers, _ = video(world, tokens, "olive", Range="bytes=0-9")
    assert (status, headers["Content-Range"].split("/")[0]) == (206, "bytes 0-9")


@pytest.mark.parametrize("who", ["ada", "aud", "oscar"])
def test_who_may_not_view_the_clip_is_refused_and_nothing_is_decrypted(world, tokens, who):
    """The admin and the auditor see no footage; oscar is an officer and the clip is olive's."""
    status, headers, body = video(world, tokens, who)
    assert status == 403 and headers["Content-Type"].startswith("application/json")
    assert b"may" in body
    assert records(world, action="decrypt", actor=f"user:{who}") == []
    denied = records(world, action="access_denied", actor=f"user:{who}")
    assert denied and denied[-1].target == f"GET /api/v1/clips/{world.clip}/video"


def test_the_sweep_deletes_the_views_with_the_clip(world, tokens):
    status, _, _ = video(world, tokens, "evan", clip=world.due_clip)
    assert status == 200
    assert len(list(views_dir(world, world.due_clip).iterdir())) == 1
    after_due = (datetime.now(timezone.utc) + timedelta(days=8)).isoformat()
    done = subprocess.run([BWV, "retention", "sweep", "--now", after_due], capture_output=True, text=True,
                          env={"BWV_HOME": str(world.home.root), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not views_dir(world, world.due_clip).exists()
    (deleted,) = records(world, action="delete", target=f"clip:{world.due_clip}")
    assert deleted.details["views_removed"] == 1
    assert views_dir(world, world.clip).is_dir()  # the clip not due keeps its views
    status, _, body = video(world, tokens, "evan", clip=world.due_clip)
    assert status == 404 and b"no segments" in body
    (failed,) = records(world, action="decrypt", target=f"clip:{world.due_clip}", outcome="failed")
    assert failed.actor == "user:evan"
