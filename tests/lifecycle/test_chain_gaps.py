"""A gap in a device's chain that the retention sweep left is "deleted by policy", not "missing".

The server's store is verified as an auditor would (`bwv verify` on the
store directory, public keys only for the files); the tombstones in the
server's database explain the gaps, but only when their hashes link the
chain across them.  `bwv server status` tells the two kinds of gap apart.
Every test with a home runs on SQLite and on a real PostgreSQL (the `db_engine` fixture).
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta

import pytest

from lifecycle.lifecycle_kit import UTC, Evidence, Held
from openbwv.cli import main
from openbwv.server import lifecycle
from openbwv.server.retention import RetentionPolicy
from openbwv.server.sweep import Sweeper

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy()


@pytest.fixture
def ev(tmp_path, db_engine):
    e = Evidence(tmp_path / "home")
    yield e
    e.close()


def bwv(capsys: pytest.CaptureFixture, ev: Evidence, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--home", str(ev.home.root), *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def verify_store(capsys, ev: Evidence, *options: str) -> tuple[int, str]:
    return bwv(capsys, ev, "verify", *options, str(ev.home.server_dir / "store"))


def keep_as_evidence(ev: Evidence, held: Held) -> None:
    with ev.db.transaction() as db:
        lifecycle.mark_evidence(db, held.clip_id, case_ref="CR-7", reason="assault", actor="user:eve",
                                at=NOW.isoformat())


def sweep(ev: Evidence) -> str:
    """Run the retention sweep at NOW; its id."""
    report = Sweeper(ev.db, ev.blobs, POLICY, clock=lambda: NOW).run(now=NOW)
    assert report.deleted_clips, "the sweep was meant to delete something"
    return report.sweep_id


@pytest.fixture
def middle_swept(ev):
    """cam-1 #1 kept as evidence, #2 deleted by the sweep (past 31 days, unmarked), #3 recent."""
    first = ev.record("cam-1", NOW - timedelta(days=50))
    keep_as_evidence(ev, first)
    middle = ev.record("cam-1", NOW - timedelta(days=40))
    last = ev.record("cam-1", NOW - timedelta(days=2))
    sweep_id = sweep(ev)
    assert ev.blob_digest(middle.segment_hash) is None
    return first, middle, last, sweep_id


def tamper(ev: Evidence, sql: str, *args) -> None:
    with ev.db.transaction() as db:
        assert db.execute(sql, args).rowcount == 1


# --------------------------------------------------------------------------- bwv verify
def test_a_gap_left_by_the_sweep_is_deleted_by_policy_and_not_a_problem(ev, middle_swept, capsys):
    _first, _middle, _last, sweep_id = middle_swept
    code, out = verify_store(capsys, ev)
    assert code == 0, out
    assert f"cam-1: note: segment 2 deleted by policy on 2026-11-25 (sweep {sweep_id})" in out
    assert "missing" not in out
    assert "2 segment(s) from 1 device(s) verified, 1 deleted by policy; 0 problem(s)" in out


def test_a_deleted_clip_of_several_segments_is_one_run(ev, capsys):
    first = ev.record("cam-1", NOW - timedelta(days=50))
    keep_as_evidence(ev, first)
    clip = uuid.uuid4()
    for index in range(3):
        ev.record("cam-1", NOW - timedelta(days=40) + timedelta(seconds=10 * index), clip_id=clip, index=index)
    ev.record("cam-1", NOW - timedelta(days=2))
    sweep_id = sweep(ev)
    code, out = verify_store(capsys, ev)
    assert code == 0, out
    assert f"cam-1: note: segments 2..4 deleted by policy on 2026-11-25 (sweep {sweep_id})" in out


def test_without_the_servers_records_the_same_gap_is_missing(ev, middle_swept, capsys):
    code, out = verify_store(capsys, ev, "--no-tombstones")
    assert code == 1
    assert "gap: cam-1: segment 2 is missing between" in out
    assert "deleted by policy" not in out


def test_a_tombstone_that_names_the_wrong_predecessor_is_a_broken_link(ev, middle_swept, capsys):
    first, middle, _last, _sweep_id = middle_swept
    forged = "ff" * 32
    tamper(ev, "UPDATE tombstones SET prev_hash = ? WHERE segment_hash = ?", forged, middle.segment_hash)
    code, out = verify_store(capsys, ev)
    assert code == 1, out
    (line,) = [line for line in out.splitlines() if "chain broken" in line]
    assert "[tombstone cam-1 #2]" in line
    assert "the tombstone of segment 2 of cam-1 (deleted by policy on 2026-11-25" in line
    assert "does not link to segment 1" in line
    assert f"expected previous hash {first.segment_hash} (the hash of {ev.blobs.path(first.segment_hash)})" in line
    assert line.endswith(f"found {forged}")
    assert "note:" not in out  # a tombstone that does not link explains nothing
    assert "1 problem(s)" in out


