"""Appending records: the chain's shape, the exact hash an auditor recomputes, and what is refused.

A record commits with the action it describes or not at all, so `append`
only runs inside the caller's transaction; it costs the same at record 10 as
at record 10 000; and inputs outside the vocabulary or the bounds are
refused with a message that says what was expected.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.server import audit
from openbwv.server.db import MetadataStore

from .audit_kit import T0, fill, new_log


def append_one(db: sqlite3.Connection, **fields) -> audit.AuditRecord:
    fields = {"actor": "user:alice", "action": "view", "target": "clip-1", **fields}
    db.execute("BEGIN IMMEDIATE")
    try:
        return audit.append(db, **fields)
    finally:
        db.execute("COMMIT")


def test_record_one_links_to_sixty_four_zeros_and_each_next_to_the_one_before(db):
    fill(db, 5)
    records = audit.query(db)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == "0" * 64
    for before, after in zip(records, records[1:]):
        assert after.prev_hash == before.record_hash
    assert all(r.computed_hash() == r.record_hash for r in records)


def test_record_hash_is_sha256_of_the_domain_and_the_canonical_json_of_its_eight_fields(db):
    rec = append_one(db, actor="user:zoë", action="decrypt", target="f" * 64, outcome="denied",
                     detail={"reason": "no role", "ip": "10.0.0.7"}, at=T0)
    fields = {k: v for k, v in rec.to_dict().items() if k != "record_hash"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert rec.record_hash == hashlib.sha256(b"OpenBWV audit record v1\x00" + canonical).hexdigest()
    assert rec.detail == '{"ip":"10.0.0.7","reason":"no role"}'


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40), seq=st.integers(1, 2**53))
def test_the_fast_record_encodings_are_exactly_canonical_json_for_any_text(text, seq):
    fields = {"seq": seq, "at_utc": text, "actor": text[::-1], "action": "view", "target": text * 2,
              "outcome": "ok", "detail": json.dumps({"q": text}), "prev_hash": "ab" * 32}
    try:
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: append refuses such text before it is hashed
        return
    assert audit.record_hash(**fields) == hashlib.sha256(audit.RECORD_CONTEXT + canonical).hexdigest()
    rec = audit.AuditRecord(**fields, record_hash="cd" * 32)
    assert rec.to_json() == audit.canonical_json(rec.to_dict())


def test_times_are_stored_in_utc_with_microseconds_and_a_z(db):
    rec = append_one(db, at=datetime(2025, 3, 1, 10, 30, 0, 250, tzinfo=timezone(timedelta(hours=2))))
    assert rec.at_utc == "2025-03-01T08:30:00.000250Z"
    assert append_one(db).at_utc.endswith("Z")


def test_append_outside_a_transaction_is_refused_because_the_action_could_commit_without_it(db):
    with pytest.raises(audit.AuditError, match="inside the caller's write transaction"):
        audit.append(db, actor="user:alice", action="view", target="clip-1")
    assert audit.head(db) is None


def test_a_rolled_back_transaction_leaves_no_record_and_the_chain_carries_on(db):
    fill(db, 3)
    db.execute("BEGIN IMMEDIATE")
    audit.append(db, actor="user:alice", action="delete", target="clip-9")
    db.execute("ROLLBACK")
    assert audit.head(db).seq == 3
    rec = append_one(db)
    assert rec.seq == 4 and rec.prev_hash == audit.query(db)[2].record_hash


def test_appending_a_batch_writes_exactly_the_records_as_many_single_appends_would(db, tmp_path):
    entries = [{"actor": "system:retention-sweep", "action": "delete", "target": f"clip:{n}", "at": T0,
                "detail": {"n": n}} for n in range(3)]
    fill(db, 2)
    db.execute("BEGIN IMMEDIATE")
    batch = audit.append_many(db, entries)
    db.execute("COMMIT")
    one_by_one = new_log(tmp_path / "one-by-one.db")
    fill(one_by_one, 2)
    singles = [append_one(one_by_one, **entry) for entry in entries]
    assert batch == singles == audit.query(db)[2:]
    assert [r.seq for r in batch] == [3, 4, 5] and batch[0].prev_hash == audit.query(db)[1].record_hash


def test_a_batch_with_one_bad_entry_is_refused_whole_before_anything_is_written(db):
    fill(db, 1)
    db.execute("BEGIN IMMEDIATE")
    with pytest.raises(audit.AuditInputError, match="unknown audit action 'veiw'"):
        audit.append_many(db, [{"actor": "user:alice", "action": "view", "target": "clip-1"},
                               {"actor": "user:alice", "action": "veiw", "target": "clip-2"}])
    db.execute("ROLLBACK")
    assert audit.head(db).seq == 1


def _statements(db: sqlite3.Connection, fn) -> int:
    """How many SQLite VM instructions `fn` runs: a cost measure that timing noise cannot blur."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    db.set_progress_handler(tick, 1)
    try:
        fn()
    finally:
        db.set_progress_handler(None, 1)
    return count[0]


def test_an_append_costs_the_same_whatever_the_length_of_the_log():
    db = new_log()
    fill(db, 10)
    small = _statements(db, lambda: append_one(db))
    fill(db, 20_000)
    large = _statements(db, lambda: append_one(db))
    assert large <= small * 1.2, (small, large)


