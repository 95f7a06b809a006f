"""The web application tests' kit: a real `bwv server` with one account per role, a signed-in HTTP
client, and Debian's chromium driven by Playwright (axe-core for accessibility, screenshots under
build/ui/, every request the page makes recorded so no other origin slips in)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from lifecycle import http_kit as server_kit

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "ui"
PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
# Every role's account, named for the role (the officer "pc-own" wears camera cam-own).
ACCOUNTS = {"officer": "pc-own", "supervisor": "sgt-sue", "evidence_officer": "eo-eve",
            "disclosure_officer": "do-dan", "auditor": "aud-ann", "admin": "adm-abe"}
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class UiWorld:
    home: object
    server: object
    root: Path
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url


def make_world(root: Path, *server_args: str, config: str = "") -> tuple[object, list[str]]:
    """A server home with keys and one account per role (cheap scrypt, real logins)."""
    home = server_kit.make_home(root / "home")
    for role, name in ACCOUNTS.items():
        server_kit.staff_token(home, name, role, password=PASSWORD)
    if config:
        (Path(home.root) / "config.toml").write_text(config)
    return home, list(server_args)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(url: str, role: str, *, session: requests.Session | None = None) -> requests.Session:
    """A requests session signed in through the sign-in form, as a browser does."""
    s = session or requests.Session()
    form = s.get(f"{url}/ui/signin", timeout=10)
    r = s.post(f"{url}/ui/signin", data={"csrf": csrf_of(form.text), "username": ACCOUNTS[role],
                                         "password": PASSWORD, "next": "/ui/"}, timeout=30, allow_redirects=False)
    assert r.status_code == 303, f"sign-in as {role} answered {r.status_code}: {r.text[:300]}"
    return s


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)


class OriginWatch:
    """Every URL a page asked for; `foreign()` lists those of any origin but the server's."""

    def __init__(self, page, base: str):
        self.base = "{0.scheme}://{0.netloc}".format(urlsplit(base))
        self.urls: list[str] = []
        page.on("request", lambda req: self.urls.append(req.url))

    def foreign(self) -> list[str]:
        return [u for u in self.urls if not (u.startswith(self.base + "/") or u.startswith(("data:", "blob:")))]


def browser_sign_in(page, url: str, role: str) -> None:
    page.goto(f"{url}/ui/signin")
    page.get_by_label("User name").fill(ACCOUNTS[role])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/ui/**")


def axe_violations(page) -> list[str]:
    """WCAG 2.x A/AA violations axe-core finds on the page as it is now (rule: nodes)."""
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG}})
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])} node(s), e.g. {v['nodes'][0]['html'][:120]})"
            for v in result.response["violations"]]


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
