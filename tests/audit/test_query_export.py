"""Asking the log questions, and taking it away: an export is checked without the database.

`query` answers "who viewed this clip", "what did this user do last week";
`export_jsonl` writes records with their hashes, one JSON line each, and
`verify_export` holds a full export to everything `verify` checks, or an
excerpt to what an excerpt can prove.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from openbwv.server import audit

from .audit_kit import ACTORS, T0, fill, kinds, messages


def export(db, **filters) -> list[str]:
    out = io.StringIO()
    count = audit.export_jsonl(db, out, **filters)
    lines = out.getvalue().splitlines()
    assert count == len(lines)
    return lines


def verify_lines(keys, lines, **kwargs) -> audit.VerifyReport:
    return audit.verify_export(lines, keys.public.receipt_verifier(), **kwargs)


# --------------------------------------------------------------------------- query
def test_query_by_actor_action_target_and_outcome(db):
    fill(db, 100)
    db.execute("BEGIN IMMEDIATE")
    audit.append(db, actor="user:bob", action="decrypt", target="clip-x", outcome="denied")
    db.execute("COMMIT")
    alice = audit.query(db, actor="user:alice")
    assert len(alice) == 25 and {r.actor for r in alice} == {"user:alice"}
    assert [r.seq for r in audit.query(db, target=f"{5:064x}")] == [6, 43, 80]
    assert all(r.action == "view" for r in audit.query(db, action="view"))
    denied = audit.query(db, outcome=audit.Outcome.DENIED)
    assert [(r.actor, r.action, r.target) for r in denied] == [("user:bob", "decrypt", "clip-x")]
    assert audit.query(db, actor="user:bob", action="view", target=f"{1:064x}")[0].seq == 2


def test_query_by_time_includes_since_and_excludes_until(db):
    fill(db, 100)  # one a second from T0
    window = audit.query(db, since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=20))
    assert [r.seq for r in window] == list(range(11, 21))
    as_text = audit.query(db, since="2025-03-01T08:00:10Z", until="2025-03-01T10:00:20+02:00")
    assert as_text == window
    assert len(audit.query(db, since="2025-03-01", until="2025-03-02")) == 100  # zone-less means UTC
    assert audit.query(db, until="2025-03-01") == []


def test_query_pages_through_the_log_with_after_seq(db):
    fill(db, 250)
    pages, after = [], 0
    while page := audit.query(db, limit=100, after_seq=after):
        pages.append(page)
        after = page[-1].seq
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [r.seq for p in pages for r in p] == list(range(1, 251))


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"action": "veiw"}, "unknown audit action 'veiw'"),
        ({"outcome": "fine"}, "unknown audit outcome 'fine'"),
        ({"limit": 0}, "limit must be between 1 and 100000"),
        ({"limit": 100_001}, "limit must be between 1 and 100000"),
        ({"since": "last tuesday"}, "since 'last tuesday' is not an ISO 8601 date"),
        ({"until": 5}, "until must be a datetime or ISO 8601 text, found int"),
    ],
)
def test_bad_query_filters_are_refused_saying_why(db, filters, message):
    with pytest.raises(audit.AuditInputError, match=message):
        audit.query(db, **filters)


# --------------------------------------------------------------------------- export
def test_each_export_line_is_a_record_with_its_hashes(db):
    fill(db, 3)
    lines = export(db)
    doc = json.loads(lines[0])
    assert set(doc) == {"seq", "at_utc", "actor", "action", "target", "outcome", "detail", "prev_hash",
                        "record_hash"}
    assert audit.AuditRecord(**doc) == audit.query(db)[0]


def test_a_full_export_verifies_without_the_database_against_the_auditors_checkpoints(db, keys):
    kept = fill(db, 1000, keys=keys, checkpoint_every=250)
    lines = export(db)
    report = verify_lines(keys, lines, external=kept)
    assert report.ok, report.summary()
    assert report.records == 1004 and report.external == 4 and report.signed_through == 1004


def test_an_export_edited_after_the_fact_fails_verification(db, keys):
    kept = fill(db, 100, keys=keys, checkpoint_every=50)
    lines = export(db)
    doc = json.loads(lines[9])
    doc["actor"] = "user:nobody"
    edited = lines[:9] + [json.dumps(doc)] + lines[10:]
    assert [p.kind for p in verify_lines(keys, edited, external=kept).problems] == [audit.ALTERED]
    assert messages(verify_lines(keys, lines[:40] + lines[41:])) == "record 41 is missing (seq jumps from 40 to 42)"
    cut = verify_lines(keys, lines[:60], external=kept)
    assert kinds(cut) == {audit.TRUNCATED}
    assert "records after 60 are missing: a signed external checkpoint covers 102" in messages(cut)


def test_a_repeated_or_backward_line_is_reported_without_upsetting_the_rest(db, keys):
    fill(db, 10)
    lines = export(db)
    report = verify_lines(keys, lines[:6] + [lines[2]] + lines[6:])
    assert [(p.seq, p.kind) for p in report.problems] == [(3, audit.REORDERED)]
    assert messages(report) == "record 3 comes after record 6: records are out of order or repeated"


def test_lines_that_are_not_records_are_reported_by_line_number(db, keys):
    fill(db, 3)
    lines = export(db)
    report = verify_lines(keys, [lines[0], "{not json", json.dumps({"seq": 2}), *lines[1:]])
    assert [p.kind for p in report.problems] == [audit.UNREADABLE, audit.UNREADABLE]
    assert "line 2 cannot be read: not an audit record" in messages(report)
    assert "line 3 cannot be read: not an audit record: expected exactly the fields" in messages(report)


def test_a_filtered_excerpt_proves_each_record_and_says_it_is_an_excerpt(db, keys):
    fill(db, 200)
    lines = export(db, target=f"{3:064x}")
    assert len(lines) == 6 and all(json.loads(line)["target"] == f"{3:064x}" for line in lines)
    assert verify_lines(keys, lines, excerpt=True).ok
    assert audit.MISSING in kinds(verify_lines(keys, lines))  # held to a full log, it is full of gaps
    doc = json.loads(lines[2])
    doc["outcome"] = "failed"
    assert [p.kind for p in verify_lines(keys, lines[:2] + [json.dumps(doc)] + lines[3:], excerpt=True).problems] \
        == [audit.ALTERED]


def test_an_excerpt_starting_after_a_checkpoint_is_tied_to_it(db, keys):
    first = fill(db, 100, keys=keys, checkpoint_every=100)
    fill(db, 50)
    lines = export(db, after_seq=first[0].size)
    assert json.loads(lines[0])["seq"] == 102
    assert verify_lines(keys, lines, external=first, excerpt=True).ok
    forged = audit.AuditRecord(**{**json.loads(lines[0]), "prev_hash": "ab" * 32})
    forged_line = json.dumps({**forged.to_dict(), "record_hash": forged.computed_hash()})
    report = verify_lines(keys, [forged_line, *lines[1:]], external=first, excerpt=True)
    assert "record 102 does not follow the external checkpoint at 101" in messages(report)


def test_export_filters_are_those_of_query_without_a_limit(db):
    fill(db, 20)
    assert len(export(db, actor=ACTORS[0], since=T0, until=datetime(2030, 1, 1, tzinfo=timezone.utc))) == 5
    with pytest.raises(TypeError, match="an export has no limit"):
        export(db, limit=5)
    with pytest.raises(TypeError, match="unknown audit filter"):
        export(db, colour="red")
