"""Who may upload: per-dock bearer tokens.

`bwv server add-dock` makes a random token, shows it once, and the server
keeps only its SHA-256: a copy of the database does not let anyone upload as
a dock.  Every upload and receipt request carries
``Authorization: Bearer <token>``; the digest is looked up, so the
comparison never depends on how much of a guess is right.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone

from ..sealed.layout import DEVICE_ID_RE
from .db import MetadataStore
from .errors import BadRequest, Unauthorized

TOKEN_PREFIX = "bwvd_"
TOKEN_RE = re.compile(r"^bwvd_[A-Za-z0-9_-]{43}\Z")  # prefix + 32 random bytes, base64url
MAX_AUTHORIZATION = 512
USER_TOKEN_PREFIX = "bwvu_"
DOCK_ID_RE = DEVICE_ID_RE  # same alphabet and bound as device ids


def new_token() -> str:
    """A fresh dock token: 256 random bits, base64url, with a prefix that says what it is."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def bearer_token(header: str | None) -> str:
    """The token in an Authorization header, or Unauthorized saying what is wrong with it."""
    if not header:
        raise Unauthorized(
            "missing 'Authorization: Bearer <token>' header (a dock gets its token from `bwv server add-dock`)"
        )
    if len(header) > MAX_AUTHORIZATION:
        raise Unauthorized(f"Authorization header of {len(header)} characters is over the {MAX_AUTHORIZATION} allowed")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(f"Authorization scheme {scheme[:20]!r} is not supported; use 'Bearer <token>'")
    token = token.strip()
    if not TOKEN_RE.match(token) and not token.startswith(USER_TOKEN_PREFIX):
        raise Unauthorized("the bearer token is not a dock token (expected 'bwvd_' and 43 base64url characters) "
                           "nor a user token ('bwvu_', from POST /api/v1/login or `bwv user token`)")
    return token


def bearer_text(header: str | None) -> str:
    """The token of a well-formed Authorization header, or "" (for code that already authenticated)."""
    if not header or len(header) > MAX_AUTHORIZATION:
        return ""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class DockTokens:
    """Issues dock tokens and tells which dock a request comes from."""

    def __init__(self, db: MetadataStore):
        self.db = db

    def add_dock(self, dock_id: str, *, rotate: bool = False) -> str:
        """Create (or with `rotate`, replace) a dock's token; return it.  It is never shown again."""
        if not DOCK_ID_RE.match(dock_id or ""):
            raise BadRequest(f"dock id {dock_id!r} is not 1-64 letters, digits, '.', '_' or '-'")
        token = new_token()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.db.add_dock(dock_id, token_digest(token), now, replace=rotate)
        return token

    def authenticate(self, header: str | None) -> str:
        """The dock id for an Authorization header; Unauthorized (401) otherwise."""
        token = bearer_token(header)
        dock = self.db.dock_for_token(token_digest(token))
        if dock is None:
            raise Unauthorized("unknown or replaced dock token")
        return dock


__all__ = ["DockTokens", "bearer_text", "bearer_token", "new_token", "token_digest"]
