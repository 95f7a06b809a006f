"""Staff accounts, roles, and what each role may do.

Who may do what is one table, `PERMISSIONS` (permission -> roles), and the
HTTP layer checks it on every route (app.py); docs/access-control.md prints
it endpoint by endpoint, and a test calls every endpoint as every role.

Roles, after the duties in a police evidence unit:

=================== ==========================================================
officer             their own footage (clips from a device assigned to them
                    at the time), read only
supervisor          all footage, read; the retention due list and the sweep's
                    dry run; may mark a clip as evidence (to catch misfiled
                    evidence before it goes)
evidence_officer    marking and unmarking evidence, categories, evidential
                    exports (unredacted, for a case), tracks, running the sweep
disclosure_officer  subject access requests: log, search, hold, export, close
auditor             the audit trail, read, export and verify; no footage
admin               users and devices; no footage
=================== ==========================================================

Passwords are kept as scrypt hashes (RFC 7914, a memory-hard KDF in Python's
standard library); a login gives a bearer token of 256 random bits whose
SHA-256 only is stored, valid for `SESSION_HOURS`.  Five failed logins lock
an account for 15 minutes; every failure is audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
from typing import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import audit
from .audit_time import when
from .errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized

OFFICER = "officer"
SUPERVISOR = "supervisor"
EVIDENCE_OFFICER = "evidence_officer"
DISCLOSURE_OFFICER = "disclosure_officer"
AUDITOR = "auditor"
ADMIN = "admin"
ROLES = (OFFICER, SUPERVISOR, EVIDENCE_OFFICER, DISCLOSURE_OFFICER, AUDITOR, ADMIN)
DOCK = "dock"  # not a staff role: the principal behind a dock token

FOOTAGE_READERS = frozenset({OFFICER, SUPERVISOR, EVIDENCE_OFFICER, DISCLOSURE_OFFICER})

# permission -> the roles that hold it.  An officer's footage permissions are
# further limited to their own clips (checked where the clip is known).
PERMISSIONS: dict[str, frozenset[str]] = {
    "session": frozenset(ROLES),  # whoami, logout: every staff member
    "upload": frozenset({DOCK}),
    "receipt.read": frozenset({DOCK}),
    "segment.read": frozenset({DOCK, SUPERVISOR, EVIDENCE_OFFICER, DISCLOSURE_OFFICER}),
    "clip.list": FOOTAGE_READERS,
    "clip.read": FOOTAGE_READERS,
    "clip.view": FOOTAGE_READERS,
    "clip.track": frozenset({SUPERVISOR, EVIDENCE_OFFICER, DISCLOSURE_OFFICER}),
    "clip.search": frozenset({SUPERVISOR, EVIDENCE_OFFICER, DISCLOSURE_OFFICER}),
    "clip.mark": frozenset({SUPERVISOR, EVIDENCE_OFFICER}),
    "clip.unmark": frozenset({EVIDENCE_OFFICER}),
    "clip.category": frozenset({EVIDENCE_OFFICER}),
    "retention.due": frozenset({SUPERVISOR, EVIDENCE_OFFICER}),
    # What a sweep would delete now: the due list's own readers.
    "retention.preview": frozenset({SUPERVISOR, EVIDENCE_OFFICER}),
    # Run a sweep now (it deletes only what the rules say is due; the timer runs it hourly anyway).
    "retention.sweep": frozenset({EVIDENCE_OFFICER}),
    # Evidential export: a marked clip decrypted, verified and unredacted, for a case.
    "clip.export": frozenset({EVIDENCE_OFFICER}),
    "request.manage": frozenset({DISCLOSURE_OFFICER}),
    "request.export": frozenset({DISCLOSURE_OFFICER}),
    "audit.read": frozenset({AUDITOR}),
    "user.manage": frozenset({ADMIN}),
    "device.manage": frozenset({ADMIN}),
}

USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,63}\Z")
TOKEN_PREFIX = "bwvu_"
TOKEN_RE = re.compile(r"^bwvu_[A-Za-z0-9_-]{43}\Z")
SESSION_HOURS = 12
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
LOCK_AFTER_FAILURES = 5
LOCK_MINUTES = 15

# scrypt cost: N=2^15, r=8 (32 MiB, ~0.1 s here), as OWASP recommends for interactive logins.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1

SCHEMA = """
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    full_name     TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until  TEXT,
    created_utc   TEXT NOT NULL,
    updated_utc   TEXT NOT NULL
);
CREATE TABLE user_tokens (
    token_sha256  TEXT PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES users(username),
    created_utc   TEXT NOT NULL,
    expires_utc   TEXT NOT NULL,
    revoked_utc   TEXT,
    purpose       TEXT NOT NULL DEFAULT 'login'
);
CREATE INDEX tokens_by_user ON user_tokens(username)
"""


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a staff member (with a role) or a dock."""

    name: str
    role: str

    @property
    def actor(self) -> str:
        """How the audit trail names them."""
        return f"dock:{self.name}" if self.role == DOCK else f"user:{self.name}"

    def may(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


# --------------------------------------------------------------------------- passwords
def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    check_password_text(password)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=128 << 20,
                            dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8")[:MAX_PASSWORD * 4], salt=_unb64(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=128 << 20, dklen=len(_unb64(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def check_password_text(password: str) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


# --------------------------------------------------------------------------- accounts
def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def add_user(db: sqlite3.Connection, username: str, role: str, password: str, *, full_name: str = "",
             actor: str, at: str | None = None, kdf_n: int = SCRYPT_N) -> None:
    if not USERNAME_RE.match(username or ""):
        raise BadRequest(f"user name {username!r} is not 2-64 of a-z, 0-9, '.', '_', '-' starting with a letter")
    check_role(role)
    at = at or _iso(_now())
    if db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
        raise Conflict(f"user {username!r} already exists")
    db.execute("INSERT INTO users (username, role, full_name, password_hash, created_utc, updated_utc) "
               "VALUES (?, ?, ?, ?, ?, ?)", (username, role, full_name[:200], hash_password(password, n=kdf_n), at, at))
    audit.append(db, actor=actor, action="user_added", target=f"user:{username}", detail={"role": role}, at=when(at))


def change_user(db: sqlite3.Connection, username: str, *, actor: str, role: str | None = None,
                password: str | None = None, disabled: bool | None = None, at: str | None = None,
                kdf_n: int = SCRYPT_N) -> None:
    """Change a role, reset a password or (dis)able an account; each of these revokes its tokens.

    No staff member changes their own role (`OwnRoleChange`, audited); the local operator
    (`bwv user set`, actor ``local:...``) can change anyone's."""
    at = at or _iso(_now())
    if db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone() is None:
        raise NotFound(f"no user {username!r}")
    if role is not None and actor == f"user:{username}":
        current = db.execute("SELECT role FROM users WHERE username = ?", (username,)).fetchone()[0]
        why = (f"{actor} may not change their own role ({current} -> {role}): another admin must do it, "
               "or the server's operator with `bwv user set`")
        audit.append(db, actor=actor, action="user_changed", target=f"user:{username}", outcome="denied",
                     detail={"role": role, "why": why}, at=when(at))
        raise OwnRoleChange(why)
    changes: dict[str, object] = {}
    if role is not None:
        db.execute("UPDATE users SET role = ? WHERE username = ?", (check_role(role), username))
        changes["role"] = role
    if password is not None:
        db.execute("UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL WHERE username = ?",
                   (hash_password(password, n=kdf_n), username))
        changes["password"] = "reset"
    if disabled is not None:
        db.execute("UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username))
        changes["disabled"] = disabled
    if role is not None or disabled or password is not None:
        # A password is reset because it may be known to someone else: the sessions it opened go with it.
        db.execute("UPDATE user_tokens SET revoked_utc = ? WHERE username = ? AND revoked_utc IS NULL", (at, username))
    db.execute("UPDATE users SET updated_utc = ? WHERE username = ?", (at, username))
    audit.append(db, actor=actor, action="user_changed", target=f"user:{username}", detail=changes, at=when(at))


def users(db: sqlite3.Connection) -> list[dict]:
    cur = db.execute("SELECT username, role, full_name, disabled, created_utc, updated_utc FROM users "
                     "ORDER BY username")
    return [{"username": u, "role": r, "full_name": f, "disabled": bool(d), "created_utc": c, "updated_utc": m}
            for u, r, f, d, c, m in cur]


def issue_token(db: sqlite3.Connection, username: str, *, actor: str, hours: float = SESSION_HOURS,
                purpose: str = "login", at: datetime | None = None) -> tuple[str, str]:
    """A new bearer token for `username`; returns (token, expiry).  Only its digest is stored."""
    now = at or _now()
    if not 0 < hours <= 24 * 366:
        raise BadRequest("a token lives between a moment and a year")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = _iso(now + timedelta(hours=hours))
    db.execute("INSERT INTO user_tokens (token_sha256, username, created_utc, expires_utc, purpose) "
               "VALUES (?, ?, ?, ?, ?)", (token_digest(token), username, _iso(now), expires, purpose))
    audit.append(db, actor=actor, action="token_issued", target=f"user:{username}",
                 detail={"expires": expires, "purpose": purpose}, at=now)
    return token, expires


def login(db: sqlite3.Connection, username: str, password: str, *, at: datetime | None = None,
          audit_failure: Callable[[], bool] = lambda: True, hours: float = SESSION_HOURS,
          purpose: str = "login") -> tuple[str, str]:
    """Check a password and issue a session token, or raise Unauthorized (and audit the failure).

    The caller commits even on failure, so that the failure count and its
    audit record survive (see `LoginFailed`).  `audit_failure` is asked before
    each failure's record is written: the server counts failures beyond a
    rate instead of writing them one by one (denials.py)."""
    now = at or _now()
    row = db.execute("SELECT password_hash, disabled, failed_logins, locked_until FROM users WHERE username = ?",
                     (username,)).fetchone() if USERNAME_RE.match(username or "") else None
    if row is None:
        check_password(password or "", _DUMMY_HASH)  # same cost whether or not the user exists
        if audit_failure():
            audit.append(db, actor=audit.printable(f"user:{username or ''}", audit.MAX_ACTOR_CHARS),
                         action="login_failed", target="session", outcome="denied", detail={"why": "unknown user"},
                         at=now)
        raise LoginFailed("unknown user or wrong password")
    stored, disabled, failures, locked_until = row
    if locked_until and datetime.fromisoformat(locked_until) > now:
        if audit_failure():
            audit.append(db, actor=f"user:{username}", action="login_failed", target="session", outcome="denied",
                         detail={"why": "locked"}, at=now)
        raise LoginFailed(f"account locked after {LOCK_AFTER_FAILURES} failed logins until {locked_until}")
    if disabled or not check_password(password or "", stored):
        failures += 1
        lock = _iso(now + timedelta(minutes=LOCK_MINUTES)) if failures >= LOCK_AFTER_FAILURES else None
        db.execute("UPDATE users SET failed_logins = ?, locked_until = ? WHERE username = ?",
                   (0 if lock else failures, lock, username))
        if lock or audit_failure():  # the failure that locks an account is always written
            audit.append(db, actor=f"user:{username}", action="login_failed", target="session", outcome="denied",
                         detail={"why": "disabled" if disabled else "wrong password", "locked_until": lock}, at=now)
        raise LoginFailed("unknown user or wrong password")
    db.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE username = ?", (username,))
    audit.append(db, actor=f"user:{username}", action="login", target="session", at=now)
    return issue_token(db, username, actor=f"user:{username}", at=now, hours=hours, purpose=purpose)


class LoginFailed(Unauthorized):
    """A failed login: the transaction that recorded it must still commit."""


class OwnRoleChange(Forbidden):
    """A staff member changing their own role: refused, so that no one can grant themselves another
    role's powers (an admin making themselves evidence officer to reach footage, then changing back)
    nor leave the force without an admin by mistake.  The transaction that recorded the refusal
    must still commit."""


def principal_for_token(db: sqlite3.Connection, token: str, *, now: datetime | None = None) -> Principal:
    """The staff member a bearer token belongs to, or Unauthorized saying why not."""
    if not TOKEN_RE.match(token):
        raise Unauthorized("the bearer token is not a user token (expected 'bwvu_' and 43 base64url characters)")
    row = db.execute(
        "SELECT u.username, u.role, u.disabled, t.expires_utc, t.revoked_utc FROM user_tokens t "
        "JOIN users u ON u.username = t.username WHERE t.token_sha256 = ?", (token_digest(token),)).fetchone()
    if row is None:
        raise Unauthorized("unknown user token")
    username, role, disabled, expires, revoked = row
    if revoked:
        raise Unauthorized(f"this token was revoked on {revoked}; log in again")
    if datetime.fromisoformat(expires) <= (now or _now()):
        raise Unauthorized(f"this token expired at {expires}; log in again")
    if disabled:
        raise Unauthorized(f"user {username} is disabled")
    return Principal(username, role)


def revoke_token(db: sqlite3.Connection, token: str, *, at: str | None = None) -> None:
    db.execute("UPDATE user_tokens SET revoked_utc = ? WHERE token_sha256 = ? AND revoked_utc IS NULL",
               (at or _iso(_now()), token_digest(token)))


def token_times(db: sqlite3.Connection, token: str) -> tuple[datetime, datetime] | None:
    """When a token was issued and when it expires (None: no such token).  The web application's
    idle expiry (server/ui/session.py) reads them to decide whether to push the expiry on."""
    row = db.execute("SELECT created_utc, expires_utc FROM user_tokens WHERE token_sha256 = ?",
                     (token_digest(token),)).fetchone()
    return None if row is None else (datetime.fromisoformat(row[0]), datetime.fromisoformat(row[1]))


def extend_token(db: sqlite3.Connection, token: str, expires: datetime) -> None:
    """Move a live token's expiry (a web session's idle timer, refreshed on activity); a revoked
    token stays revoked."""
    db.execute("UPDATE user_tokens SET expires_utc = ? WHERE token_sha256 = ? AND revoked_utc IS NULL",
               (_iso(expires), token_digest(token)))


_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

__all__ = [
    "ADMIN", "AUDITOR", "DISCLOSURE_OFFICER", "DOCK", "EVIDENCE_OFFICER", "LoginFailed", "OFFICER", "OwnRoleChange", "PERMISSIONS",
    "Principal", "ROLES", "SCHEMA", "SUPERVISOR", "add_user", "change_user", "check_password", "hash_password",
    "extend_token", "issue_token", "login", "principal_for_token", "revoke_token", "token_times", "users",
]
