"""What every blob store promises the server, checked on the local disk and on S3 (Ceph RGW) alike."""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from openbwv.sealed.reader import read_preamble
from openbwv.server.blobstore import BlobStore, LocalBlobStore, readable_path
from openbwv.server.errors import StoreError
from openbwv.server.s3store import S3BlobStore, parse_s3_url

from s3.s3_kit import Sealer


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "store")
    rgw, bucket = request.getfixturevalue("rgw"), request.getfixturevalue("bucket")
    return S3BlobStore(parse_s3_url(rgw.blobs_url(bucket)), client=rgw.client())


@pytest.fixture
def sealer(tmp_path) -> Sealer:
    return Sealer(tmp_path / "sealing")


def test_a_stored_blob_reads_back_byte_for_byte_and_its_source_is_consumed(store, sealer, tmp_path):
    assert isinstance(store, BlobStore)
    src, key = sealer.seal()
    sealed = src.read_bytes()
    store.put_file(src, key)
    assert not src.exists()
    assert store.exists(key) and store.size(key) == len(sealed)
    with store.open(key) as f:
        assert f.read() == sealed
    copy = readable_path(store, key, tmp_path)
    assert copy.read_bytes() == sealed
    assert store.free_bytes() > 0


def test_storing_a_blob_again_keeps_the_first_and_consumes_the_copy(store, sealer, tmp_path):
    src, key = sealer.seal()
    first = src.read_bytes()
    store.put_file(src, key)
    again = tmp_path / "again.part"
    again.write_bytes(first)
    store.put_file(again, key)
    assert not again.exists()
    with store.open(key) as f:
        assert f.read() == first


@pytest.mark.parametrize("key", ["../" * 10 + "x", "a1" * 32 + "/..", ("a1" * 32).upper(), "a1" * 31, "", "/etc/passwd"])
def test_a_blob_key_can_only_be_a_hash(store, key):
    with pytest.raises(StoreError, match="64 lowercase hex"):
        store.exists(key)


def test_shredding_destroys_the_wrapped_key_and_the_blob_and_says_which_key(store, sealer):
    src, key = sealer.seal()
    with open(src, "rb") as f:
        wrapped = read_preamble(f)[0].wrapped_key
    store.put_file(src, key)
    assert store.shred(key) == hashlib.sha256(wrapped).hexdigest()
    store.sync_all()
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.open(key)
    assert store.shred(key) is None  # nothing left: a second shred is no error


def test_locks_and_holds_are_accepted_on_every_store_and_never_stop_a_read(store, sealer):
    src, key = sealer.seal()
    sealed = src.read_bytes()
    store.put_file(src, key)
    store.set_retention(key, datetime.now(timezone.utc) + timedelta(days=31))
    store.set_legal_hold(key, True)
    store.set_legal_hold(key, False)
    with store.open(key) as f:
        assert f.read() == sealed
