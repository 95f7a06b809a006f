"""A power cut loses at most the chunk being written; everything before it is sealed on the next start.

The open file is at every moment a valid prefix of the sealed one, so
recovery keeps each complete chunk (its CRC tells a torn write from a good
one, without any key to decrypt), drops the torn tail, and seals the rest with
the RECOVERED flag, which anyone verifying can see.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openbwv.sealed.chain import ChainLink, check_chains
from openbwv.sealed.errors import MalformedSegment, SegmentError
from openbwv.sealed.keys import DeviceKey
from openbwv.sealed.layout import (
    CHUNK_HEAD_LEN,
    RECORD_EVENTS,
    RECORD_INFO,
    RECORD_LOCATION,
    RECORD_MEDIA,
    TRAILER_FRAME_LEN,
)
from openbwv.sealed.reader import decrypt_records, verify_file
from openbwv.sealed.storage import DeviceStorage
from openbwv.sealed.writer import OPEN_SUFFIX, recover_open_segment, segment_file_name

from .segment_kit import CHUNK_LIMIT, DEVICE_ID, split_frames

RECORD_SIZES = (300, 500, 200, 700)
KINDS = (RECORD_MEDIA, RECORD_LOCATION, RECORD_EVENTS, RECORD_INFO)


class OpenSegment:
    """A segment the camera was writing when the power went: its file, and what each chunk held."""

    def __init__(self, sealer, directory: Path, sizes=RECORD_SIZES):
        w = sealer.writer(directory)
        self.records = []
        self.chunk_ends = []  # file offset just after each complete chunk frame
        for i, n in enumerate(sizes):
            record = (KINDS[i % len(KINDS)], os.urandom(n))
            w.append(*record)
            self.records.append(record)
            self.chunk_ends.append(w.bytes_written)
        self.preamble_len = len(w.preamble_bytes)
        w.close_unsealed()
        self.path = w.open_path
        self.data = self.path.read_bytes()

    def records_complete_at(self, size: int) -> list[tuple[int, bytes]]:
        return [r for r, end in zip(self.records, self.chunk_ends) if end <= size]


@pytest.fixture
def open_segment(sealer, tmp_path) -> OpenSegment:
    return OpenSegment(sealer, tmp_path)


@pytest.fixture(scope="session")
def open_bytes(sealer, tmp_path_factory) -> OpenSegment:
    """One interrupted segment, to copy into a fresh directory per example."""
    return OpenSegment(sealer, tmp_path_factory.mktemp("interrupted"))


def recovered_records(path: Path, registry, server_keys) -> list[tuple[int, bytes]]:
    verified = verify_file(path, registry)
    assert verified.trailer.recovered
    return list(decrypt_records(path, registry, server_keys))


def cut_last_chunk_in_half(seg: OpenSegment) -> bytes:
    return seg.data[: (seg.chunk_ends[-2] + seg.chunk_ends[-1]) // 2]


def flip_inside_last_chunk(seg: OpenSegment) -> bytes:
    data = bytearray(seg.data)
    data[seg.chunk_ends[-1] - 5] ^= 0x40
    return bytes(data)


DAMAGE = {
    "nothing after the last chunk": (lambda seg: seg.data, 4),
    "garbage after the last chunk": (lambda seg: seg.data + b"\xa5" + os.urandom(500), 4),
    "a zero-filled tail": (lambda seg: seg.data + bytes(4096), 4),
    "the last chunk cut in half": (cut_last_chunk_in_half, 3),
    "the last chunk cut in half, then zero-filled": (lambda seg: cut_last_chunk_in_half(seg) + bytes(2048), 3),
    "the last chunk's header cut short": (lambda seg: seg.data[: seg.chunk_ends[-2] + CHUNK_HEAD_LEN - 2], 3),
    "a damaged last chunk": (flip_inside_last_chunk, 3),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_recovery_keeps_every_complete_chunk_and_drops_the_torn_one(
    open_segment, device_key, registry, server_keys, damage
):
    make, kept = DAMAGE[damage]
    open_segment.path.write_bytes(make(open_segment))

    info = recover_open_segment(open_segment.path, device_key, end_utc_us=1_700_000_100_000_000)

    assert info.path.name == segment_file_name(DEVICE_ID, 1)
    assert not open_segment.path.exists()
    assert info.trailer.recovered and info.trailer.chunk_count == kept
    assert recovered_records(info.path, registry, server_keys) == open_segment.records[:kept]
    assert verify_file(info.path, registry).segment_hash == info.segment_hash


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.data())
def test_a_power_cut_at_any_byte_after_the_preamble_keeps_every_chunk_completed_before_it(
    open_bytes, device_key, registry, server_keys, tmp_path_factory, cut
):
    size = cut.draw(st.integers(open_bytes.preamble_len, len(open_bytes.data)), label="size")
    path = tmp_path_factory.mktemp("cut") / open_bytes.path.name
    path.write_bytes(open_bytes.data[:size])

    info = recover_open_segment(path, device_key)

    assert recovered_records(info.path, registry, server_keys) == open_bytes.records_complete_at(size)


def test_an_interrupted_segment_is_not_valid_until_it_is_recovered(open_segment, registry):
    with pytest.raises(MalformedSegment, match="never sealed"):
        verify_file(open_segment.path, registry)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 200, -1], ids=lambda s: f"{s} bytes" if s >= 0 else "all but one byte")
def test_a_segment_torn_inside_its_preamble_is_removed_and_nothing_is_sealed(open_segment, device_key, size):
    size = size if size >= 0 else open_segment.preamble_len - 1
    open_segment.path.write_bytes(open_segment.data[:size])

    assert recover_open_segment(open_segment.path, device_key) is None
    assert list(open_segment.path.parent.iterdir()) == []


def test_a_segment_with_only_its_preamble_is_sealed_as_an_empty_recovered_segment(
    open_segment, device_key, registry, server_keys
):
    open_segment.path.write_bytes(open_segment.data[: open_segment.preamble_len])

    info = recover_open_segment(open_segment.path, device_key)

    assert info.trailer.chunk_count == 0
    assert recovered_records(info.path, registry, server_keys) == []


@pytest.mark.parametrize("trailer_written", [0, 1, TRAILER_FRAME_LEN // 2, TRAILER_FRAME_LEN - 1])
def test_a_power_cut_while_sealing_loses_nothing(sealer, device_key, registry, server_keys, tmp_path, trailer_written):
    """The end chunk made it to storage; the trailer partly, fully or not at all; the rename did not happen."""
    sealed = sealer.seal(tmp_path / "sealed")
    cut = len(sealed.data) - TRAILER_FRAME_LEN + trailer_written
    open_path = tmp_path / segment_file_name(DEVICE_ID, 1, OPEN_SUFFIX)
    open_path.write_bytes(sealed.data[:cut])

    info = recover_open_segment(open_path, device_key)

    assert info.trailer.chunk_count == len(sealed.records) + 1  # the end chunk is kept
    assert recovered_records(info.path, registry, server_keys) == sealed.records


def test_a_seal_whose_trailer_was_synced_but_not_renamed_keeps_its_own_trailer(
    sealer, device_key, registry, tmp_path
):
    """Power lost after the trailer's fsync, before the rename: the seal was complete, so it is not relabelled."""
    sealed = sealer.seal(tmp_path / "sealed")
    open_path = tmp_path / segment_file_name(DEVICE_ID, 1, OPEN_SUFFIX)
    open_path.write_bytes(sealed.data)

    info = recover_open_segment(open_path, device_key)

    assert info.path.read_bytes() == sealed.data
    assert info.segment_hash == sealed.info.segment_hash
    assert not verify_file(info.path, registry).trailer.recovered


