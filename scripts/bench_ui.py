"""Web application benchmarks: page times over a million clips, and the first frame of a long clip in chromium.

A plugin of bench.py (see `load_plugins` there).  The pages are fetched from a real `bwv server` over
loopback HTTP, signed in through the sign-in form as staff are, so a figure is what a person's browser
waits for (server time plus a loopback round trip), not a function timed in isolation.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from bench import Figure, Figures, _server_kit, benchmark, progress

CLIPS = int(os.environ.get("BWV_BENCH_UI_CLIPS", "1000000"))
DAY_US = 86_400_000_000
PASSWORD = "bench passphrase for staff"
# A view is per viewer, so each first-frame measurement has a viewer of its own and measures a fresh view.
FIRST_FRAME_VIEWERS = ("eo-bench", "eo-2", "eo-3")
ACCOUNTS = {"eo-bench": "evidence_officer", "eo-2": "evidence_officer", "eo-3": "evidence_officer",
            "sup-bench": "supervisor", "aud-bench": "auditor", "eo-other": "evidence_officer",
            "eo-api": "evidence_officer"}
REPEATS = 25  # timed fetches of each page (after one warm-up)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _home(root: Path):
    """A server home with keys and one account per role the pages need (a cheap scrypt cost: the sign-in
    is not what is measured)."""
    from openbwv.enrol import create_server_keys
    from openbwv.home import Home
    from openbwv.server import users
    from openbwv.server.service import open_metadata

    home = Home(root)
    create_server_keys(home)
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            for name, role in ACCOUNTS.items():
                users.add_user(conn, name, role, PASSWORD, actor="bench:setup", kdf_n=2**10)
    finally:
        db.close()
    return home


def _fill(path: Path, now_us: int, rng: random.Random) -> list[tuple[str, float, float, int]]:
    """CLIPS clips recorded over the 32 days before now (so a week's worth is due within the week), each with
    ten GNSS fixes walking from a random point around London, as the subject-access bench fills; returns
    some (clip, lat, lon, time) to search for."""
    from openbwv.server.geoindex import Fix, destination, insert_tracks

    lat0, lon0 = 51.28, -0.49
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    db.execute("BEGIN")
    rows: list[tuple] = []
    targets: list[tuple[str, float, float, int]] = []

    def tracks():
        for n in range(CLIPS):
            lat, lon = lat0 + rng.random() * 0.45, lon0 + rng.random() * 0.72
            t = now_us - rng.randrange(32 * DAY_US)
            bearing = rng.random() * 360
            clip_id = f"{n:08x}-0000-4000-8000-{n:012x}"
            if n % (CLIPS // 20 or 1) == 0:
                targets.append((clip_id, lat, lon, t))
            rows.append((clip_id, f"cam-{n % 5000}", t, t, t + 3_600_000_000, t + 10_000_000))
            if len(rows) >= 50_000:
                db.executemany("INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, "
                               "received_utc_us, last_utc_us) VALUES (?, ?, ?, ?, ?, ?)", rows)
                rows.clear()
            yield (f"{n:064x}", f"cam-{n % 5000}", clip_id,
                   [Fix(t + i * 1_000_000, *destination(lat, lon, bearing, 1.4 * i), 0.9) for i in range(10)])
    insert_tracks(db, tracks())
    db.executemany("INSERT INTO clips (clip_id, device_id, camera_start_us, recorded_utc_us, received_utc_us, "
                   "last_utc_us) VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.execute("UPDATE clip_stats SET longest_us = 10000000")
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return targets


def _signed_in(url: str, username: str):
    import requests

    s = requests.Session()
    form = s.get(f"{url}/ui/signin", timeout=30)
    reply = s.post(f"{url}/ui/signin", timeout=60, allow_redirects=False, data={
        "csrf": _CSRF.search(form.text).group(1), "username": username, "password": PASSWORD, "next": "/ui/"})
    if reply.status_code != 303:
        raise SystemExit(f"bench: {username} could not sign in: {reply.status_code} {reply.text[:200]}")
    return s


def _timed(session, url: str, shows: str) -> float:
    """Milliseconds to fetch the page; it must answer 200 and show `shows` (a page that found nothing is
    not a page that was measured)."""
    t0 = time.perf_counter()
    reply = session.get(url, timeout=120)
    elapsed = (time.perf_counter() - t0) * 1000
    if reply.status_code != 200 or shows not in reply.text:
        raise SystemExit(f"bench: {url} answered {reply.status_code} without {shows!r}: {reply.text[:300]}")
    return elapsed


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


@benchmark(
    "ui_pages",
    ui_page_p95_ms_1m=Figure("ms", "p95 over the footage search (2-hour window, 200 m around a clip's route), "
                                   "clip, due-list (next 7 days) and audit pages, fetched signed in from a real "
                                   "bwv server over loopback, 1,000,000 clips x 10 fixes, SQLite", at_most=200),
    ui_page_worst_p95_ms_1m=Figure("ms", "the slowest of the four pages' own p95 (which page: the bench's output)"),
)
def bench_ui_pages() -> Figures:
    server_kit = _server_kit()
    rng = random.Random(11)
    zone = ZoneInfo("Europe/London")
    with tempfile.TemporaryDirectory(prefix="bwv-bench-ui-") as tmp:
        home = _home(Path(tmp) / "home")
        now_us = int(datetime.now(timezone.utc).timestamp()) * 1_000_000
        progress(f"ui_pages: {CLIPS:,} clips with tracks")
        targets = _fill(home.server_dir / "evidence.db", now_us, rng)
        with server_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
            eo, sup, aud = (_signed_in(server.url, n) for n in ("eo-bench", "sup-bench", "aud-bench"))
            pages: dict[str, list[tuple[object, str, str]]] = {"footage": [], "clip": [], "due": [], "audit": []}
            for clip_id, lat, lon, t in targets:
                start = datetime.fromtimestamp(t / 1e6, timezone.utc).astimezone(zone) - timedelta(minutes=30)
                window = {"from": start.strftime("%Y-%m-%dT%H:%M"),
                          "to": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")}
                pages["footage"].append((eo, f"{server.url}/ui/footage?from={window['from']}&to={window['to']}"
                                             f"&lat={lat:.6f}&lon={lon:.6f}&radius_m=200", f"/ui/clips/{clip_id}"))
                pages["clip"].append((eo, f"{server.url}/ui/clips/{clip_id}", clip_id[:8]))
            pages["due"] = [(sup, f"{server.url}/ui/retention/due", "due for deletion by")]
            pages["audit"] = [(aud, f"{server.url}/ui/audit", "Is the audit trail intact?")]
            times: dict[str, list[float]] = {}
            for name, urls in pages.items():
                progress(f"ui_pages: {name} page x {REPEATS}")
                _timed(*urls[0])  # warm-up: the first read of a page's rows from disk
                times[name] = [_timed(*urls[i % len(urls)]) for i in range(REPEATS)]
    every = [v for vs in times.values() for v in vs]
    per_page = {name: _p95(vs) for name, vs in times.items()}
    for name, value in per_page.items():
        progress(f"ui_pages: {name} p95 {value:.0f} ms (median {statistics.median(times[name]):.0f} ms)")
    return {"ui_page_p95_ms_1m": _p95(every), "ui_page_worst_p95_ms_1m": max(per_page.values())}


FIRST_FRAME_SECONDS = int(os.environ.get("BWV_BENCH_FIRST_FRAME_SECONDS", "300"))


def _long_clip(path: Path, seconds: int) -> Path:
    """A 1080p30 H.264 + AAC clip of `seconds` (FFmpeg's test pattern and a tone), at about the camera's
    bitrate, as the camera's footage would be."""
    import subprocess

    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={seconds}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-b:v", "6M", "-pix_fmt", "yuv420p", "-g", "30", "-c:a", "aac",
                    "-ac", "1", "-b:a", "64k", "-shortest", str(path)], check=True, timeout=3600)
    return path


