"""Migrating an embedded installation (SQLite, local disk) to PostgreSQL and Ceph RGW: everything arrives,
checked, locked as ingest would lock it, and the source is not touched."""

from __future__ import annotations

import sqlite3
import shutil
from datetime import datetime, timedelta

import pytest

from s3.migration_kit import POLICY, build, snapshot
from lifecycle.lifecycle_kit import UTC
from openbwv.server import audit, lifecycle
from openbwv.server.db import MetadataStore
from openbwv.server.migration import MigrationError
from openbwv.server.migrator import Migrator, Source
from openbwv.server.s3store import S3BlobStore, parse_s3_url
from openbwv.server.store import parse_database_url


@pytest.fixture(scope="module")
def installation(tmp_path_factory):
    return build(tmp_path_factory.mktemp("embedded") / "home")


def source_of(inst, **kw) -> Source:
    server = inst.home / "server"
    return Source(kw.get("database", server / "evidence.db"), server / "store", server, POLICY)


def migrate(inst, db_url: str, store: S3BlobStore, **kw):
    lines: list[str] = []
    m = Migrator(source_of(inst, **kw), parse_database_url(db_url), store, batch=3, actor="local:test",
                 say=lines.append)
    try:
        return m.run(), lines
    finally:
        m.close()


def s3(rgw, bucket) -> S3BlobStore:
    return S3BlobStore(parse_s3_url(rgw.blobs_url(bucket)), client=rgw.client())


def test_everything_arrives_checked_and_the_reconciliation_matches_on_both_sides(installation, pg, rgw, bucket):
    before = snapshot(installation.home)
    db_url, store = pg.new_database(), s3(rgw, bucket)
    result, lines = migrate(installation, db_url, store)

    assert result.matches, "\n".join(result.table())
    counts = {line.what: line.source.rows for line in result.lines}
    assert counts["segments"] == len(installation.held)
    assert counts["tombstones"] == len(installation.deleted)
    assert counts["blobs"] == len(installation.held)
    assert counts["uploads"] == 0  # the one still receiving stays behind: its dock starts it again
    assert all(counts[t] >= 1 for t in ("subject_requests", "sar_holds", "sar_exports", "evidence_marks",
                                        "device_assignments", "users", "user_tokens", "docks", "track_spans",
                                        "track_span_rtree", "audit_checkpoints"))
    assert any("still in progress at the source are not migrated" in line for line in lines)
    assert snapshot(installation.home) == before, "the migration changed its source"

    dest = MetadataStore(db_url)
    try:
        r = dest.reader()
        head = audit.head(r)
        assert head.action == "migrate" and head.seq == counts["audit head"] + 1
        assert audit.verify(r, _public(installation).receipt_verifier()).ok
        # Identity columns go on after the ids copied: the fleet's next mark is a new one.
        with dest.transaction() as db:
            new = lifecycle.mark_evidence(db, installation.free.clip_id, case_ref="CR-2/26", reason="theft",
                                          actor="user:eo", at=datetime.now(UTC).isoformat())
        assert new > counts["evidence_marks"]
    finally:
        dest.close()


def test_blobs_are_locked_until_their_due_date_and_held_clips_carry_a_legal_hold(installation, pg, rgw, bucket):
    store = s3(rgw, bucket)
    result, _ = migrate(installation, pg.new_database(), store)
    assert result.matches, "\n".join(result.table())
    assert store.legal_hold(installation.marked.segment_hash)
    assert store.legal_hold(installation.requested.segment_hash)
    assert not store.legal_hold(installation.free.segment_hash)
    # Recorded two days ago, 31 days kept: locked about four weeks on, not only the provisional day.
    assert store.retention(installation.free.segment_hash) > datetime.now(UTC) + timedelta(days=20)
    for h in installation.deleted:
        assert not store.exists(h.segment_hash)  # deleted by policy at the source: only its tombstone moves


