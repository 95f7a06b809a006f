"""Signing in and out of the web application, and what protects a session: CSRF tokens, a new token
at every sign-in, revocation at sign-out, the idle timer, and the headers on every page."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from openbwv.server import users
from openbwv.server.service import open_metadata
from openbwv.server.ui.session import SESSION_COOKIE, SessionPolicy

from ui import ui_kit


def _token_row(world, token: str):
    db = open_metadata(world.home)
    try:
        return db.reader().execute("SELECT username, purpose, created_utc, expires_utc, revoked_utc FROM user_tokens "
                                   "WHERE token_sha256 = ?", (users.token_digest(token),)).fetchone()
    finally:
        db.close()


def test_every_page_and_static_file_has_a_strict_policy(world):
    for path in ("/ui/signin", "/ui/static/ui.css", "/ui/static/ui.js", "/ui/no-such-page"):
        r = requests.get(world.url + path, timeout=10)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp, path
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert r.headers["Referrer-Policy"] == "no-referrer", path
    signed = ui_kit.sign_in(world.url, "supervisor")
    assert signed.get(world.url + "/ui/", timeout=10).headers["Cache-Control"] == "no-store"


def test_the_session_cookie_is_httponly_strict_and_scoped_to_the_application(world):
    s = requests.Session()
    form = s.get(world.url + "/ui/signin", timeout=10)
    r = s.post(world.url + "/ui/signin", data={"csrf": ui_kit.csrf_of(form.text), "username": "sgt-sue",
                                               "password": ui_kit.PASSWORD}, allow_redirects=False, timeout=30)
    cookie = [h for h in r.raw.headers.getlist("Set-Cookie") if h.startswith(SESSION_COOKIE + "=")][0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback here; over TLS it is set (request.secure)


def test_a_wrong_password_is_refused_with_a_plain_message(world):
    s = requests.Session()
    form = s.get(world.url + "/ui/signin", timeout=10)
    r = s.post(world.url + "/ui/signin", data={"csrf": ui_kit.csrf_of(form.text), "username": "sgt-sue",
                                               "password": "not the password at all"}, timeout=30)
    assert r.status_code == 401 and "The user name or password is not right." in r.text
    assert SESSION_COOKIE not in s.cookies


def test_a_form_without_its_csrf_token_is_refused(world):
    s = ui_kit.sign_in(world.url, "evidence_officer")
    token = s.cookies[SESSION_COOKIE]
    for data in ({}, {"csrf": "forged"}):
        r = s.post(world.url + "/ui/signout", data=data, timeout=10)
        assert r.status_code == 403 and "This form has expired" in r.text
    assert _token_row(world, token)[4] is None, "a refused sign-out must not end the session"
    # Another session's token does not do either: a CSRF token is bound to its session.
    other = ui_kit.sign_in(world.url, "evidence_officer")
    theirs = ui_kit.csrf_of(other.get(world.url + "/ui/", timeout=10).text)
    assert s.post(world.url + "/ui/signout", data={"csrf": theirs}, timeout=10).status_code == 403
    # The sign-in form is protected too (no logging a browser into someone else's account).
    fresh = requests.Session()
    r = fresh.post(world.url + "/ui/signin", data={"username": "sgt-sue", "password": ui_kit.PASSWORD}, timeout=10)
    assert r.status_code == 403 and SESSION_COOKIE not in fresh.cookies


def test_a_cookie_planted_before_sign_in_is_not_the_one_signed_in(world):
    victim = ui_kit.sign_in(world.url, "officer")  # the browser holds a token someone else knows
    planted = victim.cookies[SESSION_COOKIE]
    ui_kit.sign_in(world.url, "supervisor", session=victim)
    now = victim.cookies[SESSION_COOKIE]
    assert now and now != planted
    assert _token_row(world, planted)[4] is not None, "the token the browser brought is revoked at sign-in"
    stale = requests.Session()
    stale.cookies.set(SESSION_COOKIE, planted, path="/ui/")
    assert stale.get(world.url + "/ui/", allow_redirects=False, timeout=10).status_code == 303


def test_sign_out_revokes_the_token(world):
    s = ui_kit.sign_in(world.url, "auditor")
    token = s.cookies[SESSION_COOKIE]
    csrf = ui_kit.csrf_of(s.get(world.url + "/ui/", timeout=10).text)
    r = s.post(world.url + "/ui/signout", data={"csrf": csrf}, allow_redirects=False, timeout=10)
    assert r.status_code == 303
    assert _token_row(world, token)[4] is not None
    replay = requests.Session()
    replay.cookies.set(SESSION_COOKIE, token, path="/ui/")
    r = replay.get(world.url + "/ui/", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/signin")


def test_a_web_session_lives_for_the_idle_time_and_activity_extends_it(world):
    s = ui_kit.sign_in(world.url, "disclosure_officer")
    username, purpose, created, expires, _ = _token_row(world, s.cookies[SESSION_COOKIE])
    assert (username, purpose) == ("do-dan", "web")
    lifetime = datetime.fromisoformat(expires) - datetime.fromisoformat(created)
    assert timedelta(minutes=14) <= lifetime <= timedelta(minutes=15), "default idle expiry: 15 minutes"


def test_the_idle_timer_moves_on_with_activity_but_never_past_the_longest_session():
    policy = SessionPolicy(idle=timedelta(minutes=15))
    t0 = datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)
    assert policy.refreshed_expiry(t0, t0 + timedelta(minutes=15), t0 + timedelta(minutes=10)) == \
        t0 + timedelta(minutes=25)
    assert policy.refreshed_expiry(t0, t0 + timedelta(minutes=15), t0 + timedelta(seconds=5)) is None
    late = t0 + timedelta(hours=11, minutes=55)
    assert policy.refreshed_expiry(t0, late, late) == t0 + timedelta(hours=users.SESSION_HOURS)


def test_sign_in_takes_a_person_back_where_they_were_going_but_never_off_site(world):
    s = requests.Session()
    r = s.get(world.url + "/ui/", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and "next=" in r.headers["Location"]
    form = s.get(world.url + "/ui/signin", timeout=10)
    r = s.post(world.url + "/ui/signin", data={"csrf": ui_kit.csrf_of(form.text), "username": "sgt-sue",
                                               "password": ui_kit.PASSWORD, "next": "https://elsewhere.example/"},
               allow_redirects=False, timeout=30)
    assert r.headers["Location"] == "/ui/"


def test_signing_in_in_the_browser_shows_the_role_and_passes_axe(world, page):
    page.goto(world.url + "/ui/signin")
    assert ui_kit.axe_violations(page) == []
    ui_kit.screenshot(page, "signin")
    ui_kit.browser_sign_in(page, world.url, "supervisor")
    assert "Signed in as sgt-sue (Supervisor)" in page.inner_text("header")
    assert ui_kit.axe_violations(page) == []
    ui_kit.screenshot(page, "home-supervisor")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/signin**")
    assert page.watch.foreign() == []
