"""The retention sweep (server/sweep.py) over real sealed, ingested footage."""

from __future__ import annotations

import hashlib
import os
from datetime import date, datetime, timedelta

import pytest

from lifecycle.lifecycle_kit import UTC, Evidence
from openbwv.sealed.errors import SegmentError
from openbwv.sealed.reader import decrypt_records, read_preamble
from openbwv.server import audit, lifecycle, sar
from openbwv.server.errors import ForkRejected
from openbwv.server.retention import RetentionPolicy
from openbwv.server.sweep import Sweeper, SweepReport
from openbwv.registry import DeviceRegistry

# Each test once per metadata engine: SQLite, then PostgreSQL (conftest.py).
pytestmark = pytest.mark.usefixtures("db_engine")

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy()


@pytest.fixture
def ev(tmp_path):
    e = Evidence(tmp_path)
    yield e
    e.close()


def sweep(ev: Evidence, now: datetime = NOW, *, dry_run: bool = False, **kw):
    return Sweeper(ev.db, ev.blobs, POLICY, **kw).run(now=now, dry_run=dry_run)


def deletes(ev: Evidence, clip_id: str) -> list:
    return audit.query(ev.db.reader(), action="delete", target=f"clip:{clip_id}")


def write(ev: Evidence, fn):
    with ev.db.transaction() as db:
        return fn(db)


def test_old_unmarked_footage_goes_and_everything_else_stays(ev):
    old = ev.record("cam-1", NOW - timedelta(days=32))
    recent = ev.record("cam-1", NOW - timedelta(days=30))
    marked = ev.record("cam-2", NOW - timedelta(days=90))
    write(ev, lambda db: lifecycle.mark_evidence(db, marked.clip_id, case_ref="CR-1", reason="assault",
                                                 actor="user:eve", at=NOW.isoformat()))
    before = {h.segment_hash: ev.blob_digest(h.segment_hash) for h in (recent, marked)}

    report = sweep(ev)

    assert report.deleted_clips == [old.clip_id]
    assert ev.blob_digest(old.segment_hash) is None
    assert {h: ev.blob_digest(h) for h in before} == before  # untouched, byte for byte
    assert lifecycle.clip(ev.db.reader(), old.clip_id).state == "deleted"
    assert ev.db.segment(old.segment_hash) is None
    assert len(deletes(ev, old.clip_id)) == 1


def test_a_tombstone_keeps_the_hashes_and_the_digest_of_the_destroyed_key(ev):
    path, claim, clip = ev.seal("cam-1", NOW - timedelta(days=40))
    with open(path, "rb") as f:
        wrapped = read_preamble(f)[0].wrapped_key
    ev.ingest(path, claim, clip, NOW - timedelta(days=39))
    sweep(ev)
    (stone,) = lifecycle.tombstones_of(ev.db.reader(), clip)
    assert stone["segment_hash"] == claim.segment_hash and stone["sequence"] == 1
    assert stone["wrapped_key_sha256"] == hashlib.sha256(wrapped).hexdigest()
    assert stone["sweep_id"].startswith("sweep-")


def test_shredding_destroys_the_key_in_the_blocks_a_file_carver_would_find(ev):
    held = ev.record("cam-1", NOW - timedelta(days=40))
    blob = ev.blobs.path(held.segment_hash)
    carved = blob.parent / "carved-copy"
    os.link(blob, carved)  # the same blocks on disk, still reachable after the unlink
    list(decrypt_records(carved, DeviceRegistry(ev.home.registry_dir), ev.keys))  # readable before
    sweep(ev)
    assert not blob.exists()
    with open(carved, "rb") as f:
        assert set(read_preamble(f)[0].wrapped_key) == {0}
    with pytest.raises(SegmentError):
        list(decrypt_records(carved, DeviceRegistry(ev.home.registry_dir), ev.keys))


def test_a_subject_access_request_holds_footage_until_it_is_closed(ev):
    held = ev.record("cam-1", NOW - timedelta(days=35))
    details = sar.RequestDetails("A. Person", "stopped in the street", date(2026, 11, 20),
                                 lifecycle.clip(ev.db.reader(), held.clip_id).camera_start_us - 60_000_000,
                                 lifecycle.clip(ev.db.reader(), held.clip_id).camera_start_us + 60_000_000)
    request_id, holding = write(ev, lambda db: sar.log_request(db, details, actor="user:dora", at=NOW.isoformat()))
    assert holding == [held.clip_id]
    assert sweep(ev).deleted_clips == []
    assert ev.blob_digest(held.segment_hash) is not None
    write(ev, lambda db: sar.close(db, request_id, outcome="disclosed", actor="user:dora", at=NOW.isoformat()))
    # Released, it spends the notice week on the due list before it goes.
    assert sweep(ev, NOW + timedelta(days=7) - timedelta(microseconds=1)).deleted_clips == []
    assert sweep(ev, NOW + timedelta(days=7)).deleted_clips == [held.clip_id]


