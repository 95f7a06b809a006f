"""Signed checkpoints: made only when there is something new, never over a log already broken, and
portable as one JSON line that an auditor keeps on their own storage."""

from __future__ import annotations

import base64
import json

import pytest

from openbwv.server import audit

from .audit_kit import checkpoint_now, delete, fill, row, set_field, truncate


def test_nothing_to_sign_in_an_empty_log_or_twice_over_the_same_head(db, keys):
    assert checkpoint_now(db, keys) is None
    fill(db, 3)
    first = checkpoint_now(db, keys)
    assert first is not None and first.size == 4
    assert checkpoint_now(db, keys) is None
    fill(db, 1)
    assert checkpoint_now(db, keys).size == 6


def test_a_checkpoint_signs_its_own_record_so_the_log_says_when_each_was_made(db, keys):
    fill(db, 3)
    cp = checkpoint_now(db, keys)
    rec = row(db, cp.size)
    assert (rec.actor, rec.action, rec.target, rec.details) == ("server", "checkpoint", "audit_log",
                                                                 {"previous_checkpoint": 0})
    assert cp.head_hash == rec.record_hash and cp.at_utc == rec.at_utc
    assert cp.key_id == keys.public.key_id.hex()
    assert audit.stored_checkpoints(db) == [cp] and audit.latest_checkpoint(db) == cp


def test_the_signature_is_ed25519_over_the_domain_and_the_canonical_fields(db, keys):
    fill(db, 2)
    cp = checkpoint_now(db, keys)
    fields = {"format": "openbwv-audit-checkpoint-v1", "size": cp.size, "head_hash": cp.head_hash,
              "at_utc": cp.at_utc, "key_id": cp.key_id}
    message = b"OpenBWV audit checkpoint v1\x00" + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    keys.public.receipt_verifier().verify(base64.b64decode(cp.signature), message)  # raises if not


def test_a_checkpoint_is_refused_outside_a_transaction(db, keys):
    fill(db, 1)
    with pytest.raises(audit.AuditError, match="inside the caller's write transaction"):
        audit.checkpoint(db, keys.sign, keys.public.key_id)


def test_a_checkpoint_refuses_to_sign_over_a_truncated_log(db, keys):
    fill(db, 10, keys=keys, checkpoint_every=10)
    truncate(db, 5)
    db.execute("BEGIN IMMEDIATE")
    with pytest.raises(audit.AuditError, match="ends at record 5 but checkpoint 11 was signed over more"):
        audit.checkpoint(db, keys.sign, keys.public.key_id)
    db.execute("ROLLBACK")


@pytest.mark.parametrize("edit", ["altered since", "altered before", "removed since", "forged checkpoint row"])
def test_a_checkpoint_refuses_to_sign_over_records_broken_since_the_last(db, keys, edit):
    fill(db, 10, keys=keys, checkpoint_every=10)
    fill(db, 10)
    if edit == "altered since":
        set_field(db, 15, "actor", "user:mallory")
    elif edit == "altered before":
        set_field(db, 11, "record_hash", "ab" * 32)
    elif edit == "removed since":
        delete(db, 15)
    else:  # a row that would make the server believe everything up to 21 is already signed
        head = row(db, 21)
        db.execute("INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?)",
                   (21, head.record_hash, head.at_utc, keys.public.key_id.hex(), "AA" * 44))
    db.execute("BEGIN IMMEDIATE")
    with pytest.raises(audit.AuditError, match="no new checkpoint signed"):
        audit.checkpoint(db, keys.sign, keys.public.key_id)
    db.execute("ROLLBACK")
    assert audit.head(db).seq == 21  # no checkpoint record was added either


def test_a_checkpoint_travels_as_one_canonical_json_line_and_back(db, keys):
    fill(db, 2)
    cp = checkpoint_now(db, keys)
    line = cp.to_json()
    assert "\n" not in line and line == audit.canonical_json(json.loads(line))
    assert audit.Checkpoint.from_json(line) == cp
    assert audit.Checkpoint.from_json(line.encode()) == cp
    assert cp.signature_problem(keys.public.receipt_verifier()) is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: "not json", "checkpoint is not JSON"),
        (lambda d: {**d, "extra": 1}, "exactly 'checkpoint' and 'signature'"),
        (lambda d: {**d, "checkpoint": {**d["checkpoint"], "format": "v0"}}, "format 'v0'"),
        (lambda d: {**d, "checkpoint": {**d["checkpoint"], "size": 0}}, "size 0 is not a positive integer"),
        (lambda d: {**d, "checkpoint": {**d["checkpoint"], "size": True}}, "is not a positive integer"),
        (lambda d: {**d, "checkpoint": {**d["checkpoint"], "head_hash": "AB" * 32}}, "head_hash is not 64 lowercase"),
        (lambda d: {**d, "checkpoint": {**d["checkpoint"], "at_utc": "yesterday"}}, "at_utc 'yesterday'"),
        (lambda d: {**d, "checkpoint": {**d["checkpoint"], "key_id": "xyz"}}, "key_id is not hex"),
        (lambda d: {**d, "signature": "AAAA"}, "signature is not base64 of 64 bytes"),
        (lambda d: {**d, "signature": "x" * 5000}, "exceeds 4096"),
    ],
)
def test_a_malformed_checkpoint_is_rejected_saying_what_is_wrong(db, keys, edit, message):
    fill(db, 1)
    doc = edit(checkpoint_now(db, keys).to_dict())
    with pytest.raises(audit.CheckpointInvalid, match=message):
        audit.Checkpoint.from_json(doc if isinstance(doc, str) else json.dumps(doc))


def test_checkpoints_appended_to_a_file_are_read_back_in_order(db, keys, tmp_path):
    path = tmp_path / "kept-elsewhere" / "checkpoints.jsonl"
    path.parent.mkdir()
    signed = fill(db, 30, keys=keys, checkpoint_every=10)
    for cp in signed:
        audit.append_checkpoint_file(path, cp)
    assert audit.read_checkpoint_file(path) == signed
    assert path.read_text().count("\n") == 3


def test_a_line_torn_by_a_power_cut_is_skipped_and_the_next_append_starts_afresh(db, keys, tmp_path):
    path = tmp_path / "checkpoints.jsonl"
    first, second, third = fill(db, 30, keys=keys, checkpoint_every=10)
    audit.append_checkpoint_file(path, first)
    with open(path, "a") as f:
        f.write(second.to_json()[:40])  # the power went mid-write
    assert audit.read_checkpoint_file(path) == [first]
    audit.append_checkpoint_file(path, third)
    with pytest.raises(audit.CheckpointInvalid, match="line 2: checkpoint is not JSON"):
        audit.read_checkpoint_file(path)  # the torn line is no longer the last: it is reported, never merged
    assert path.read_text().splitlines()[2] == third.to_json()


def test_an_unreadable_checkpoint_file_is_reported_by_name(tmp_path):
    with pytest.raises(audit.CheckpointInvalid, match="cannot read checkpoint file .*missing.jsonl"):
        audit.read_checkpoint_file(tmp_path / "missing.jsonl")


def test_checkpoints_from_a_file_defeat_a_truncation_of_both_tables(db, keys, tmp_path, check):
    path = tmp_path / "checkpoints.jsonl"
    for cp in fill(db, 40, keys=keys, checkpoint_every=20):
        audit.append_checkpoint_file(path, cp)
    truncate(db, 21, checkpoints_too=True)
    assert check().ok
    report = check(external=audit.read_checkpoint_file(path))
    assert [p.kind for p in report.problems] == [audit.TRUNCATED]

