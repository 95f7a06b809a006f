"""The worked example in docs/audit.md is what the code computes, byte for byte.

An auditor writing an independent verifier tests it against that example;
if the code and the document ever disagree, this fails rather than the
auditor's verifier.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from openbwv.server import audit

DOC = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text(encoding="utf-8")

RECORD_1 = dict(seq=1, at_utc="2025-03-01T08:00:00.000000Z", actor="user:alice", action="view",
                target="clip-2025-0042", outcome="ok", detail='{"reason":"case 2025-117"}', prev_hash="0" * 64)
HASH_1 = "4e34c99ee15828dbc95d31d550aa543d574f4040352fa5788c8e0e0c15fc91c0"
RECORD_2 = dict(seq=2, at_utc="2025-03-01T08:00:05.250000Z", actor="server", action="checkpoint",
                target="audit_log", outcome="ok", detail='{"previous_checkpoint":0}', prev_hash=HASH_1)
HASH_2 = "5d0a074fef5e63a52924d17f9f630eecbd92f539f7729e6177245b5a8f8e76c6"
SIGNING_KEY = bytes([1]) * 32  # the example's Ed25519 private key: never a real one
PUBLIC_KEY = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"


def test_the_example_records_hash_as_published():
    assert audit.record_hash(**RECORD_1) == HASH_1
    assert audit.record_hash(**RECORD_2) == HASH_2
    message = audit.RECORD_CONTEXT + audit.canonical_json(RECORD_1).encode("utf-8")
    assert message[len(audit.RECORD_CONTEXT):].decode() in DOC
    assert HASH_1 in DOC and HASH_2 in DOC


def test_the_example_checkpoint_is_published_and_verifies_with_the_example_key():
    key = ed25519.Ed25519PrivateKey.from_private_bytes(SIGNING_KEY)
    assert key.public_key().public_bytes_raw().hex() == PUBLIC_KEY and PUBLIC_KEY in DOC
    unsigned = audit.Checkpoint(2, HASH_2, RECORD_2["at_utc"], "00112233445566778899aabbccddeeff", "")
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()  # Ed25519 is deterministic
    line = audit.Checkpoint(2, HASH_2, RECORD_2["at_utc"], unsigned.key_id, signature).to_json()
    assert line in DOC
    assert audit.Checkpoint.from_json(line).signature_problem(key.public_key()) is None
    assert unsigned.signed_bytes()[len(audit.CHECKPOINT_CONTEXT):].decode() in DOC