def test_a_trailer_signed_by_someone_else_is_not_kept_on_recovery(sealer, device_key, registry, tmp_path):
    """A whole trailer is trusted only if the device's own key signed it; otherwise the segment is re-sealed."""
    sealed = sealer.seal(tmp_path / "sealed")
    forged = bytearray(sealed.data)
    forged[-1] ^= 0xFF  # the signature's last byte
    open_path = tmp_path / segment_file_name(DEVICE_ID, 1, OPEN_SUFFIX)
    open_path.write_bytes(bytes(forged))

    info = recover_open_segment(open_path, device_key)

    assert verify_file(info.path, registry).trailer.recovered


def test_an_open_file_with_a_damaged_preamble_is_set_aside_not_deleted(device_key, tmp_path):
    """Damage a power cut cannot cause is kept for analysis, and recording can go on."""
    open_path = tmp_path / segment_file_name(DEVICE_ID, 1, OPEN_SUFFIX)
    junk = b"\x89BWV-not-a-preamble" * 1000
    open_path.write_bytes(junk)

    with pytest.raises(SegmentError, match="kept as .*damaged"):
        recover_open_segment(open_path, device_key)

    assert not open_path.exists()
    assert (tmp_path / (open_path.name + ".damaged")).read_bytes() == junk


def test_a_power_cut_inside_the_final_rename_leaves_the_sealed_file_untouched(sealer, device_key, registry, tmp_path):
    """`durable_rename` links the new name, then unlinks the old: a cut between leaves both names on one file."""
    sealed = sealer.seal(tmp_path)
    before = sealed.data
    open_path = tmp_path / segment_file_name(DEVICE_ID, 1, OPEN_SUFFIX)
    os.link(sealed.path, open_path)

    info = recover_open_segment(open_path, device_key)

    assert not open_path.exists()
    assert sealed.path.read_bytes() == before
    assert info.segment_hash == sealed.info.segment_hash
    assert not verify_file(sealed.path, registry).trailer.recovered


def test_recovery_refuses_another_devices_segment_and_sets_it_aside(open_segment):
    stranger = DeviceKey.generate("cam-9999")
    before = open_segment.data

    with pytest.raises(SegmentError, match="belongs to device 'cam-0042'"):
        recover_open_segment(open_segment.path, stranger)
    assert not open_segment.path.exists()
    assert open_segment.path.with_name(open_segment.path.name + ".damaged").read_bytes() == before