def test_a_second_run_only_reconciles_again_and_records_the_move_once(installation, pg, rgw, bucket):
    db_url, store = pg.new_database(), s3(rgw, bucket)
    first, _ = migrate(installation, db_url, store)
    again, lines = migrate(installation, db_url, store)
    assert again.matches and again.digest == first.digest
    assert any("finished earlier" in line for line in lines)
    dest = MetadataStore(db_url)
    try:
        assert len(list(audit.query(dest.reader(), action="migrate"))) == 1
    finally:
        dest.close()


def test_a_destination_holding_another_installation_is_refused(installation, pg, rgw, bucket):
    db_url = pg.new_database()
    other = MetadataStore(db_url)
    try:
        from openbwv.server.auth import DockTokens

        DockTokens(other).add_dock("dock-elsewhere")
    finally:
        other.close()
    with pytest.raises(MigrationError, match=r"not empty \(rows in docks\)"):
        migrate(installation, db_url, s3(rgw, bucket))


def test_a_source_at_an_older_schema_is_refused_and_left_as_it_was(installation, pg, rgw, bucket, tmp_path):
    old = tmp_path / "old" / "evidence.db"
    old.parent.mkdir()
    shutil.copyfile(installation.database, old)
    with sqlite3.connect(old) as conn:
        conn.execute("UPDATE schema_version SET version = version - 1")
    conn.close()
    kept = old.read_bytes()
    with pytest.raises(MigrationError, match=r"schema version \d+, this OpenBWV at \d+: bring the source up to date"):
        migrate(installation, pg.new_database(), s3(rgw, bucket), database=old)
    assert old.read_bytes() == kept


def _public(inst):
    from openbwv.sealed.keys import ServerPublicKey

    return ServerPublicKey.load(inst.home / "server" / "keys" / "server.pub")


def test_a_segment_recorded_as_held_whose_blob_is_missing_stops_the_migration(installation, pg, rgw, bucket,
                                                                              tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(installation.home, broken)
    lost = installation.held[4].segment_hash
    blob = broken / "server" / "store" / lost[0:2] / lost[2:4] / f"{lost}.bwv"
    blob.chmod(0o644)
    blob.unlink()
    inst = type(installation)(broken)
    with pytest.raises(MigrationError, match=f"records segment {lost} as held but its blob .* is absent"):
        migrate(inst, pg.new_database(), s3(rgw, bucket))


def test_a_source_with_commits_in_its_write_ahead_log_is_refused(installation, pg, rgw, bucket, tmp_path):
    from openbwv.server.store.migration import SourceUnreadable

    live = tmp_path / "live" / "evidence.db"
    live.parent.mkdir()
    shutil.copyfile(installation.database, live)
    live.with_name("evidence.db-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(28))  # as a running server leaves it
    with pytest.raises(SourceUnreadable, match="write-ahead log evidence.db-wal holds 32 bytes.*Stop every"):
        migrate(installation, pg.new_database(), s3(rgw, bucket), database=live)


def test_receipts_and_checkpoints_signed_before_a_key_rotation_verify_and_the_old_keys_move_too(
        installation, pg, rgw, bucket, tmp_path):
    from openbwv.enrol import create_server_keys
    from openbwv.home import Home
    from openbwv.server.migrator import install_files

    rotated = tmp_path / "rotated"
    shutil.copytree(installation.home, rotated)
    create_server_keys(Home(rotated), force_new=True)  # every receipt and checkpoint so far: the old key's
    inst = type(installation)(rotated)
    db_url, blobs_url = pg.new_database(), rgw.blobs_url(bucket)
    result, _ = migrate(inst, db_url, s3(rgw, bucket))
    assert result.matches, "\n".join(result.table())

    node = tmp_path / "node"
    install_files(source_of(inst), node, db_url, blobs_url)
    [old] = [p.name for p in (rotated / "server").glob("keys.old-*")]
    assert sorted(p.name for p in (node / "server" / old).iterdir()) == \
        sorted(p.name for p in (rotated / "server" / old).iterdir())
    assert (node / "config.toml").read_text().count(db_url) == 1