def test_concurrent_appends_through_the_servers_locked_connection_form_one_contiguous_chain(tmp_path, keys):
    store = MetadataStore(tmp_path / "evidence.db")
    with store._transaction() as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_log'").fetchone():
            for statement in audit.SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
    threads, per_thread = 8, 40
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        start.wait()
        try:
            for i in range(per_thread):
                with store._transaction() as conn:
                    audit.append(conn, actor=f"user:t{n}", action="view", target=f"clip-{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    reader = store._reader()
    report = audit.verify(reader, keys.public.receipt_verifier())
    assert report.ok, report.summary()
    assert report.head_seq == report.records == threads * per_thread
    for n in range(threads):
        assert len(audit.query(reader, actor=f"user:t{n}")) == per_thread
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh metadata database (full schema) on each engine in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return request.getfixturevalue("pg").new_database()


def test_two_nodes_appending_at_once_to_one_database_form_one_chain(store_url, keys):
    """Two server nodes (two stores, each with its own writer connection) on one database, four threads
    each: every append lands, in one contiguous chain that verifies (PostgreSQL: the advisory lock of
    server/store/audit_log.py; SQLite: BEGIN IMMEDIATE across processes)."""
    nodes = [MetadataStore(store_url), MetadataStore(store_url)]
    threads, per_thread = 4, 25
    start = threading.Barrier(threads * len(nodes))
    errors: list[BaseException] = []

    def worker(node: MetadataStore, name: str) -> None:
        start.wait()
        try:
            for i in range(per_thread):
                with node.transaction() as conn:
                    audit.append(conn, actor=f"user:{name}", action="view", target=f"clip-{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(node, f"n{k}t{n}"))
            for k, node in enumerate(nodes) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    try:
        assert errors == []
        reader = nodes[1].reader()
        report = audit.verify(reader, keys.public.receipt_verifier())
        assert report.ok, report.summary()
        assert report.head_seq == report.records == threads * len(nodes) * per_thread
        assert all(len(audit.query(reader, actor=f"user:n{k}t{n}")) == per_thread
                   for k in range(len(nodes)) for n in range(threads))
    finally:
        for node in nodes:
            node.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "veiw"}, "unknown audit action 'veiw'; known: access_denied, audit_exported"),
        ({"action": None}, "unknown audit action None"),
        ({"outcome": "maybe"}, "unknown audit outcome 'maybe'; known: denied, failed, ok"),
        ({"action": "checkpoint"}, "written by checkpoint\\(\\) alone"),
        ({"actor": ""}, "audit actor must not be empty"),
        ({"actor": "u" * 129}, "audit actor is 129 characters, more than the 128 allowed"),
        ({"actor": 7}, "audit actor must be text, found int"),
        ({"actor": "user:alice\nuser:bob"}, "contains a control character"),
        ({"target": "t" * 513}, "audit target is 513 characters, more than the 512 allowed"),
        ({"target": "clip-\ud800"}, "not valid Unicode"),
        ({"detail": {"blob": "x" * 66_000}}, "audit detail is 66011 bytes of JSON, more than the 65536 allowed"),
        ({"detail": ["not", "an", "object"]}, "audit detail must be a JSON object \\(a dict\\), found list"),
        ({"detail": {"x": float("nan")}}, "audit detail is not plain JSON"),
        ({"detail": {"x": object()}}, "audit detail is not plain JSON"),
        ({"at": datetime(2025, 3, 1, 8, 0)}, "has no time zone"),
        ({"at": datetime(1969, 12, 31, tzinfo=timezone.utc)}, "is before 1970"),
    ],
)
def test_inputs_outside_the_vocabulary_or_the_bounds_are_refused_saying_why(db, fields, message):
    db.execute("BEGIN IMMEDIATE")
    with pytest.raises(audit.AuditInputError, match=message):
        audit.append(db, **{"actor": "user:alice", "action": "view", "target": "clip-1", **fields})
    db.execute("ROLLBACK")


def test_untrusted_text_is_made_printable_and_short_so_its_record_cannot_be_refused(db):
    path = "/api/v1/clips/x\n\x1b[2J\ud800" + "a" * 600
    target = audit.printable(f"GET {path}", audit.MAX_TARGET_CHARS)
    actor = audit.printable("user:" + "m" * 300, audit.MAX_ACTOR_CHARS)
    rec = append_one(db, actor=actor, action="access_denied", target=target, outcome="denied")
    assert rec.target.startswith("GET /api/v1/clips/x\\x0a\\x1b[2J\\ud800aaa") and rec.target.endswith("a…")
    assert len(rec.target) == audit.MAX_TARGET_CHARS and len(rec.actor) == audit.MAX_ACTOR_CHARS
    assert audit.printable("user:alice", 128) == "user:alice"


def test_the_vocabulary_is_the_one_the_brief_names():
    for name in ("upload", "view", "decrypt", "export", "mark", "unmark", "hold", "release", "delete", "key_use",
                 "access_denied", "login", "login_failed", "search", "request_logged", "request_closed",
                 "request_extended", "user_added", "user_changed", "token_issued", "category_set",
                 "sweep_started", "sweep_finished", "checkpoint"):
        assert name in audit.ACTIONS
    assert audit.OUTCOMES == {"ok", "denied", "failed"}
    assert audit.Action.VIEW == "view"


def test_a_bare_string_and_the_enum_member_store_the_same_text(db):
    a = append_one(db, action=audit.Action.HOLD, outcome=audit.Outcome.FAILED)
    b = append_one(db, action="hold", outcome="failed")
    assert (a.action, a.outcome) == (b.action, b.outcome) == ("hold", "failed")
    assert type(audit.query(db)[0].action) is str