# -- recovered, or truncated afterwards ------------------------------------------


def test_a_recovered_segment_verifies_and_says_it_was_recovered(open_segment, device_key, registry):
    info = recover_open_segment(open_segment.path, device_key)

    verified = verify_file(info.path, registry)

    assert verified.trailer.recovered
    assert verified.trailer.end_mono_ns == 0  # the monotonic clock did not survive the restart


@pytest.mark.parametrize("dropped", ["the trailer", "the end chunk and the trailer", "half the trailer"])
def test_a_normally_sealed_segment_truncated_later_is_rejected(small_segment, verify_bytes, dropped):
    layout = split_frames(small_segment.data)
    keep = {
        "the trailer": len(small_segment.data) - TRAILER_FRAME_LEN,
        "the end chunk and the trailer": len(small_segment.data) - TRAILER_FRAME_LEN - len(layout.chunks[-1]),
        "half the trailer": len(small_segment.data) - TRAILER_FRAME_LEN // 2,
    }[dropped]

    with pytest.raises(MalformedSegment):
        verify_bytes(small_segment.data[:keep])


# -- the device's storage after a power cut ----------------------------------------


def storage_for(directory: Path, device_key, server_keys) -> DeviceStorage:
    """What the camera builds at every start."""
    return DeviceStorage(directory, device_key, server_keys.public, chunk_limit=CHUNK_LIMIT)


def record_into(storage: DeviceStorage, n: int, *, seal: bool = True):
    seg = storage.open_segment(clip_id=uuid.UUID(int=n), segment_index=n, start_utc_us=1_700_000_000_000_000 + n)
    seg.append(RECORD_MEDIA, os.urandom(400))
    seg.append(RECORD_MEDIA, os.urandom(400))
    if seal:
        return seg.seal(end_utc_us=1_700_000_000_000_000 + n + 1)
    seg.flush()
    seg.writer.close_unsealed()
    return None


def links_in(directory: Path, registry) -> list[ChainLink]:
    out = []
    for path in sorted(directory.glob("*.bwv")):
        v = verify_file(path, registry)
        out.append(ChainLink(v.device_id, v.sequence, v.preamble.prev_hash, v.segment_hash, str(path)))
    return out


def test_after_a_power_cut_the_chain_continues_from_the_recovered_segment(device_key, server_keys, registry, tmp_path):
    storage = storage_for(tmp_path, device_key, server_keys)
    record_into(storage, 1)
    record_into(storage, 2, seal=False)  # the power goes

    restarted = storage_for(tmp_path, device_key, server_keys)
    with pytest.raises(SegmentError, match="recover"):
        record_into(restarted, 3)
    (recovered,) = restarted.recover()
    third = record_into(restarted, 3)

    assert recovered.sequence == 2 and recovered.trailer.recovered
    assert restarted.head.sequence == 3
    assert third.preamble.prev_hash == recovered.segment_hash
    assert check_chains(links_in(tmp_path, registry)) == []


def test_a_segment_torn_inside_its_preamble_gives_its_sequence_number_to_the_next(
    device_key, server_keys, registry, tmp_path
):
    storage = storage_for(tmp_path, device_key, server_keys)
    first = record_into(storage, 1)
    record_into(storage, 2, seal=False)
    (torn,) = storage.open_paths()
    torn.write_bytes(torn.read_bytes()[:100])

    restarted = storage_for(tmp_path, device_key, server_keys)
    assert restarted.recover() == []
    second = record_into(restarted, 2)

    assert second.sequence == 2 and second.preamble.prev_hash == first.segment_hash
    assert check_chains(links_in(tmp_path, registry)) == []


def test_a_power_cut_before_the_chain_head_was_saved_is_reconciled_from_the_files(
    device_key, server_keys, registry, tmp_path
):
    storage = storage_for(tmp_path, device_key, server_keys)
    record_into(storage, 1)
    saved_head = storage.state_path.read_bytes()
    second = record_into(storage, 2)
    storage.state_path.write_bytes(saved_head)  # chain.json as it was before segment 2 was sealed

    restarted = storage_for(tmp_path, device_key, server_keys)
    third = record_into(restarted, 3)

    assert third.preamble.prev_hash == second.segment_hash
    assert check_chains(links_in(tmp_path, registry)) == []


def test_a_power_cut_inside_the_final_rename_does_not_fork_the_chain(device_key, server_keys, registry, tmp_path):
    storage = storage_for(tmp_path, device_key, server_keys)
    first = record_into(storage, 1)
    os.link(first.path, first.path.with_suffix(OPEN_SUFFIX))  # the old name survived the cut
    storage.state_path.unlink()  # and chain.json was never written

    restarted = storage_for(tmp_path, device_key, server_keys)
    restarted.recover()
    second = record_into(restarted, 2)

    assert restarted.open_paths() == []
    assert second.preamble.prev_hash == first.segment_hash
    assert check_chains(links_in(tmp_path, registry)) == []
