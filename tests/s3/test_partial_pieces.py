"""Uploads in progress as pieces in the bucket (server/partials.py, server/s3partials.py).

First the pure rules of pieces, then the S3 partial store against a real Ceph RGW: what a PATCH writes
is there for any node to read back, leftovers of a PATCH that never committed are ignored and then cut
away, and nothing of an upload stays in the (versioned) bucket once it is finished or forgotten.
"""

from __future__ import annotations

import os

import pytest

from openbwv.server.errors import StoreError
from openbwv.server.partials import (
    LocalPartialStore,
    PartialGap,
    Piece,
    parse_piece_name,
    piece_chain,
    piece_name,
)
from openbwv.server.s3partials import PIECE_BYTES, S3PartialStore
from openbwv.server.s3store import S3BlobStore, parse_s3_url

UPLOAD = "0123456789abcdef0123456789abcdef"


# --------------------------------------------------------------------------- the rules of pieces
def test_piece_names_are_twenty_zero_padded_digits_so_a_listing_is_in_offset_order():
    assert piece_name(0) == "00000000000000000000"
    assert piece_name(1_048_576) == "00000000000001048576"
    assert sorted([piece_name(10), piece_name(9), piece_name(100)]) == [piece_name(9), piece_name(10), piece_name(100)]
    assert parse_piece_name(piece_name(123)) == 123
    for stranger in ("123", "0000000000000000000x", "../00000000000000000", piece_name(1) + "0"):
        assert parse_piece_name(stranger) is None


def test_the_chain_follows_the_pieces_from_byte_zero_up_to_the_offset():
    pieces = [Piece(0, 100), Piece(100, 50), Piece(150, 25)]
    assert piece_chain(UPLOAD, pieces, 175) == [(Piece(0, 100), 100), (Piece(100, 50), 50), (Piece(150, 25), 25)]
    assert piece_chain(UPLOAD, [], 0) == []


def test_pieces_at_or_past_the_offset_are_leftovers_of_an_uncommitted_patch_and_ignored():
    pieces = [Piece(0, 100), Piece(100, 8000), Piece(8100, 40)]  # the PATCH from 100 died before committing
    assert piece_chain(UPLOAD, pieces, 100) == [(Piece(0, 100), 100)]


def test_a_piece_off_the_path_is_ignored_and_only_bytes_below_the_offset_count():
    # A dead PATCH left a piece at 300; a later one rewrote the piece at 100 shorter and went on from 250.
    pieces = [Piece(0, 100), Piece(100, 150), Piece(250, 200), Piece(300, 999)]
    assert piece_chain(UPLOAD, pieces, 400) == [(Piece(0, 100), 100), (Piece(100, 150), 150), (Piece(250, 200), 150)]


def test_a_missing_piece_is_a_gap_that_says_how_far_the_bytes_reach():
    with pytest.raises(PartialGap) as gap:
        piece_chain(UPLOAD, [Piece(0, 100), Piece(150, 50)], 200)
    assert (gap.value.held, gap.value.wanted, gap.value.upload_id) == (100, 200, UPLOAD)
    assert "no piece starts at byte 100; the next one starts at 150" in gap.value.reason
    assert "the offset goes back to 100" in gap.value.reason
    assert isinstance(gap.value, StoreError)

    with pytest.raises(PartialGap) as none:
        piece_chain(UPLOAD, [], 10)
    assert none.value.held == 0 and "no piece starts at byte 0" in none.value.reason

    with pytest.raises(PartialGap) as empty:
        piece_chain(UPLOAD, [Piece(0, 0)], 10)
    assert empty.value.held == 0 and "empty" in empty.value.reason


def test_an_upload_id_that_is_not_the_servers_own_never_reaches_a_name(tmp_path):
    for bad in ("../../etc/passwd", "ABCDEF0123456789ABCDEF0123456789", "0" * 31):
        with pytest.raises(StoreError, match="is not 32 hex characters"):
            LocalPartialStore(tmp_path).path(bad)