def test_a_tombstone_whose_hash_the_next_segment_does_not_name_is_a_broken_link(ev, middle_swept, capsys):
    _first, middle, last, _sweep_id = middle_swept
    forged = "ee" * 32
    tamper(ev, "UPDATE tombstones SET segment_hash = ? WHERE segment_hash = ?", forged, middle.segment_hash)
    code, out = verify_store(capsys, ev)
    assert code == 1, out
    (line,) = [line for line in out.splitlines() if "chain broken" in line]
    assert line.startswith(str(ev.blobs.path(last.segment_hash)))
    assert "segment 3 of cam-1 does not link to segment 2, deleted by policy on 2026-11-25" in line
    assert f"expected previous hash {forged} (recorded in its tombstone), found {middle.segment_hash}" in line
    assert "note:" not in out


def test_a_file_gone_without_a_tombstone_is_still_missing(ev, middle_swept, capsys):
    _first, _middle, last, sweep_id = middle_swept
    after = ev.record("cam-1", NOW - timedelta(days=1))
    ev.blobs.path(last.segment_hash).unlink()  # segment 3: gone, and no sweep recorded it
    code, out = verify_store(capsys, ev)
    assert code == 1, out
    (gap,) = [line for line in out.splitlines() if ": gap: " in line]
    assert gap.startswith(str(ev.blobs.path(after.segment_hash)))
    assert "1 segment(s) missing" in gap and "(first 3), not explained by a deletion record" in gap
    # Segment 2 next to it is still accounted for: its tombstone links to segment 1.
    assert f"cam-1: note: segment 2 deleted by policy on 2026-11-25 (sweep {sweep_id})" in out


def test_a_gap_with_no_tombstone_at_all_is_missing(ev, capsys):
    ev.record("cam-1", NOW - timedelta(days=3))
    gone = ev.record("cam-1", NOW - timedelta(days=2))
    ev.record("cam-1", NOW - timedelta(days=1))
    ev.blobs.path(gone.segment_hash).unlink()
    code, out = verify_store(capsys, ev)
    assert code == 1
    assert "gap: cam-1: segment 2 is missing between" in out


def test_verify_only_reads_the_database_even_beside_a_running_server(ev, middle_swept, capsys):
    if ev.db.engine_name == "postgresql":
        from openbwv.server.store.held_records import HeldRecords, RecordsUnreadable
        from openbwv.server.service import database_url

        records = HeldRecords(database_url(ev.home))
        try:  # the connection `bwv verify` reads through refuses to write, whatever the SQL
            with pytest.raises(RecordsUnreadable, match="read-only transaction"):
                records._rows("DELETE FROM tombstones")
        finally:
            records.close()
        code, out = verify_store(capsys, ev)
        assert code == 0, out
        return
    watcher = sqlite3.connect(ev.home.server_dir / "evidence.db")
    try:
        version = watcher.execute("PRAGMA data_version").fetchone()[0]  # changes on any other commit
        code, out = verify_store(capsys, ev)
        assert code == 0, out
        assert watcher.execute("PRAGMA data_version").fetchone()[0] == version
    finally:
        watcher.close()


def test_a_server_database_that_cannot_be_read_leaves_the_gap_missing(ev, middle_swept, capsys):
    ev.db.close()
    if ev.db.engine_name == "postgresql":  # the home names a database the cluster does not have
        url = ev.db.url.conninfo.rsplit("/", 1)[0] + "/no_such_database"
        ev.home.config_file.write_text(f'[server]\ndb = "{url}"\n')
        shown = url
    else:
        db = ev.home.server_dir / "evidence.db"
        for leftover in db.parent.glob("evidence.db-*"):
            leftover.unlink()
        db.write_bytes(b"not a database at all" * 100)
        shown = str(db)
    code, out = verify_store(capsys, ev)
    assert code == 1
    assert f"{shown}: deletion records: cannot read the deletion records" in out
    assert "gap: cam-1: segment 2 is missing between" in out