# In the page: from pressing play (play() called, as the button does) to the first frame the video
# element presents (requestVideoFrameCallback), with the first `playing` and the first `timeupdate` past
# 0 beside it, then to the page's "whole clip is ready" (seeking works from then on).
_PLAY = """() => new Promise((resolve, reject) => {
    const v = document.getElementById("clip-video");
    const at = {};
    v.muted = true;
    v.addEventListener("error", () => reject(new Error("video error " + (v.error && v.error.code))));
    v.addEventListener("playing", () => { if (at.playing === undefined) at.playing = performance.now() - t0; });
    v.addEventListener("timeupdate", () => {
        if (at.timeupdate === undefined && v.currentTime > 0) at.timeupdate = performance.now() - t0;
    });
    const t0 = performance.now();
    v.requestVideoFrameCallback(() => { at.frame = performance.now() - t0; });
    v.play().catch(reject);
    const ready = () => {
        if (v.getAttribute("data-ready") === "true" && at.frame !== undefined) {
            at.ready = performance.now() - t0;
            resolve(at);
        } else {
            setTimeout(ready, 10);
        }
    };
    ready();
})"""


def _first_fragment_ms(session, url: str) -> float:
    """Milliseconds until a fresh view's answer has brought its index and first whole fragment (ftyp,
    moov, moof and its mdat): what the browser needs before it can show a frame."""
    import struct

    t0 = time.perf_counter()
    with session.get(url, stream=True, timeout=600, headers={"Range": "bytes=0-"}) as reply:
        if reply.status_code not in (200, 206):
            raise SystemExit(f"bench: the clip's view answered {reply.status_code}: {reply.text[:200]}")
        data, seen = b"", []
        for piece in reply.iter_content(65536):
            data += piece
            while len(data) >= 8:
                size, kind = struct.unpack(">I4s", data[:8])
                if len(data) < size:
                    break
                seen.append(kind)
                data = data[size:]
            if b"mdat" in seen:
                return (time.perf_counter() - t0) * 1000
    raise SystemExit(f"bench: the view ended without a whole fragment (boxes {seen})")