def test_lifting_the_last_mark_lets_the_category_rule_apply_again(ev):
    held = ev.record("cam-1", NOW - timedelta(days=60))
    mark = write(ev, lambda db: lifecycle.mark_evidence(db, held.clip_id, case_ref="CR-9", reason="r",
                                                        actor="user:eve", at=NOW.isoformat()))
    assert sweep(ev).deleted_clips == []
    write(ev, lambda db: lifecycle.lift_mark(db, held.clip_id, mark, reason="case closed, no charge",
                                             actor="user:eve", at=NOW.isoformat()))
    assert sweep(ev).deleted_clips == []  # the notice week first
    assert sweep(ev, NOW + timedelta(days=7)).deleted_clips == [held.clip_id]


def test_a_dry_run_lists_what_would_go_and_changes_nothing(ev):
    old = ev.record("cam-1", NOW - timedelta(days=40))
    records = audit.head(ev.db.reader()).seq
    report = Sweeper(ev.db, ev.blobs, POLICY).run(now=NOW, dry_run=True)
    assert report.deleted_clips == [old.clip_id]
    assert ev.blob_digest(old.segment_hash) is not None
    assert lifecycle.clip(ev.db.reader(), old.clip_id).state == "held"
    assert audit.head(ev.db.reader()).seq == records


def test_a_second_sweep_deletes_nothing_more(ev):
    ev.record("cam-1", NOW - timedelta(days=40))
    ev.record("cam-1", NOW - timedelta(days=41))
    assert len(sweep(ev).deleted_clips) == 2
    again = sweep(ev)
    assert again.deleted_clips == [] and again.resumed == 0
    assert len(audit.query(ev.db.reader(), action="delete")) == 2


def test_the_due_list_shows_the_next_week_and_what_a_hold_keeps(ev):
    soon = ev.record("cam-1", NOW - timedelta(days=27))
    later = ev.record("cam-1", NOW - timedelta(days=20))
    kept = ev.record("cam-2", NOW - timedelta(days=26))
    write(ev, lambda db: lifecycle.mark_evidence(db, kept.clip_id, case_ref="CR-2", reason="r", actor="user:s",
                                                 at=NOW.isoformat()))
    week = int((NOW + timedelta(days=7)).timestamp() * 1_000_000)
    assert [c.clip_id for c in lifecycle.due_between(ev.db.reader(), POLICY, week)] == [soon.clip_id]
    listed = lifecycle.due_between(ev.db.reader(), POLICY, week, include_held=True)
    assert {c.clip_id for c in listed} == {soon.clip_id, kept.clip_id} and later.clip_id not in listed


def test_a_chain_gap_left_by_deletion_is_explained_and_later_segments_still_link(ev):
    first = ev.record("cam-1", NOW - timedelta(days=40))
    sweep(ev)
    second = ev.record("cam-1", NOW - timedelta(hours=1), received=NOW)
    assert ev.db.segment(second.segment_hash).chain_status == "linked"
    assert lifecycle.deleted_sequences(ev.db.reader(), "cam-1") == {first.sequence}


def test_a_deleted_segment_sent_again_is_refused_with_the_reason(ev):
    path, claim, clip = ev.seal("cam-1", NOW - timedelta(days=40))
    copy = path.with_name("replay.bwv")
    copy.write_bytes(path.read_bytes())
    ev.ingest(path, claim, clip, NOW - timedelta(days=39))
    sweep(ev)
    with pytest.raises(ForkRejected, match="deleted by the retention policy"):
        ev.ingest(copy, claim, clip, NOW)