# --------------------------------------------------------------------------- on Ceph RGW
@pytest.fixture
def store(rgw, bucket, tmp_path) -> S3PartialStore:
    blobs = S3BlobStore(parse_s3_url(rgw.blobs_url(bucket)), client=rgw.client())
    return S3PartialStore(blobs, tmp_path / "scratch")


def every_version(rgw, bucket: str, prefix: str = "partial/") -> list[str]:
    page = rgw.client().list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted(v["Key"] for v in page.get("Versions", []) + page.get("DeleteMarkers", []))


def write(store: S3PartialStore, upload_id: str, offset: int, data: bytes, *, commit: bool = True) -> int:
    """What one PATCH does: write from `offset`, in two batches, then sync (commit) or not (a PATCH that dies)."""
    w = store.open_writer(upload_id, offset)
    half = len(data) // 2
    w.write([data[:half]], offset)
    w.write([data[half:]], offset + half)
    if commit:
        w.sync()
    w.close()
    return offset + len(data)


def test_what_a_patch_wrote_reads_back_from_the_bucket_on_any_node(store, rgw, bucket, tmp_path):
    upload = store.new_upload()
    data = os.urandom(300_000)
    offset = write(store, upload, 0, data[:100_000])
    offset = write(store, upload, offset, data[100_000:])
    assert [k.rsplit("/", 1)[1] for k in every_version(rgw, bucket)] == [piece_name(0), piece_name(100_000)]

    other_node = S3PartialStore(store.blobs, tmp_path / "other-scratch")
    assert b"".join(other_node.read(upload, 250_000)) == data[:250_000]
    with other_node.assembled(upload, len(data)) as path:
        assert path.read_bytes() == data
    assert not path.exists()  # the assembly is only for ingest

    other_node.finished(upload)
    assert every_version(rgw, bucket) == []  # every version, not hidden under a delete marker