def test_verify_on_a_camera_home_without_a_server_database_is_unchanged(tmp_path, capsys):
    home = tmp_path / "camera-home"
    assert main(["--home", str(home), "keys", "server"]) == 0
    assert main(["--home", str(home), "keys", "device", "--id", "cam-1"]) == 0
    capsys.readouterr()
    code = main(["--home", str(home), "verify", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "0 segment(s) from 0 device(s) verified; 0 problem(s)" in out
    assert not (home / "server" / "evidence.db").exists()  # verify never creates one


def test_verify_help_explains_tombstones(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = capsys.readouterr().out
    assert "deleted by policy" in text and "--no-tombstones" in text


# --------------------------------------------------------------------------- bwv server status
def test_status_tells_deleted_by_policy_from_missing_per_device(ev, capsys):
    first = ev.record("cam-1", NOW - timedelta(days=50))
    keep_as_evidence(ev, first)
    ev.record("cam-1", NOW - timedelta(days=40))  # #2: the sweep takes it
    ev.seal("cam-1", NOW - timedelta(days=3))  # #3: sealed, never received
    ev.record("cam-1", NOW - timedelta(days=2))
    ev.record("cam-1", NOW - timedelta(days=1))
    ev.record("cam-2", NOW - timedelta(days=45))  # cam-2's only clip: the sweep takes it
    sweep(ev)

    code, out = bwv(capsys, ev, "server", "status")
    assert code == 0, out
    lines = [line.strip() for line in out.splitlines()]
    cam1 = lines.index("cam-1: 3 segment(s), sequence 1..5, 1 flagged")
    assert lines[cam1 + 1:cam1 + 5] == [
        "held #1, #4..5",
        "#2: 1 deleted by policy (tombstones)",
        "#3: 1 missing (no segment, no tombstone)",
        "#4: gap after 2",
    ]
    cam2 = lines.index("cam-2: 0 segment(s), sequence 1..1")
    assert lines[cam2 + 1] == "#1: 1 deleted by policy (tombstones)"
    assert "1 flagged chain gap(s); 1 segment(s) missing, 2 deleted by policy (tombstones)" in lines


def test_a_tombstone_the_audit_trail_does_not_account_for_explains_nothing(ev, middle_swept, capsys):
    """A tombstone that links but that no `delete` record names was not written by a sweep: whoever can
    write the database could otherwise make any missing segment read 'deleted by policy'."""
    _first, middle, _last, _sweep_id = middle_swept
    tamper(ev, "DELETE FROM audit_log WHERE action = 'delete'")
    code, out = verify_store(capsys, ev)
    assert code == 1, out
    (line,) = [line for line in out.splitlines() if "unaccounted deletion" in line]
    assert "[tombstone cam-1 #2]" in line and "no `delete` record of the audit trail" in line
    assert "note:" not in out


def test_an_altered_delete_record_does_not_vouch_for_its_tombstone(ev, middle_swept, capsys):
    tamper(ev, "UPDATE audit_log SET actor = 'user:someone-else' WHERE action = 'delete'")
    code, out = verify_store(capsys, ev)
    assert code == 1, out
    (line,) = [line for line in out.splitlines() if "unaccounted deletion" in line]
    assert "it was altered" in line and "note:" not in out


# --------------------------------------------------------------------------- bwv verify --held
def test_held_verifies_what_the_database_lists_with_the_sweeps_gap_deleted_by_policy(ev, middle_swept, capsys):
    _first, _middle, _last, sweep_id = middle_swept
    code, out = bwv(capsys, ev, "verify", "--held", "--list")
    assert code == 0, out
    assert f"cam-1: note: segment 2 deleted by policy on 2026-11-25 (sweep {sweep_id})" in out
    assert "2 segment(s) from 1 device(s) verified, 1 deleted by policy; 0 problem(s)" in out


def test_held_finds_a_blob_swapped_for_another_valid_segment_and_one_gone_from_the_store(ev, middle_swept, capsys):
    first, _middle, last, _sweep_id = middle_swept
    after = ev.record("cam-1", NOW - timedelta(days=1))
    # Each file alone is a valid, signed segment; only the database says which should be under which key.
    ev.blobs.path(last.segment_hash).write_bytes(ev.blobs.path(first.segment_hash).read_bytes())
    ev.blobs.path(after.segment_hash).unlink()
    code, out = bwv(capsys, ev, "verify", "--held")
    assert code == 1, out
    (altered,) = [line for line in out.splitlines() if ": altered: " in line]
    assert altered.startswith(str(ev.blobs.path(last.segment_hash)))
    assert f"the database holds cam-1 segment 3 as {last.segment_hash}; the store's blob hashes to " \
           f"{first.segment_hash}" in altered
    (missing,) = [line for line in out.splitlines() if ": missing: " in line]
    assert "cam-1 segment 4 is held in the database but absent from the store" in missing


def test_held_and_paths_are_one_or_the_other(ev, capsys):
    code, out = bwv(capsys, ev, "verify")
    assert code == 2 and "--held" in out
    code, out = bwv(capsys, ev, "verify", "--held", str(ev.home.server_dir / "store"))
    assert code == 2 and "not both" in out
