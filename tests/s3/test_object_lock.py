"""Object Lock is real: what the S3 store writes, the store itself refuses to delete before its time."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from openbwv.sealed.errors import SegmentError
from openbwv.sealed.reader import decrypt_records, read_preamble
from openbwv.server.errors import ConfigError, StoreError
from openbwv.server.s3store import S3BlobStore, parse_s3_url

from s3.s3_kit import Sealer

UTC = timezone.utc


def s3_store(rgw, bucket, **options) -> S3BlobStore:
    url = rgw.blobs_url(bucket) + "".join(f"&{k}={v}" for k, v in options.items())
    return S3BlobStore(parse_s3_url(url), client=rgw.client())


@pytest.fixture
def sealer(tmp_path) -> Sealer:
    return Sealer(tmp_path / "sealing")


def only_version(rgw, bucket, name) -> str:
    (version,) = rgw.client().list_object_versions(Bucket=bucket, Prefix=name)["Versions"]
    return version["VersionId"]


def test_every_segment_is_written_compliance_locked_and_the_servers_own_credentials_cannot_delete_it(
        rgw, bucket, sealer):
    store = s3_store(rgw, bucket)
    src, key = sealer.seal()
    sealed = src.read_bytes()
    before = datetime.now(UTC)
    store.put_file(src, key)
    s3 = rgw.client()  # the very credentials the server signs in with
    name = store.data_name(key)
    retention = s3.get_object_retention(Bucket=bucket, Key=name)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"] >= before + timedelta(hours=23)  # the provisional lock: a day
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=name, VersionId=only_version(rgw, bucket, name))
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(StoreError, match="locked or held"):
        store.delete(key)
    with store.open(key) as f:
        assert f.read() == sealed


def test_the_locked_object_holds_the_segment_without_its_wrapped_key(rgw, bucket, sealer):
    store = s3_store(rgw, bucket)
    src, key = sealer.seal()
    sealed = src.read_bytes()
    with open(src, "rb") as f:
        preamble, raw = read_preamble(f)
    store.put_file(src, key)
    locked = rgw.client().get_object(Bucket=bucket, Key=store.data_name(key))["Body"].read()
    at = len(raw) - len(preamble.wrapped_key)
    assert locked[at:len(raw)] == bytes(len(preamble.wrapped_key))
    assert locked[:at] + preamble.wrapped_key + locked[len(raw):] == sealed
    assert rgw.client().get_object(Bucket=bucket, Key=store.key_name(key))["Body"].read() == preamble.wrapped_key


def test_a_lock_is_lengthened_to_the_retention_date_and_never_shortened(rgw, bucket, sealer):
    store = s3_store(rgw, bucket)
    src, key = sealer.seal()
    store.put_file(src, key)
    later = (datetime.now(UTC) + timedelta(days=31)).replace(microsecond=0)
    store.set_retention(key, later)
    assert store.retention(key) == later
    store.set_retention(key, later - timedelta(days=20))
    assert store.retention(key) == later


def test_a_shredded_segment_cannot_be_decrypted_while_its_locked_object_still_exists(rgw, bucket, sealer, tmp_path):
    store = s3_store(rgw, bucket)
    src, key = sealer.seal()
    store.put_file(src, key)
    opened = tmp_path / "opened.bwv"
    with store.open(key) as f:
        opened.write_bytes(f.read())
    assert [t for t, _ in decrypt_records(opened, sealer, sealer.server)]

    store.shred(key)
    name = store.data_name(key)
    left = rgw.client().get_object(Bucket=bucket, Key=name)["Body"].read()  # still there: locked for a day
    assert rgw.client().get_object_retention(Bucket=bucket, Key=name)["Retention"]["Mode"] == "COMPLIANCE"
    remains = tmp_path / "remains.bwv"
    remains.write_bytes(left)
    with pytest.raises(SegmentError):  # not even with the server's private key
        list(decrypt_records(remains, sealer, sealer.server))
    assert not store.exists(key)
    assert rgw.client().list_object_versions(Bucket=bucket, Prefix=store.key_name(key)).get("Versions", []) == []


def test_a_shredded_object_is_removed_once_its_lock_ends(rgw, bucket, sealer):
    store = s3_store(rgw, bucket, initial_lock_s=2)
    src, key = sealer.seal()
    store.put_file(src, key)
    store.shred(key)
    store.sync_all()  # the lock still stands: nothing removed
    name = store.data_name(key)
    assert rgw.client().list_object_versions(Bucket=bucket, Prefix=name).get("Versions")
    time.sleep(2.5)
    store.sync_all()
    assert rgw.client().list_object_versions(Bucket=bucket, Prefix=name).get("Versions", []) == []
    assert rgw.client().list_objects_v2(Bucket=bucket, Prefix="reap/").get("KeyCount") == 0


def test_a_legal_hold_outlasts_the_lock_and_stops_shredding_until_it_is_lifted(rgw, bucket, sealer):
    store = s3_store(rgw, bucket, initial_lock_s=1)
    src, key = sealer.seal()
    store.put_file(src, key)
    store.set_legal_hold(key, True)
    assert store.legal_hold(key)
    time.sleep(2)  # the lock has ended; the hold has not
    s3, name = rgw.client(), store.data_name(key)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=name, VersionId=only_version(rgw, bucket, name))
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(StoreError, match="legal hold"):
        store.shred(key)
    assert store.exists(key)
    store.set_legal_hold(key, False)
    assert store.shred(key)
    assert s3.list_object_versions(Bucket=bucket, Prefix=name).get("Versions", []) == []


# --------------------------------------------------------------------------- what is refused at start
@pytest.mark.parametrize("url, why", [
    ("http://evidence", "s3://BUCKET"),
    ("s3://AKIA:secret@evidence?endpoint=http://127.0.0.1:1", "credentials do not belong in the URL"),
    ("s3://Evidence_Bucket", "not an S3 bucket name"),
    ("s3://ev", "not an S3 bucket name"),
    ("s3://evidence?endpoint=ftp://127.0.0.1:1", "not http"),
    ("s3://evidence?endpoint=http://127.0.0.1:99999", "bad port"),
    ("s3://evidence?endpont=http://127.0.0.1:1", "unknown option 'endpont'"),
    ("s3://evidence?initial_lock_s=soon", "not a number"),
    ("s3://evidence?initial_lock_s=0", "outside"),
    ("s3://evidence/../x", "prefix"),
])
def test_a_malformed_s3_url_is_refused_saying_what_is_wrong(url, why):
    with pytest.raises(ConfigError, match=why.replace("(", r"\(")):
        parse_s3_url(url)


def test_a_prefix_and_options_are_read_from_the_url():
    loc = parse_s3_url("s3://evidence/force-a?endpoint=http://127.0.0.1:7480/&region=eu-west-2&initial_lock_s=60")
    assert (loc.bucket, loc.prefix, loc.endpoint, loc.region) == ("evidence", "force-a/", "http://127.0.0.1:7480",
                                                                  "eu-west-2")
    assert loc.initial_lock == timedelta(seconds=60)


def test_a_missing_bucket_is_refused_at_start(rgw):
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist"):
        s3_store(rgw, "no-such-bucket")


def test_a_bucket_without_object_lock_is_refused_at_start(rgw):
    rgw.client().create_bucket(Bucket="plain-bucket")
    with pytest.raises(ConfigError, match="has no Object Lock"):
        s3_store(rgw, "plain-bucket")


def test_a_bucket_with_a_default_retention_is_refused_because_keys_could_not_be_shredded(rgw, bucket):
    rgw.client().put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    with pytest.raises(ConfigError, match="default retention"):
        s3_store(rgw, bucket)


def test_no_credentials_is_refused_at_start_naming_where_they_go(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        S3BlobStore.from_url("s3://evidence?endpoint=http://127.0.0.1:1")
