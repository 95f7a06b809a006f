"""The retention sweep over an S3 store: keys destroyed when due, objects removed only once unlocked and unheld."""

from __future__ import annotations

import hashlib
import io
import time
from datetime import date, datetime, timedelta

import pytest

from lifecycle.lifecycle_kit import UTC, Evidence
from openbwv.sealed.errors import SegmentError
from openbwv.sealed.reader import decrypt_records, read_preamble
from openbwv.server import blob_locks, lifecycle, sar
from openbwv.server.errors import StoreError
from openbwv.server.retention import RetentionPolicy
from openbwv.server.s3store import S3BlobStore, parse_s3_url
from openbwv.server.sweep import Sweeper
from openbwv.registry import DeviceRegistry

POLICY = RetentionPolicy()
LOCK_S = 2  # the provisional lock of these tests' store, so that a test can outlive it


@pytest.fixture
def ev(tmp_path, rgw, bucket):
    store = S3BlobStore(parse_s3_url(rgw.blobs_url(bucket) + f"&initial_lock_s={LOCK_S}"), client=rgw.client())
    e = Evidence(tmp_path, blobs=store)
    yield e
    e.close()


def versions(ev: Evidence, key: str) -> list:
    return ev.blobs.s3.list_object_versions(Bucket=ev.blobs.bucket, Prefix=ev.blobs.data_name(key)).get("Versions", [])


def settle(ev: Evidence, *clips: str) -> None:
    blob_locks.settle(ev.db.reader(), ev.blobs, POLICY, list(clips))


def write(ev: Evidence, fn):
    with ev.db.transaction() as db:
        return fn(db)


def test_marks_and_requests_set_legal_holds_and_the_sweep_takes_only_what_is_neither_held_nor_locked(ev, tmp_path):
    now = datetime.now(UTC)
    old = now - timedelta(days=60)
    free = ev.record("cam-1", old, received=old + timedelta(hours=8))
    marked = ev.record("cam-1", old + timedelta(hours=1), received=old + timedelta(hours=9))
    asked = ev.record("cam-2", old + timedelta(days=3), received=old + timedelta(days=3, hours=8))
    mark = write(ev, lambda db: lifecycle.mark_evidence(db, marked.clip_id, case_ref="CR-7", reason="assault",
                                                        actor="eo", at=now.isoformat()))
    t = int((old + timedelta(days=3)).timestamp() * 1e6)
    request_id, held = write(ev, lambda db: sar.log_request(db, sar.RequestDetails(
        "A. Person", "me at the station", date.today(), t - 60_000_000, t + 60_000_000), actor="do",
        at=now.isoformat()))
    assert held == [asked.clip_id]
    settle(ev, free.clip_id, marked.clip_id, asked.clip_id)
    assert [ev.blobs.legal_hold(h.segment_hash) for h in (free, marked, asked)] == [False, True, True]

    report = Sweeper(ev.db, ev.blobs, POLICY).run(now=now)
    assert report.deleted_clips == [free.clip_id]
    assert not ev.blobs.exists(free.segment_hash)  # its key is gone at the due time...
    assert versions(ev, free.segment_hash)  # ... while its object is still locked
    for kept in (marked, asked):
        assert ev.blobs.exists(kept.segment_hash)
        with pytest.raises(StoreError, match="legal hold"):
            ev.blobs.shred(kept.segment_hash)

    time.sleep(LOCK_S + 0.5)
    Sweeper(ev.db, ev.blobs, POLICY).run(now=now)  # nothing due: the store removes what is now unlocked
    assert versions(ev, free.segment_hash) == []

    write(ev, lambda db: lifecycle.lift_mark(db, marked.clip_id, mark, reason="acquitted", actor="eo",
                                             at=now.isoformat()))
    write(ev, lambda db: sar.close(db, request_id, outcome="disclosed", actor="do", at=now.isoformat()))
    settle(ev, marked.clip_id, asked.clip_id)
    for released in (marked, asked):
        assert not ev.blobs.legal_hold(released.segment_hash)
        # Released now: kept for the notice period from now, and the lock follows the due date.
        assert ev.blobs.retention(released.segment_hash) >= now + timedelta(days=POLICY.notice_days) - \
            timedelta(seconds=1)
    later = now + timedelta(days=POLICY.notice_days, hours=1)
    report = Sweeper(ev.db, ev.blobs, POLICY).run(now=later)
    assert sorted(report.deleted_clips) == sorted([marked.clip_id, asked.clip_id])
    assert not ev.blobs.exists(marked.segment_hash) and not ev.blobs.exists(asked.segment_hash)
    reaping = ev.blobs.s3.list_objects_v2(Bucket=ev.blobs.bucket, Prefix="reap/").get("Contents", [])
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in reaping) == sorted([marked.segment_hash, asked.segment_hash])


def test_the_tombstone_names_the_wrapped_key_destroyed_and_the_remains_cannot_be_opened(ev, tmp_path):
    now = datetime.now(UTC)
    held = ev.record("cam-1", now - timedelta(days=60), received=now - timedelta(days=59))
    with ev.blobs.open(held.segment_hash) as f:
        sealed = f.read()
    Sweeper(ev.db, ev.blobs, POLICY).run(now=now)
    (tomb,) = lifecycle.tombstones_of(ev.db.reader(), held.clip_id)
    assert tomb["wrapped_key_sha256"] == hashlib.sha256(read_preamble(io.BytesIO(sealed))[0].wrapped_key).hexdigest()
    remains = tmp_path / "remains.bwv"
    remains.write_bytes(ev.blobs.s3.get_object(Bucket=ev.blobs.bucket, Key=ev.blobs.data_name(held.segment_hash))
                        ["Body"].read())
    with pytest.raises(SegmentError):
        list(decrypt_records(remains, DeviceRegistry(ev.home.registry_dir), ev.keys))


def test_a_legal_hold_the_database_does_not_know_still_stops_the_sweep_and_nothing_is_shredded(ev):
    now = datetime.now(UTC)
    held = ev.record("cam-1", now - timedelta(days=60), received=now - timedelta(days=59))
    ev.blobs.set_legal_hold(held.segment_hash, True)  # e.g. set by a records officer in the store itself
    with pytest.raises(StoreError, match="legal hold"):
        Sweeper(ev.db, ev.blobs, POLICY).run(now=now)
    assert ev.blobs.exists(held.segment_hash)
    assert lifecycle.clip(ev.db.reader(), held.clip_id).state == lifecycle.CLIP_DELETING
    ev.blobs.set_legal_hold(held.segment_hash, False)
    report = Sweeper(ev.db, ev.blobs, POLICY).run(now=now)
    assert report.resumed == 1 and report.deleted_clips == [held.clip_id]
    assert not ev.blobs.exists(held.segment_hash)