def test_a_segment_arriving_while_its_clip_is_being_deleted_is_kept(ev):
    import uuid

    clip = uuid.uuid4()
    first = ev.record("cam-1", NOW - timedelta(days=40), clip_id=clip)
    sweeper = Sweeper(ev.db, ev.blobs, POLICY)
    intended = sweeper._intend([str(clip)], "sweep-test", int(NOW.timestamp() * 1e6))
    shredded = {first.segment_hash: ev.blobs.shred(first.segment_hash)}  # step 2, for what it knew of
    late = ev.record("cam-1", NOW - timedelta(days=40) + timedelta(seconds=10), clip_id=clip, index=1,
                     received=NOW)
    report = SweepReport("sweep-test", False, NOW.isoformat())
    with ev.db.transaction() as db:
        sweeper._record(db, str(clip), "sweep-test", shredded, NOW.isoformat(), report)
    assert intended and ev.blob_digest(late.segment_hash) is not None
    assert ev.db.segment(late.segment_hash) is not None and ev.db.segment(first.segment_hash) is None
    assert lifecycle.clip(ev.db.reader(), str(clip)).state == "held"
    assert report.kept_late_segments == 1 and report.deleted_segments == 1
    assert sweep(ev, NOW + timedelta(hours=1)).deleted_clips == []  # what arrived late gets the notice week
    assert sweep(ev, NOW + timedelta(days=8)).deleted_clips == [str(clip)]  # the late one, once due


def test_the_audit_chain_still_verifies_after_a_sweep(ev):
    for days in (40, 35, 10):
        ev.record("cam-1", NOW - timedelta(days=days))
    sweep(ev)
    report = audit.verify(ev.db.reader(), ev.keys.public.receipt_verifier())
    assert report.ok, report.to_dict()


def _interrupted_after_intent(ev: Evidence, clip_id: str) -> None:
    """What a sweep killed between its intent and its first shred leaves behind."""
    assert Sweeper(ev.db, ev.blobs, POLICY)._intend([clip_id], "sweep-killed", int(NOW.timestamp() * 1e6))
    assert lifecycle.clip(ev.db.reader(), clip_id).state == "deleting"


def test_a_request_logged_while_a_sweep_was_interrupted_saves_the_clip_it_had_chosen(ev):
    held = ev.record("cam-1", NOW - timedelta(days=40))
    _interrupted_after_intent(ev, held.clip_id)
    start = lifecycle.clip(ev.db.reader(), held.clip_id).camera_start_us
    details = sar.RequestDetails("A. Person", "stopped in the street", date(2026, 11, 25),
                                 start - 60_000_000, start + 60_000_000)
    _, holding = write(ev, lambda db: sar.log_request(db, details, actor="user:dora", at=NOW.isoformat()))
    assert held.clip_id in holding  # a clip being deleted is held too (DPA 2018 s.173)
    report = sweep(ev)
    assert report.abandoned == [held.clip_id] and report.deleted_clips == []
    assert lifecycle.clip(ev.db.reader(), held.clip_id).state == "held"
    assert ev.blob_digest(held.segment_hash) is not None and deletes(ev, held.clip_id) == []
    [note] = [r for r in audit.query(ev.db.reader(), action="hold", target=f"clip:{held.clip_id}")
              if r.actor == "system:retention-sweep"]
    assert "abandoned" in note.details["why"]


def test_once_shredding_has_begun_no_hold_is_pretended_and_the_deletion_is_finished(ev):
    import uuid

    from openbwv.server.errors import Conflict

    clip = uuid.uuid4()
    first = ev.record("cam-1", NOW - timedelta(days=40), clip_id=clip)
    second = ev.record("cam-1", NOW - timedelta(days=40) + timedelta(seconds=10), clip_id=clip, index=1)
    sweeper = Sweeper(ev.db, ev.blobs, POLICY)
    chosen = sweeper._intend([str(clip)], "sweep-killed", int(NOW.timestamp() * 1e6))
    assert sweeper._begin_shred(chosen, SweepReport("sweep-killed", False, NOW.isoformat())) == chosen
    ev.blobs.shred(first.segment_hash)  # ... and the killed sweep got this far: that footage is gone for good
    start = lifecycle.clip(ev.db.reader(), str(clip)).camera_start_us
    details = sar.RequestDetails("A. Person", "x", date(2026, 11, 25), start - 60_000_000, start + 60_000_000)
    _, holding = write(ev, lambda db: sar.log_request(db, details, actor="user:dora", at=NOW.isoformat()))
    assert str(clip) not in holding  # nobody is told footage is held that is being destroyed
    with pytest.raises(Conflict, match="shredding began"):
        write(ev, lambda db: sar.add_holds(db, _, [str(clip)], actor="user:dora", at=NOW.isoformat()))
    report = sweep(ev)
    assert report.abandoned == [] and report.deleted_clips == [str(clip)] and report.resumed == 1
    assert lifecycle.clip(ev.db.reader(), str(clip)).state == "deleted"
    assert ev.blob_digest(second.segment_hash) is None and len(deletes(ev, str(clip))) == 1


