"""Someone with write access to the database changes the log behind the server's back: `verify` says so.

Each test builds a clean log with the real `append` and `checkpoint`, makes
one edit with raw SQL (kit: set_field, delete, truncate, swap_seqs,
rehash_from...) and expects a failed report naming the record concerned in
plain words.  The careful attacker, who also recomputes hashes and links,
is stopped by signed checkpoints, and, where they truncate the checkpoint
table too, only by a checkpoint kept off the server.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openbwv.server import audit

from .audit_kit import (at, checkpoint_now, delete, fill, insert_raw, kinds, messages, new_log, rehash_from,
                        renumber, row, set_field, sign, swap_seqs, truncate)


def test_a_clean_log_of_thousands_of_records_with_checkpoints_verifies(db, keys, check):
    signed = fill(db, 3000, keys=keys, checkpoint_every=500)
    report = check(external=signed[:2])
    assert report.ok, report.summary()
    assert report.records == report.head_seq == 3006  # 3000 records and the 6 checkpoints' own
    assert report.checkpoints == 6 and report.external == 2
    assert report.signed_through == 3006 and report.unsigned == 0
    assert report.summary().startswith("audit log OK")


def test_an_empty_log_verifies(check):
    report = check()
    assert report.ok and report.records == 0 and report.head_seq == 0


def test_records_after_the_last_checkpoint_are_counted_as_unsigned(db, keys, check):
    fill(db, 10, keys=keys, checkpoint_every=10)
    fill(db, 4)
    report = check()
    assert report.ok and report.signed_through == 11 and report.unsigned == 4


# --------------------------------------------------------------------------- altered records
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "user:mallory"),
        ("action", "search"),
        ("target", "0" * 64),
        ("outcome", "denied"),
        ("detail", '{"clip":"clip-0","n":16}'),
        ("at_utc", "2025-03-01T08:00:15.000001Z"),
    ],
)
def test_an_altered_field_is_reported_against_its_record(db, check, column, value):
    fill(db, 40)
    set_field(db, 17, column, value)
    report = check()
    assert not report.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(17, audit.ALTERED)]
    assert report.problems[0].message == "record 17 was altered: its hash does not match its content"


def test_an_altered_record_whose_hash_was_recomputed_breaks_the_link_from_the_next(db, check):
    fill(db, 40)
    rec = row(db, 17)
    forged = dataclasses.replace(rec, actor="user:mallory")
    set_field(db, 17, "actor", forged.actor)
    set_field(db, 17, "record_hash", forged.computed_hash())
    report = check()
    assert at(report, 18) == [audit.BROKEN_LINK]
    assert "record 18 does not link to record 17" in messages(report)


def test_an_altered_record_with_every_later_link_recomputed_is_caught_by_the_checkpoint_after_it(db, keys, check):
    fill(db, 30, keys=keys, checkpoint_every=30)  # checkpoint record is 31
    fill(db, 10)
    set_field(db, 12, "outcome", "failed")
    rehash_from(db, 12)
    report = check()
    assert kinds(report) == {audit.CHECKPOINT_MISMATCH}
    assert "stored checkpoint at 31 does not match the log" in messages(report)
    assert "records up to 31 were rewritten" in messages(report)


def test_text_that_is_not_utf8_is_reported_not_a_crash(db, check):
    if getattr(db, "engine", "sqlite") != "sqlite":
        pytest.skip("PostgreSQL refuses text that is not UTF-8 in a UTF8 database: this edit cannot be made there")
    fill(db, 5)
    db.execute("UPDATE audit_log SET actor = CAST(X'C328' AS TEXT) WHERE seq = 3")
    report = check()
    assert at(report, 3) == [audit.UNREADABLE]
    assert "record 3 cannot be read" in messages(report)


# --------------------------------------------------------------------------- removed records
def test_a_record_removed_from_the_middle_is_reported_missing(db, check):
    fill(db, 50)
    delete(db, 42)
    report = check()
    assert [(p.seq, p.kind) for p in report.problems] == [(42, audit.MISSING)]
    assert report.problems[0].message == "record 42 is missing (seq jumps from 41 to 43)"


def test_a_run_of_removed_records_is_reported_as_one_gap(db, check):
    fill(db, 50)
    delete(db, *range(20, 26))
    assert messages(check()) == "records 20 to 25 are missing (seq jumps from 19 to 26)"


def test_removing_the_first_records_is_reported(db, check):
    fill(db, 10)
    delete(db, 1, 2)
    assert messages(check()) == "records 1 to 2 are missing (the log starts at 3)"


def test_a_removed_record_with_the_rest_renumbered_and_rehashed_is_caught_by_the_checkpoint(db, keys, check):
    fill(db, 60, keys=keys, checkpoint_every=60)
    delete(db, 42)
    renumber(db, 43, -1)
    rehash_from(db, 42)
    report = check()
    assert at(report, 61) == [audit.TRUNCATED]
    assert "records after 60 are missing: a signed stored checkpoint covers 61" in messages(report)


# --------------------------------------------------------------------------- truncation
def test_truncation_is_detected_against_a_stored_checkpoint(db, keys, check):
    fill(db, 1250, keys=keys, checkpoint_every=1250)  # the checkpoint covers 1251, its own record
    truncate(db, 1200)
    report = check()
    assert [(p.seq, p.kind) for p in report.problems] == [(1201, audit.TRUNCATED)]
    assert report.problems[0].message == "records after 1200 are missing: a signed stored checkpoint covers 1251"


def test_truncating_the_log_and_its_checkpoint_table_is_caught_by_a_checkpoint_kept_elsewhere(db, keys, check):
    early = fill(db, 100, keys=keys, checkpoint_every=100)
    late = fill(db, 100, keys=keys, checkpoint_every=100)
    kept_by_auditor = [audit.Checkpoint.from_json(cp.to_json()) for cp in early + late]
    truncate(db, 101, checkpoints_too=True)
    alone = check()
    assert alone.ok, "without a checkpoint kept elsewhere, a clean cut is invisible: that is why they are kept"
    report = check(external=kept_by_auditor)
    assert [(p.seq, p.kind) for p in report.problems] == [(102, audit.TRUNCATED)]
    assert "records after 101 are missing: a signed external checkpoint covers 202" in messages(report)


def test_an_emptied_log_is_caught_by_a_checkpoint_kept_elsewhere(db, keys, check):
    kept = fill(db, 20, keys=keys, checkpoint_every=20)
    truncate(db, 0, checkpoints_too=True)
    assert messages(check(external=kept)) == "the log is empty, but a signed external checkpoint covers 21 records"


def test_a_deleted_checkpoint_row_is_noticed_through_the_record_that_announced_it(db, keys, check):
    fill(db, 20, keys=keys, checkpoint_every=10)
    db.execute("DELETE FROM audit_checkpoints WHERE size = 11")
    report = check()
    assert at(report, 11) == [audit.CHECKPOINT_MISSING]
    assert "checkpoint table has none at that size" in messages(report)


# --------------------------------------------------------------------------- reordered and inserted records
def test_two_records_swapped_are_reported_as_reordered(db, check):
    fill(db, 30)
    swap_seqs(db, 10, 11)
    report = check()
    assert not report.ok
    assert audit.REORDERED in at(report, 10) + at(report, 11)
    assert "record 10 links to record 11, which comes after it: records were reordered" in messages(report)


def test_two_records_swapped_and_rehashed_in_place_are_reported_as_reordered(db, check):
    fill(db, 30)
    swap_seqs(db, 10, 11)
    for seq in (10, 11):
        rec = row(db, seq)
        set_field(db, seq, "record_hash", rec.computed_hash())
    report = check()
    assert audit.ALTERED not in kinds(report)
    assert "record 11 links back to record 9, not to record 10" in messages(report)


def test_an_inserted_record_is_detected(db, check):
    fill(db, 40)
    renumber(db, 21, +1)
    prev = row(db, 20)
    forged = audit.AuditRecord(21, "2025-03-01T08:00:20.500000Z", "user:mallory", "view", "clip-7", "ok", "{}",
                               prev.record_hash, "")
    insert_raw(db, dataclasses.replace(forged, record_hash=forged.computed_hash()))
    report = check()
    assert not report.ok
    assert min(p.seq for p in report.problems) == 22  # the forgery itself is well formed; what follows is not


def test_an_inserted_record_with_the_tail_rehashed_is_caught_by_the_checkpoint(db, keys, check):
    fill(db, 40, keys=keys, checkpoint_every=40)
    renumber(db, 21, +1)
    insert_raw(db, audit.AuditRecord(21, "2025-03-01T08:00:20.500000Z", "user:mallory", "view", "clip-7", "ok",
                                     "{}", "0" * 64, "0" * 64))
    rehash_from(db, 21)
    report = check()
    assert at(report, 41) == [audit.CHECKPOINT_MISMATCH]
    assert "stored checkpoint at 41 does not match the log" in messages(report)
    assert at(report, 42) == [audit.CHECKPOINT_MISSING]  # the checkpoint's own record, pushed along


# --------------------------------------------------------------------------- forged checkpoints
def test_a_checkpoint_with_an_altered_signature_is_reported(db, keys, check):
    fill(db, 500, keys=keys, checkpoint_every=499)
    size, sig = db.execute("SELECT size, signature FROM audit_checkpoints").fetchone()
    raw = bytearray(base64.b64decode(sig))
    raw[5] ^= 1
    db.execute("UPDATE audit_checkpoints SET signature = ?", (base64.b64encode(bytes(raw)).decode(),))
    report = check()
    assert [(p.seq, p.kind) for p in report.problems] == [(500, audit.BAD_CHECKPOINT)]
    assert report.problems[0].message.startswith("stored checkpoint at 500 has a bad signature")


def test_a_checkpoint_whose_head_was_edited_no_longer_verifies(db, keys, check):
    fill(db, 20, keys=keys, checkpoint_every=20)
    db.execute("UPDATE audit_checkpoints SET head_hash = ?", ("ab" * 32,))
    assert at(check(), 21) == [audit.BAD_CHECKPOINT]


def test_a_checkpoint_signed_by_another_key_is_rejected_stored_or_external(db, keys, other_keys, check):
    fill(db, 20)
    forged = sign(db, other_keys)  # a well-formed checkpoint, made with a key the auditor does not trust
    report = check(external=[forged])
    assert [(p.seq, p.kind) for p in report.problems] == [(21, audit.BAD_CHECKPOINT), (21, audit.BAD_CHECKPOINT)]
    assert "external checkpoint at 21 has a bad signature" in messages(report)


def test_a_forged_checkpoint_cannot_vouch_for_a_rewritten_log(db, keys, other_keys, check):
    genuine = fill(db, 30, keys=keys, checkpoint_every=30)
    set_field(db, 5, "actor", "user:mallory")
    rehash_from(db, 5)
    db.execute("DELETE FROM audit_checkpoints")
    sign(db, other_keys)  # the forger's own checkpoint over the rewritten log
    report = check(external=genuine)
    assert audit.BAD_CHECKPOINT in kinds(report) and audit.CHECKPOINT_MISMATCH in kinds(report)


def test_checkpoints_from_before_a_key_rotation_verify_with_a_map_of_keys(db, keys, other_keys):
    fill(db, 10, keys=keys, checkpoint_every=10)
    fill(db, 10, keys=other_keys, checkpoint_every=10)
    both = {keys.public.key_id: keys.public.receipt_verifier(),
            other_keys.public.key_id.hex(): other_keys.public.receipt_verifier()}
    assert audit.verify(db, both).ok
    only_new = {other_keys.public.key_id: other_keys.public.receipt_verifier()}
    report = audit.verify(db, only_new)
    assert "stored checkpoint at 11 was signed by key" in messages(report)
    assert "which is not among the server keys given" in messages(report)


# --------------------------------------------------------------------------- any edit, anywhere
FIELDS = ("actor", "action", "target", "outcome", "detail", "at_utc", "prev_hash", "record_hash")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 60), data=st.data())
def test_any_single_edit_is_reported_at_or_next_to_the_record_edited(keys, n, data):
    db = new_log()
    actors = data.draw(st.lists(st.text(st.characters(min_codepoint=32, exclude_categories=("Cs", "Cc")),
                                        min_size=1, max_size=12), min_size=n, max_size=n))
    db.execute("BEGIN IMMEDIATE")
    for i, actor in enumerate(actors):
        audit.append(db, actor=actor, action="view", target=f"clip-{i}", detail={"i": i, "who": actor})
    db.execute("COMMIT")
    seq = data.draw(st.integers(1, n))
    column = data.draw(st.sampled_from(FIELDS))
    old = row(db, seq).to_dict()[column]
    if column in ("prev_hash", "record_hash"):
        new = hashlib.sha256(old.encode()).hexdigest()  # still 64 hex digits, as the schema insists
    else:
        new = data.draw(st.text(max_size=70).filter(lambda v: v != old))
    set_field(db, seq, column, new)
    report = audit.verify(db, keys.public.receipt_verifier())
    assert not report.ok
    assert {p.seq for p in report.problems} <= {seq, seq + 1}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 80), data=st.data())
def test_any_removal_or_truncation_is_reported_given_a_checkpoint_kept_elsewhere(keys, n, data):
    db = new_log()
    fill(db, n)
    kept = checkpoint_now(db, keys)
    head = n + 1
    first = data.draw(st.integers(1, head))
    last = data.draw(st.integers(first, head))
    db.execute("DELETE FROM audit_log WHERE seq BETWEEN ? AND ?", (first, last))
    db.execute("DELETE FROM audit_checkpoints")
    report = audit.verify(db, keys.public.receipt_verifier(), external=[kept])
    assert not report.ok
    expected = audit.TRUNCATED if last == head else audit.MISSING
    assert expected in kinds(report)
    assert min(p.seq for p in report.problems) == first


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 80), data=st.data())
def test_any_two_records_swapped_are_reported_from_the_first_of_them(keys, n, data):
    db = new_log()
    fill(db, n)
    a = data.draw(st.integers(1, n - 1))
    b = data.draw(st.integers(a + 1, n))
    swap_seqs(db, a, b)
    report = audit.verify(db, keys.public.receipt_verifier())
    assert not report.ok
    assert min(p.seq for p in report.problems) == a