def test_a_long_patch_is_stored_in_pieces_of_bounded_size_and_nothing_before_its_bytes_are_in(store, rgw, bucket):
    upload = store.new_upload()
    data = os.urandom(PIECE_BYTES + 1000)
    w = store.open_writer(upload, 0)
    w.write([data[:PIECE_BYTES // 2]], 0)
    assert every_version(rgw, bucket) == []  # gathered, not yet a piece
    w.write([data[PIECE_BYTES // 2:]], PIECE_BYTES // 2)
    assert len(every_version(rgw, bucket)) == 1  # past PIECE_BYTES: stored at once
    w.sync()
    w.close()
    assert b"".join(store.read(upload, len(data))) == data


def test_leftovers_of_a_patch_that_died_are_ignored_then_cut_away_by_the_next(store, rgw, bucket):
    upload = store.new_upload()
    data = os.urandom(200_000)
    offset = write(store, upload, 0, data[:50_000])
    store.put_piece(upload, offset, b"x" * 70_000)  # a PATCH from 50,000 that PUT a piece, then its node died
    store.put_piece(upload, offset + 70_000, b"y" * 10)
    assert b"".join(store.read(upload, offset)) == data[:50_000]
    assert store.held(upload, offset) == offset

    offset = write(store, upload, offset, data[50_000:120_000])  # the dock resends from the recorded 50,000
    assert store.pieces(upload) == [Piece(0, 50_000), Piece(50_000, 70_000)]
    assert len(every_version(rgw, bucket)) == 2  # the dead PATCH's versions are gone, not just shadowed
    offset = write(store, upload, offset, data[120_000:])
    with store.assembled(upload, len(data)) as path:
        assert path.read_bytes() == data


def test_a_discarded_chunk_leaves_nothing_past_the_offset(store, rgw, bucket):
    upload = store.new_upload()
    w = store.open_writer(upload, 0)
    w.write([os.urandom(PIECE_BYTES)], 0)  # stored as a piece already
    w.cut_back(0)  # its checksum failed
    w.close()
    assert every_version(rgw, bucket) == []
    assert store.held(upload, 0) == 0


def test_lost_pieces_are_a_gap_and_start_up_reports_how_far_the_bytes_reach(store, rgw, bucket):
    upload = store.new_upload()
    offset = write(store, upload, 0, os.urandom(1000))
    offset = write(store, upload, offset, os.urandom(1000))
    rgw.client().delete_object(Bucket=bucket, Key=f"partial/{upload}/{piece_name(1000)}")  # lost from the store
    with pytest.raises(PartialGap) as gap:
        list(store.read(upload, offset))
    assert gap.value.held == 1000
    assert store.held(upload, offset) == 1000


def test_start_up_removes_the_pieces_of_uploads_nobody_wants_and_keeps_the_rest(store, rgw, bucket, tmp_path):
    live, forgotten, done = store.new_upload(), store.new_upload(), store.new_upload()
    for upload in (live, forgotten, done):
        write(store, upload, 0, os.urandom(500))
    (store.scratch / f"{done}.assembling-1").write_bytes(b"half an assembly")
    rgw.client().put_object(Bucket=bucket, Key="partial/not-an-upload/x", Body=b"not ours")

    notes = store.strays(lambda upload_id: upload_id == live)
    assert store.pieces(live) == [Piece(0, 500)]
    assert store.pieces(forgotten) == [] and store.pieces(done) == []
    assert every_version(rgw, bucket, f"partial/{forgotten}/") == []
    assert every_version(rgw, bucket, "partial/not-an-upload/") == ["partial/not-an-upload/x"]  # left alone
    assert list(store.scratch.iterdir()) == [store.copies]  # no half assembly; only the live upload's copies
    assert [p.name for p in store.copies.iterdir()] == [live]
    assert sorted(n for n in notes if "stray piece" in n) == sorted(
        f"removed 1 stray piece(s) of upload {u} from {store.blobs.location}" for u in (forgotten, done))


# --------------------------------------------------------------------------- this node's copies
def count_gets(store: S3PartialStore) -> list[str]:
    """The keys this store's client GETs from now on (botocore's own event hook, no stand-in client)."""
    got: list[str] = []
    store.s3.meta.events.register("before-call.s3.GetObject", lambda params, **kw: got.append(params["url_path"]))
    return got


def test_assembly_takes_the_pieces_this_node_wrote_from_its_own_copies_and_gets_only_the_others(
        store, rgw, bucket, tmp_path):
    upload = store.new_upload()
    data = os.urandom(300_000)
    offset = write(store, upload, 0, data[:100_000])  # this node
    other_node = S3PartialStore(store.blobs, tmp_path / "other-scratch")
    offset = write(other_node, upload, offset, data[100_000:200_000])  # the dock failed over, then came back
    offset = write(store, upload, offset, data[200_000:])
    gets = count_gets(store)
    with store.assembled(upload, len(data)) as path:
        assert path.read_bytes() == data
    assert [g.rsplit("/", 1)[1] for g in gets] == [piece_name(100_000)]  # the other node's piece alone

    store.finished(upload)
    assert not (store.copies / upload).exists()


def test_a_copy_of_a_piece_that_another_node_has_since_rewritten_is_not_used(store, rgw, bucket, tmp_path):
    upload = store.new_upload()
    mine = os.urandom(50_000)
    write(store, upload, 0, mine, commit=True)
    # The offset was never committed (say the node died first): another node took the upload over from 0,
    # and its piece at 0 has the same length but other bytes.
    other_node = S3PartialStore(store.blobs, tmp_path / "other-scratch")
    theirs = os.urandom(50_000)
    write(other_node, upload, 0, theirs)
    with store.assembled(upload, len(theirs)) as path:
        assert path.read_bytes() == theirs  # the bucket decides which bytes count
    assert b"".join(store.read(upload, len(theirs))) == theirs


def test_a_damaged_or_missing_copy_costs_a_read_from_the_bucket_never_the_bytes(store, rgw, bucket):
    upload = store.new_upload()
    data = os.urandom(120_000)
    offset = write(store, upload, 0, data[:60_000])
    write(store, upload, offset, data[60_000:])
    first, second = sorted((store.copies / upload).iterdir())
    first.write_bytes(first.read_bytes()[:-1])  # cut short
    second.unlink()
    gets = count_gets(store)
    with store.assembled(upload, len(data)) as path:
        assert path.read_bytes() == data
    assert len(gets) == 2
