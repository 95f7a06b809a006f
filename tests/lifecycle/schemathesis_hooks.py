"""Schemathesis hooks for test_api_conformance: each generated request carries the token of a role the
operation allows (the document's x-openbwv-roles), so the run reaches every handler, not only 403s.

Loaded by the Schemathesis CLI through SCHEMATHESIS_HOOKS; the tokens come in BWV_CONFORMANCE_TOKENS
(JSON: role -> bearer token) from the test that started the server.
"""

from __future__ import annotations

import json
import os

import schemathesis

TOKENS: dict[str, str] = json.loads(os.environ.get("BWV_CONFORMANCE_TOKENS", "{}"))


def token_for(roles: list[str]) -> str | None:
    for role in roles:  # the table lists the dock first, then the least powerful staff role
        if role in TOKENS:
            return TOKENS[role]
    return None


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    roles = case.operation.definition.raw.get("x-openbwv-roles", [])
    token = token_for(roles)
    if token is not None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


# A tus PATCH body is raw bytes, sent as application/offset+octet-stream.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
