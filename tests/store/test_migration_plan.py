"""The pure half of `bwv server migrate`: digests that do not depend on order, and who may be written."""

from __future__ import annotations

import pytest

from openbwv.server.migration import (FINISHED, FRESH, RESUME, MigrationError, Reconciliation, SourceIdentity,
                                      Tally, key_after, progress_copied, progress_done, progress_value, row_bytes)

ROWS = [("a", 1, 2.5, b"\x00\x01", None), ("b", 2, 0.0, b"", "x"), ("c", 3, -1.0, b"\xff", "y")]
ME = SourceIdentity("ab" * 32, "cd" * 16, "/srv/bwv/server/evidence.db")


def test_a_tables_digest_is_the_same_whatever_order_its_rows_are_read_in():
    assert Tally().add_rows("t", ROWS).digest == Tally().add_rows("t", reversed(ROWS)).digest
    assert Tally().add_rows("t", ROWS).rows == 3


def test_one_changed_value_missing_row_or_other_table_changes_the_digest():
    base = Tally().add_rows("t", ROWS).digest
    assert Tally().add_rows("t", [("a", 1, 2.5, b"\x00\x02", None), *ROWS[1:]]).digest != base
    assert Tally().add_rows("t", ROWS[:2]).digest != base
    assert Tally().add_rows("other", ROWS).digest != base


def test_values_of_different_kinds_never_encode_alike():
    assert row_bytes("t", ["1"]) != row_bytes("t", [1])
    assert row_bytes("t", [1]) != row_bytes("t", [1.0])
    assert row_bytes("t", [b"\x01"]) != row_bytes("t", ["01"])
    assert row_bytes("t", [None]) != row_bytes("t", ["None"])
    assert row_bytes("t", [memoryview(b"ab")]) == row_bytes("t", [b"ab"])  # how psycopg may hand bytea back


def test_the_reconciliation_matches_only_when_every_line_and_no_problem_stands():
    r = Reconciliation()
    r.add("segments", Tally().add_rows("segments", ROWS), Tally().add_rows("segments", ROWS[::-1]))
    assert r.matches and r.table()[-1].endswith("every line matches")
    r.add("blobs", Tally().add_rows("blobs", ROWS), Tally().add_rows("blobs", ROWS[:1]))
    assert not r.matches
    assert any(line.startswith("blobs") and line.endswith("DIFFERS") for line in r.table())
    ok = Reconciliation()
    ok.add("segments", Tally(), Tally())
    ok.problems.append("held segment cam-1 #3: receipt signature does not verify")
    assert not ok.matches


def test_an_empty_destination_is_fresh_and_one_holding_this_migration_resumes_or_is_finished():
    assert resume_decision_of({}, []) == FRESH
    begun = {"source": ME.to_json(), "blobs": progress_value(("ff",), 3, False)}
    assert resume_decision_of(begun, ["segments", "audit_log"]) == RESUME
    assert resume_decision_of({**begun, "finished": "{}"}, ["segments"]) == FINISHED


def test_the_same_installation_resumes_from_another_path():
    moved = SourceIdentity(ME.first_audit_hash, ME.server_key_id, "/mnt/copy/evidence.db")
    assert resume_decision_of({"source": moved.to_json()}, ["segments"]) == RESUME


def test_a_destination_holding_other_records_or_another_migration_is_refused_with_the_reason():
    with pytest.raises(MigrationError, match=r"not empty \(rows in segments, users\).*empty database"):
        resume_decision_of({}, ["segments", "users"])
    other = SourceIdentity("99" * 32, ME.server_key_id, "/other/evidence.db")
    with pytest.raises(MigrationError, match="another installation.*/other/evidence.db"):
        resume_decision_of({"source": other.to_json()}, ["segments"])


def test_progress_records_where_a_table_stopped():
    v = progress_value(("sar-1", "clip-9"), 40, False)
    assert key_after(v) == ("sar-1", "clip-9") and progress_copied(v) == 40 and not progress_done(v)
    assert key_after(None) is None and progress_copied(None) == 0 and not progress_done(None)
    assert progress_done(progress_value(None, 0, True))


def resume_decision_of(recorded: dict[str, str], occupied: list[str]) -> str:
    from openbwv.server.migration import resume_decision

    return resume_decision(ME, recorded, occupied, "postgresql://bwv@db/evidence")