def test_a_request_logged_while_a_batch_is_being_shredded_saves_the_clips_not_yet_reached(ev):
    held = ev.record("cam-1", NOW - timedelta(days=40))
    sweeper = Sweeper(ev.db, ev.blobs, POLICY)
    chosen = sweeper._intend([held.clip_id], "sweep-now", int(NOW.timestamp() * 1e6))
    start = lifecycle.clip(ev.db.reader(), held.clip_id).camera_start_us
    details = sar.RequestDetails("A. Person", "x", date(2026, 11, 25), start - 60_000_000, start + 60_000_000)
    write(ev, lambda db: sar.log_request(db, details, actor="user:dora", at=NOW.isoformat()))
    report = SweepReport("sweep-now", False, NOW.isoformat())
    sweeper._shred_and_record(chosen, report)  # the batch goes on to its shredding step
    assert report.abandoned == [held.clip_id] and report.deleted_clips == []
    assert lifecycle.clip(ev.db.reader(), held.clip_id).state == "held"
    with open(ev.blobs.path(held.segment_hash), "rb") as f:
        assert any(read_preamble(f)[0].wrapped_key)  # its key untouched


def test_only_one_sweep_runs_at_a_time_on_one_database(ev):
    import fcntl

    from openbwv.server.errors import Conflict

    ev.record("cam-1", NOW - timedelta(days=40))
    with open(ev.db.local_dir / "retention-sweep.lock", "a+") as other:  # another sweep holds it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(Conflict, match="another retention sweep is running"):
            sweep(ev)
        assert sweep(ev, dry_run=True).deleted_clips  # a dry run changes nothing, so it needs no lock
    assert len(sweep(ev).deleted_clips) == 1  # released: the next one runs


def test_a_sweep_on_another_node_sharing_the_postgresql_database_keeps_this_one_out(ev, db_engine):
    if db_engine != "postgresql":
        pytest.skip("SQLite's processes share one machine: its lock file is the test above")
    from openbwv.server.errors import Conflict
    from openbwv.server.sweep import SWEEP_LOCK

    ev.record("cam-1", NOW - timedelta(days=40))
    other_node = ev.db.hold_exclusive(SWEEP_LOCK)  # another node's sweep, on its own connection
    assert other_node is not None
    with pytest.raises(Conflict, match="another retention sweep is running"):
        sweep(ev)
    other_node.close()
    assert len(sweep(ev).deleted_clips) == 1  # released: the next one runs


def test_exported_copies_of_a_deleted_clip_go_with_it_and_their_manifests_stay(ev):
    old, young = ev.record("cam-1", NOW - timedelta(days=40)), ev.record("cam-1", NOW - timedelta(days=3))
    exports = ev.home.server_dir / "exports"
    made = {}
    for held in (old, young):
        for where in (exports / "SAR-2026-00001" / "1", exports / "evidential" / held.clip_id / "1"):
            where.mkdir(parents=True, exist_ok=True)
            (where / f"{held.clip_id}.mp4").write_bytes(b"decrypted footage")
            (where / "manifest.json").write_text("{}")
            made.setdefault(held.clip_id, []).append(where / f"{held.clip_id}.mp4")
    assert sweep(ev).deleted_clips == [old.clip_id]
    assert not any(p.exists() for p in made[old.clip_id])  # no decrypted copy outlives the footage
    assert all(p.exists() for p in made[young.clip_id])
    assert all((p.parent / "manifest.json").exists() for ps in made.values() for p in ps)  # the disclosure record
    [deleted] = deletes(ev, old.clip_id)
    assert deleted.details["export_copies_removed"] == 2


def test_the_faces_found_in_a_deleted_clip_go_with_it(ev):
    """A survey of a clip's faces (redact_survey.py) is derived from the footage: it goes when the footage goes."""
    from openbwv.server.redact_survey import surveys_root

    old, young = ev.record("cam-1", NOW - timedelta(days=40)), ev.record("cam-1", NOW - timedelta(days=3))
    files = {}
    for held in (old, young):
        path = surveys_root(ev.home.server_dir) / held.clip_id / f"{'ab' * 32}.json"
        path.parent.mkdir(parents=True)
        path.write_text("{}")
        files[held.clip_id] = path
    assert sweep(ev).deleted_clips == [old.clip_id]
    assert not files[old.clip_id].exists() and not files[old.clip_id].parent.exists()
    assert files[young.clip_id].exists()
