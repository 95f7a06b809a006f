"""Anyone without the device's key who changes a sealed file is caught by public-key verification.

Each test starts from the bytes of one valid segment and changes one thing;
verification must reject the result with a SegmentError that says what it
found, and never fail in any other way.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.sealed.errors import (
    HashMismatch,
    MalformedSegment,
    SegmentError,
    SignatureInvalid,
    UnknownDevice,
)
from openbwv.sealed.keys import DeviceKey
from openbwv.sealed.layout import FLAG_RECOVERED, TRAILER_FRAME_LEN, Trailer
from openbwv.sealed.reader import verify_file, verify_stream

from .segment_kit import DEVICE_ID, Registry, random_records, split_frames


def flip(data: bytes, offset: int, bit: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def test_the_untouched_segment_verifies(small_segment, verify_bytes):
    verify_bytes(small_segment.data)


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_a_flipped_bit_anywhere_is_rejected(small_segment, verify_bytes, data):
    original = small_segment.data
    offset = data.draw(st.integers(0, len(original) - 1), label="offset")
    bit = data.draw(st.integers(0, 7), label="bit")

    with pytest.raises(SegmentError):
        verify_bytes(flip(original, offset, bit))


def test_every_single_bit_flip_is_rejected(small_segment, registry):
    """The exhaustive companion of the test above, on in-memory streams (the same parser, without the file I/O)."""
    original = small_segment.data
    accepted = []
    for offset in range(len(original)):
        for bit in range(8):
            try:
                verify_stream(io.BytesIO(flip(original, offset, bit)), registry)
            except SegmentError:
                continue
            accepted.append((offset, bit))
    assert accepted == []


def test_a_segment_truncated_at_any_length_is_rejected(small_segment, verify_bytes):
    original = small_segment.data
    accepted = []
    for length in range(len(original)):
        try:
            verify_bytes(original[:length])
        except MalformedSegment:
            continue
        accepted.append(length)
    assert accepted == []


def test_truncation_is_reported_as_a_truncation(small_segment, verify_bytes):
    with pytest.raises(MalformedSegment, match="truncated"):
        verify_bytes(small_segment.data[:-TRAILER_FRAME_LEN])


@settings(max_examples=100, deadline=None)
@given(extra=st.binary(min_size=1, max_size=2000))
def test_any_bytes_appended_after_the_trailer_are_rejected(small_segment, verify_bytes, extra):
    with pytest.raises(MalformedSegment, match="after the trailer"):
        verify_bytes(small_segment.data + extra)


def test_two_segments_concatenated_are_rejected(small_segment, verify_bytes):
    with pytest.raises(MalformedSegment):
        verify_bytes(small_segment.data + small_segment.data)


def test_a_segment_signed_by_another_key_under_the_same_device_id_is_rejected(registry, sealer, tmp_path):
    impostor = DeviceKey.generate(DEVICE_ID)
    forged = sealer.seal(tmp_path, random_records(), device=impostor)

    with pytest.raises(SignatureInvalid, match=DEVICE_ID) as caught:
        verify_file(forged.path, registry)
    assert caught.value.path == str(forged.path)


def test_a_segment_from_a_device_that_is_not_enrolled_is_rejected(small_segment, verify_bytes):
    with pytest.raises(UnknownDevice, match=DEVICE_ID):
        verify_bytes(small_segment.data, keys=Registry())


def test_a_registry_that_raises_key_error_counts_as_not_enrolled(small_segment, verify_bytes):
    class DictRegistry(dict):
        def public_key(self, device_id):
            return self[device_id]

    with pytest.raises(UnknownDevice):
        verify_bytes(small_segment.data, keys=DictRegistry())


def test_swapping_two_chunk_frames_is_rejected(small_segment, verify_bytes):
    layout = split_frames(small_segment.data)
    c = layout.chunks
    swapped = layout.preamble_bytes + c[1] + c[0] + b"".join(c[2:]) + layout.trailer_frame

    with pytest.raises(HashMismatch):
        verify_bytes(swapped)


def test_swapping_two_chunk_frames_of_equal_length_is_rejected(sealer, verify_bytes, tmp_path):
    sealed = sealer.seal(tmp_path, random_records((500, 500, 500)))
    layout = split_frames(sealed.data)
    c = layout.chunks
    assert len(c[0]) == len(c[2])
    swapped = layout.preamble_bytes + c[2] + c[1] + c[0] + c[3] + layout.trailer_frame

    with pytest.raises(HashMismatch):
        verify_bytes(swapped)


def test_the_trailer_of_another_segment_is_rejected(sealer, verify_bytes, tmp_path):
    # Same record sizes, so the chunk count and body length agree: only the hash can tell.
    sizes = (200, 120, 300)
    one = split_frames(sealer.seal(tmp_path / "one", random_records(sizes)).data)
    other = split_frames(sealer.seal(tmp_path / "other", random_records(sizes)).data)
    assert (one.trailer.chunk_count, one.trailer.body_len) == (other.trailer.chunk_count, other.trailer.body_len)

    with pytest.raises(HashMismatch):
        verify_bytes(one.preamble_bytes + b"".join(one.chunks) + other.trailer_frame)


def test_the_preamble_of_another_segment_is_rejected(sealer, verify_bytes, tmp_path):
    one = split_frames(sealer.seal(tmp_path / "one", random_records()).data)
    other = split_frames(sealer.seal(tmp_path / "other", random_records(), sequence=2, prev_hash=b"\x01" * 32).data)

    # Chunks and trailer agree with each other; the preamble is part of what was signed.
    with pytest.raises(SignatureInvalid):
        verify_bytes(other.preamble_bytes + b"".join(one.chunks) + one.trailer_frame)


def test_marking_a_sealed_segment_as_recovered_breaks_its_signature(small_segment, verify_bytes):
    layout = split_frames(small_segment.data)
    t = layout.trailer
    relabelled = Trailer(**{**t.__dict__, "flags": t.flags | FLAG_RECOVERED})

    with pytest.raises(SignatureInvalid):
        verify_bytes(layout.preamble_bytes + b"".join(layout.chunks) + relabelled.encode_frame())


def test_a_rejection_names_the_file_and_the_byte_offset(small_segment, scratch, registry):
    layout = split_frames(small_segment.data)
    second_chunk = layout.chunk_offsets()[1]
    path = scratch(flip(small_segment.data, second_chunk + 20, 0))

    with pytest.raises(HashMismatch) as caught:
        verify_file(path, registry)

    assert caught.value.path == str(path)
    assert caught.value.offset == second_chunk
    assert str(path) in str(caught.value) and f"byte {second_chunk}" in str(caught.value)
    assert "chunk 1" in str(caught.value)


def test_without_a_registry_the_layout_and_hash_are_still_checked(small_segment, verify_bytes):
    verify_bytes(small_segment.data, keys=None)
    with pytest.raises(HashMismatch):
        verify_bytes(flip(small_segment.data, len(small_segment.data) - TRAILER_FRAME_LEN - 1, 3), keys=None)
