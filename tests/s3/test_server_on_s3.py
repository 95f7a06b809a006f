"""`bwv server --blobs s3://...`: a real server ingesting into Ceph RGW, the locks following the lifecycle."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone

import pytest
from botocore.exceptions import ClientError

import kit as shared_kit
from openbwv.enrol import create_server_keys, enrol_device
from openbwv.home import Home
from openbwv.server.auth import DockTokens
from openbwv.server.retention import RetentionPolicy, due_utc_us
from openbwv.server.service import open_metadata
from openbwv.server import lifecycle

sk = shared_kit.server_kit()


@pytest.fixture
def home(tmp_path, rgw, monkeypatch) -> Home:
    """A server home whose environment holds the S3 credentials (the server process inherits them)."""
    for name, value in rgw.env().items():
        monkeypatch.setenv(name, value)
    h = Home(tmp_path / "home")
    create_server_keys(h)
    enrol_device(h, "cam-1")
    return h


def dock_token(home: Home) -> str:
    db = open_metadata(home)
    try:
        return DockTokens(db).add_dock("dock-1")
    finally:
        db.close()


def clip_of(home: Home, segment_hash: str) -> tuple[str, int]:
    db = open_metadata(home)
    try:
        record = lifecycle.clip(db.reader(), db.segment(segment_hash).clip_id)
        return record.clip_id, due_utc_us(RetentionPolicy(), record.facts())
    finally:
        db.close()


def test_an_upload_is_held_in_the_bucket_locked_until_its_due_date_and_marks_set_a_legal_hold(
        home, rgw, bucket, tmp_path):
    token = dock_token(home)
    officer = sk.staff_token(home, "eo-1", "evidence_officer")
    seg = sk.DeviceChain(home, "cam-1", tmp_path / "cam").seal(payload_bytes=200_000)
    with sk.ServerProcess(home.root, "--reserve-mb", "0", "--blobs", rgw.blobs_url(bucket)).start() as server:
        reply = sk.TusSession(server.url, token).upload(seg)
        assert reply.status == 204, reply.body
        receipt = sk.check_receipt(home, reply.receipt, seg)
        assert receipt.segment_hash == seg.segment_hash

        s3 = rgw.client()
        name = f"segments/{seg.segment_hash[:2]}/{seg.segment_hash[2:4]}/{seg.segment_hash}.bwv"
        assert not (home.server_dir / "store").exists() or not any((home.server_dir / "store").rglob("*.bwv"))
        clip_id, due_us = clip_of(home, seg.segment_hash)
        retention = s3.get_object_retention(Bucket=bucket, Key=name)["Retention"]
        assert retention["Mode"] == "COMPLIANCE"
        assert retention["RetainUntilDate"] == datetime.fromtimestamp(due_us // 1_000_000, timezone.utc)
        (version,) = s3.list_object_versions(Bucket=bucket, Prefix=name)["Versions"]
        with pytest.raises(ClientError) as refused:  # the server's own credentials
            s3.delete_object(Bucket=bucket, Key=name, VersionId=version["VersionId"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied"

        staff = sk.TusSession(server.url, officer)
        marked = staff.request("POST", f"/api/v1/clips/{clip_id}/marks",
                               body=json.dumps({"case_ref": "CR-1", "reason": "assault"}).encode())
        assert marked.status == 201, marked.body
        assert s3.get_object_legal_hold(Bucket=bucket, Key=name)["LegalHold"]["Status"] == "ON"
        lifted = staff.request("POST", f"/api/v1/clips/{clip_id}/marks/{marked.json()['mark']}/lift",
                               body=json.dumps({"reason": "case closed"}).encode())
        assert lifted.status == 200, lifted.body
        assert s3.get_object_legal_hold(Bucket=bucket, Key=name)["LegalHold"]["Status"] == "OFF"

        again = sk.TusSession(server.url, token).create(seg)  # the same segment again: it is held, once
        assert again.status == 200 and again.json()["held"]
    assert len(s3.list_object_versions(Bucket=bucket, Prefix=name)["Versions"]) == 1


@pytest.mark.parametrize("blobs, why", [
    ("s3://x", "not an S3 bucket name"),
    ("s3://evidence?endpoint=127.0.0.1", "not http(s)://HOST[:PORT]"),
    ("nfs://evidence", "give 'local'"),
])
def test_a_bad_blob_store_setting_stops_the_server_at_start_saying_why(home, blobs, why):
    done = subprocess.run([sk.BWV, "server", "--listen", "127.0.0.1:0", "--blobs", blobs], capture_output=True,
                          text=True, env=_env(home), timeout=60)
    assert done.returncode == 2
    assert why in done.stderr


def test_a_missing_bucket_stops_the_server_at_start_and_no_secret_is_printed(home, rgw):
    done = subprocess.run([sk.BWV, "server", "--listen", "127.0.0.1:0", "--blobs", rgw.blobs_url("not-created")],
                          capture_output=True, text=True, env=_env(home), timeout=60)
    assert done.returncode == 2
    assert "bucket 'not-created' does not exist" in done.stderr
    assert rgw.user.secret_key not in done.stderr + done.stdout


def test_the_blob_store_can_be_chosen_in_config_toml(home, rgw, bucket, tmp_path):
    home.config_file.write_text(f'[server]\nblobs = "{rgw.blobs_url(bucket)}"\n')
    token = dock_token(home)
    seg = sk.DeviceChain(home, "cam-1", tmp_path / "cam").seal(payload_bytes=10_000)
    with sk.ServerProcess(home.root, "--reserve-mb", "0").start() as server:
        assert sk.TusSession(server.url, token).upload(seg).status == 204
    keys = rgw.client().list_objects_v2(Bucket=bucket, Prefix="keys/")["Contents"]
    assert [k["Key"] for k in keys] == [f"keys/{seg.segment_hash}.key"]


def _env(home: Home) -> dict[str, str]:
    import os

    return dict(os.environ, BWV_HOME=str(home.root))


def test_the_console_commands_follow_config_toml_marks_set_a_hold_and_the_sweep_shreds_in_the_bucket(
        home, rgw, bucket, tmp_path):
    home.config_file.write_text(f'[server]\nblobs = "{rgw.blobs_url(bucket)}"\n')
    token = dock_token(home)
    seg = sk.DeviceChain(home, "cam-1", tmp_path / "cam").seal(payload_bytes=10_000)
    with sk.ServerProcess(home.root, "--reserve-mb", "0").start() as server:
        assert sk.TusSession(server.url, token).upload(seg).status == 204
    clip_id, due_us = clip_of(home, seg.segment_hash)
    name = f"segments/{seg.segment_hash[:2]}/{seg.segment_hash[2:4]}/{seg.segment_hash}.bwv"
    s3 = rgw.client()

    def bwv(*args: str) -> str:
        done = subprocess.run([sk.BWV, *args], capture_output=True, text=True, env=_env(home), timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    bwv("retention", "mark", clip_id, "--case", "CR-9", "--reason", "assault")
    assert s3.get_object_legal_hold(Bucket=bucket, Key=name)["LegalHold"]["Status"] == "ON"
    bwv("retention", "unmark", clip_id, "--mark", "1", "--reason", "no further action")
    assert s3.get_object_legal_hold(Bucket=bucket, Key=name)["LegalHold"]["Status"] == "OFF"
    after_due = datetime.fromtimestamp(due_us / 1e6 + 8 * 86400, timezone.utc).isoformat()
    out = bwv("retention", "sweep", "--now", after_due)
    assert "deleted 1 clip(s)" in out
    assert s3.list_objects_v2(Bucket=bucket, Prefix="keys/").get("KeyCount") == 0  # the means to decrypt: gone
    assert s3.list_object_versions(Bucket=bucket, Prefix=name)["Versions"]  # the ciphertext: locked till due
