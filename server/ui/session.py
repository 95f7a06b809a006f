"""Browser sessions of the staff web application: the cookie, the idle timer, the CSRF token.

A signed-in browser holds the same kind of user token the JSON API hands out
(users.issue_token), in a cookie the page's scripts cannot read (HttpOnly),
that no other site can make the browser send (SameSite=Strict), and that never
travels in clear when the server speaks TLS (Secure).  Nothing here is new
session cryptography: the token is the API's, checked by
users.principal_for_token; the only secret of our own is the server's CSRF
key, and a CSRF token is an HMAC of the session's token digest under it.

Why each rule:
- a new token at every sign-in, and any token the browser brought revoked:
  a token planted in the browser before sign-in (session fixation) is never
  the one that carries the signed-in role;
- the token's expiry is the idle timer: it is issued for `idle` and pushed on
  by activity, never past the API's own session length (users.SESSION_HOURS)
  from sign-in, so a browser left open on a desk stops working by itself;
- the sign-in form has a CSRF token too, bound to a random pre-session cookie,
  so that another site cannot sign a browser into an account of its choosing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .. import users

SESSION_COOKIE = "bwv_session"
PRESESSION_COOKIE = "bwv_presession"
COOKIE_PATH = "/ui/"
WEB_PURPOSE = "web"  # user_tokens.purpose of a browser session
REFRESH_SLACK = timedelta(seconds=30)  # the expiry is written again only when it moved at least this much
NONCE_RE_LEN = 43


def load_secret(server_dir: Path) -> bytes:
    """The server's CSRF key, made once (0600, written whole then renamed) and kept, so that forms a
    browser holds stay valid across a restart of the server."""
    path = server_dir / "ui-secret"
    try:
        data = path.read_bytes()
        if len(data) == 32:
            return data
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".ui-secret.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # first writer wins: two starting servers agree on one key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    data = path.read_bytes()
    if len(data) != 32:
        raise OSError(f"{path} is {len(data)} bytes, not the 32-byte key it should be: remove it to make a new one")
    return data


def _mac(secret: bytes, what: str, value: str) -> str:
    digest = hmac.new(secret, f"{what}\n{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_for_session(secret: bytes, token: str) -> str:
    """The CSRF token of a signed-in session: bound to that session's token, useless for any other."""
    return _mac(secret, "csrf-session", users.token_digest(token))


def csrf_for_signin(secret: bytes, nonce: str) -> str:
    """The sign-in form's CSRF token, bound to the browser's pre-session cookie."""
    return _mac(secret, "csrf-signin", nonce)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    longest: timedelta = timedelta(hours=users.SESSION_HOURS)

    def refreshed_expiry(self, created: datetime, expires: datetime, now: datetime) -> datetime | None:
        """Where activity now moves the expiry to, or None when it need not be written (it would move
        by less than REFRESH_SLACK, or the session is at its longest)."""
        target = min(now + self.idle, created + self.longest)
        return target if target - expires >= REFRESH_SLACK else None


def sign_in(db: sqlite3.Connection, username: str, password: str, policy: SessionPolicy, *,
            brought: str | None, audit_failure) -> tuple[str, users.Principal]:
    """Check the password as the API does (lockout included) and issue a fresh web token; a token the
    browser brought is revoked first.  Raises users.LoginFailed: the caller commits all the same."""
    if brought and users.TOKEN_RE.match(brought):
        users.revoke_token(db, brought)
    now = datetime.now(timezone.utc)
    # The browser's token lives for the idle time only; activity pushes it on (touch).
    token, _ = users.login(db, username, password, at=now, audit_failure=audit_failure,
                           hours=policy.idle.total_seconds() / 3600, purpose=WEB_PURPOSE)
    return token, users.principal_for_token(db, token, now=now)


def touch(db: sqlite3.Connection, token: str, policy: SessionPolicy, now: datetime) -> None:
    """Activity: push the idle expiry on (bounded by the longest session)."""
    times = users.token_times(db, token)
    if times is None:
        return
    moved = policy.refreshed_expiry(*times, now)
    if moved is not None:
        users.extend_token(db, token, moved)


__all__ = ["COOKIE_PATH", "PRESESSION_COOKIE", "SESSION_COOKIE", "SessionPolicy", "csrf_for_session",
           "csrf_for_signin", "csrf_matches", "load_secret", "new_nonce", "sign_in", "touch"]