@benchmark(
    "ui_first_frame",
    ui_first_frame_ms=Figure("ms", "median of 3 fresh views (a viewer each, same clip, same chromium): from pressing "
                                   "play on a 5-minute 1080p30 clip's page to the first frame the video element "
                                   "presents (requestVideoFrameCallback); the audited view is opened by that press",
                             at_most=1000),
    ui_first_frame_worst_ms=Figure("ms", "same runs, the slowest of the 3"),
    ui_first_playing_ms=Figure("ms", "same runs, median: to the video's first `playing` event"),
    ui_seek_ready_ms=Figure("ms", "same runs, median: from pressing play to the whole clip ready (verified, "
                                  "decrypted, remuxed to faststart) and the page switched to it, so seeking works"),
    ui_view_open_ms=Figure("ms", "the server's share of the first frame: a fresh view's answer, from the request to "
                                 "its index and first whole fragment (verify every segment, audit, decrypt and "
                                 "remux the first), over loopback"),
    ui_view_ready_ms=Figure("ms", "a fresh view made whole before a byte is sent (the API's /video, as every view "
                                  "was before the progressive view): the first frame's old floor"),
)
def bench_ui_first_frame() -> Figures:
    import requests
    from playwright.sync_api import sync_playwright

    from openbwv.enrol import device_storage, enrol_device
    from openbwv.importer import import_video
    from openbwv.server.auth import DockTokens
    from openbwv.server.service import open_metadata

    server_kit = _server_kit()
    with tempfile.TemporaryDirectory(prefix="bwv-bench-frame-") as tmp:
        root = Path(tmp)
        home = _home(root / "home")
        enrol_device(home, "cam-long")
        db = open_metadata(home)
        try:
            token = DockTokens(db).add_dock("dock-bench")
        finally:
            db.close()
        progress(f"ui_first_frame: encoding a {FIRST_FRAME_SECONDS} s 1080p30 clip")
        video = _long_clip(root / "long.mp4", FIRST_FRAME_SECONDS)
        progress("ui_first_frame: sealing it as a camera does")
        sealed = import_video(video, device_storage(home, "cam-long"), segment_seconds=10.0,
                              start=datetime.now(timezone.utc) - timedelta(hours=2))
        clip_id = str(sealed.clip_id)
        with server_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
            progress(f"ui_first_frame: docking {len(sealed.segments)} segments")
            dock = server_kit.TusSession(server.url, token)
            for info in sealed.segments:
                reply = dock.upload(server_kit.Segment(info.path, "cam-long", info.sequence, info.segment_hash.hex(),
                                                       info.preamble.prev_hash.hex()))
                if reply.status != 204:
                    raise SystemExit(f"bench: upload of #{info.sequence} answered {reply.status}")
            runs: list[dict] = []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
                try:
                    for viewer in FIRST_FRAME_VIEWERS:
                        progress(f"ui_first_frame: {viewer} plays it in chromium (a fresh view)")
                        context = browser.new_context()
                        page = context.new_page()
                        page.goto(f"{server.url}/ui/signin?next=/ui/clips/{clip_id}")
                        page.get_by_label("User name").fill(viewer)
                        page.get_by_label("Password").fill(PASSWORD)
                        page.get_by_role("button", name="Sign in").click()
                        page.wait_for_url(f"**/ui/clips/{clip_id}")
                        runs.append(page.evaluate(_PLAY))
                        context.close()
                        time.sleep(2)  # let the last view's faststart copy finish: each run starts alike
                finally:
                    browser.close()
            progress("ui_first_frame: a fresh view's first fragment over HTTP, then a view made whole")
            view_ms = _first_fragment_ms(_signed_in(server.url, "eo-other"), f"{server.url}/ui/clips/{clip_id}/video")
            time.sleep(2)
            api = requests.post(f"{server.url}/api/v1/login", json={"username": "eo-api", "password": PASSWORD},
                                timeout=60).json()["token"]
            t0 = time.perf_counter()
            whole = requests.get(f"{server.url}/api/v1/clips/{clip_id}/video", timeout=600,
                                 headers={"Authorization": f"Bearer {api}", "Range": "bytes=0-1023"})
            ready_ms = (time.perf_counter() - t0) * 1000
            if whole.status_code != 206:
                raise SystemExit(f"bench: the clip's view answered {whole.status_code}: {whole.text[:200]}")
    for viewer, run in zip(FIRST_FRAME_VIEWERS, runs):
        progress(f"ui_first_frame: {viewer}: first frame {run['frame']:.0f} ms, playing {run.get('playing', 0):.0f} ms, "
                 f"first timeupdate past 0 {run.get('timeupdate', float('nan')):.0f} ms, seekable {run['ready']:.0f} ms")
    progress(f"ui_first_frame: first fragment over HTTP {view_ms:.0f} ms; a view made whole {ready_ms:.0f} ms")
    frames = [r["frame"] for r in runs]
    return {"ui_first_frame_ms": statistics.median(frames), "ui_first_frame_worst_ms": max(frames),
            "ui_first_playing_ms": statistics.median(r.get("playing", r["frame"]) for r in runs),
            "ui_seek_ready_ms": statistics.median(r["ready"] for r in runs),
            "ui_view_open_ms": view_ms, "ui_view_ready_ms": ready_ms}
