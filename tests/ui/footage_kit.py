"""The web application tests' footage world: a real `bwv server` with one account per role and real footage,
and Debian's chromium driven by Playwright (its own browser download is unreachable here).

The world, made once per test module (`make_world`):

* two cameras, each worn by its own officer (``olive`` wears cam-a, ``oscar`` cam-b);
* a 2 s H.264 clip on cam-a recorded two days ago (``clip``: no GNSS fix, so no place rules it out);
* a 2 s clip on cam-a recorded three hours before it (``tracked``: the one staff find on the map, play
  and mark), with a GNSS track sealed in it: a fix every 0.1 s walking north-east from Westminster
  Bridge (``track``);
* a clip on cam-b recorded 30 days ago, received now, so it is due for deletion within the week
  (``due_clip``: the supervisor's due list);
* one account per staff role, each with a password, so the browser signs in as staff do.

Every segment is really sealed (import_video, as a camera seals) and really uploaded by a dock
over tus: the clip the browser plays is decrypted from what the server holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import kit as shared_kit
from openbwv.enrol import create_server_keys, device_storage, enrol_device
from openbwv.footage import make_synthetic_video
from openbwv.home import Home
from openbwv.importer import import_video
from openbwv.server import lifecycle, users
from openbwv.server.auth import DockTokens
from openbwv.server.geoindex import to_utc_us
from openbwv.server.service import open_metadata

UTC = timezone.utc
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "ui"
server_kit = shared_kit.server_kit()

# One account per role; the two officers wear one camera each.
ACCOUNTS = {
    "olive": users.OFFICER, "oscar": users.OFFICER, "sue": users.SUPERVISOR, "evan": users.EVIDENCE_OFFICER,
    "dora": users.DISCLOSURE_OFFICER, "aud": users.AUDITOR, "ada": users.ADMIN,
}
WORN = {"cam-a": "olive", "cam-b": "oscar"}
TRACK_START = (51.5007, -0.1246)
TRACK_STEP = (0.00005, 0.00005)  # per 0.1 s: about 6.6 m, so the position plainly moves as the clip plays


def walk(start_us: int, seconds: float = 2.0) -> list[tuple[int, float, float]]:
    """Fixes (UTC µs, lat, lon) every 0.1 s from `start_us`: the clip's GNSS track."""
    return [(start_us + n * 100_000, round(TRACK_START[0] + n * TRACK_STEP[0], 7),
             round(TRACK_START[1] + n * TRACK_STEP[1], 7)) for n in range(int(seconds * 10) + 1)]


@dataclass
class World:
    home: Home
    server: object  # server_kit.ServerProcess
    clip: str  # cam-a, two days old, no GNSS fix
    due_clip: str  # cam-b, due within the week
    recorded: datetime
    root: Path
    tracked: str = ""  # cam-a, three hours before `clip`, with a GNSS track
    track: list = field(default_factory=list)  # the tracked clip's fixes, (UTC µs, lat, lon)
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        parts = urlsplit(self.server.url)
        return f"{parts.scheme}://{parts.netloc}"


def _accounts(home: Home, first_worn: datetime) -> None:
    """The staff accounts (a cheap scrypt cost keeps the tests quick; logins read the cost from the
    stored hash, so they work as in service) and which officer wore which camera."""
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            for name, role in ACCOUNTS.items():
                users.add_user(conn, name, role, PASSWORD, full_name=name.title(), actor="test:setup", kdf_n=2**10)
            for device, officer in WORN.items():
                lifecycle.assign_device(conn, device, officer, to_utc_us(first_worn), None, actor="test:setup",
                                        at=datetime.now(UTC).isoformat())
    finally:
        db.close()


def _upload(dock, sealed, device: str) -> None:
    for info in sealed.segments:
        seg = server_kit.Segment(info.path, device, info.sequence, info.segment_hash.hex(),
                                 info.preamble.prev_hash.hex())
        reply = dock.upload(seg)
        assert reply.status == 204, f"upload of {device} #{info.sequence}: {reply.status} {reply.body!r}"


def make_world(root: Path, *server_args: str) -> Iterator[World]:
    """Generator for a module fixture: the world above, with its server running; stopped afterwards."""
    home = Home(root / "home")
    create_server_keys(home)
    db = open_metadata(home)
    try:
        dock_token = DockTokens(db).add_dock("dock-ui")
    finally:
        db.close()
    for device in WORN:
        enrol_device(home, device)
    now = datetime.now(UTC).replace(microsecond=0)
    recorded, old = now - timedelta(days=2), now - timedelta(days=30)
    _accounts(home, now - timedelta(days=60))
    video = make_synthetic_video(root / "original.mp4", seconds=2, width=160, height=120)
    walked = recorded - timedelta(hours=3)
    track = walk(to_utc_us(walked))
    tracked = import_video(video, device_storage(home, "cam-a"), segment_seconds=1.0, start=walked, gnss=track)
    fresh = import_video(video, device_storage(home, "cam-a"), segment_seconds=1.0, start=recorded)
    aged = import_video(video, device_storage(home, "cam-b"), segment_seconds=2.0, start=old)
    with server_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        dock = server_kit.TusSession(server.url, dock_token)
        _upload(dock, tracked, "cam-a")
        _upload(dock, fresh, "cam-a")
        _upload(dock, aged, "cam-b")
        yield World(home=home, server=server, clip=str(fresh.clip_id), due_clip=str(aged.clip_id),
                    recorded=recorded, root=root, tracked=str(tracked.clip_id), track=track,
                    extra={"dock_token": dock_token})


# --------------------------------------------------------------------------- the browser
def launch(playwright):
    """Debian's chromium, headless, as root (no sandbox): never `playwright install`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])


class OffOrigin:
    """Every request a page makes, so a test can say none went to another origin."""

    def __init__(self, origin: str):
        self.origin = origin
        self.seen: list[str] = []

    def __call__(self, request) -> None:
        self.seen.append(request.url)

    def elsewhere(self) -> list[str]:
        return [u for u in self.seen
                if not (u.startswith(self.origin + "/") or u == self.origin or u.startswith(("data:", "blob:")))]


def sign_in(page, world: World, username: str, *, password: str = PASSWORD, next_path: str = "/ui/") -> None:
    """Sign in through the form, as a person does (labels, not selectors of the markup)."""
    page.goto(world.url + "/ui/signin?next=" + next_path)
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("load")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page) -> list[str]:
    """WCAG 2.x A and AA violations axe-core finds on the page, one line each (empty: none)."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": [
        "wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]}})
    found = results.response.get("violations", [])
    return [f"{v['id']} ({v.get('impact')}): {v['help']} at "
            + ", ".join(json.dumps(n.get("target")) for n in v.get("nodes", [])[:3]) for v in found]


__all__ = ["ACCOUNTS", "CHROMIUM", "TRACK_START", "OffOrigin", "PASSWORD", "World", "WORN", "axe_violations", "launch",
           "make_world", "screenshot", "sign_in", "walk"]
