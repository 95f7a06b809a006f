"""Verifying a segment as its bytes arrive (the server, during an upload) agrees with reading the file.

`StreamVerifier` may only ever say "verified" for bytes that `verify_stream`
accepts, with the same result; for anything else it says "not sure" (None),
and the server then reads the file, whose verdict and wording stand.
"""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from openbwv.sealed.errors import SegmentError
from openbwv.sealed.reader import StreamVerifier, verify_stream

from .segment_kit import DEVICE_ID, Registry


def fed(data: bytes, cuts: list[int], keys) -> StreamVerifier:
    state = StreamVerifier(keys)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for lo, hi in zip(bounds, bounds[1:]):
        state.feed(data[lo:hi])
    return state


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_a_valid_segment_fed_in_any_pieces_verifies_as_the_file_does(small_segment, registry, cuts):
    data = small_segment.data
    got = fed(data, cuts, registry).result()
    want = verify_stream(io.BytesIO(data), registry)
    assert got is not None
    assert (got.segment_hash, got.size, got.preamble, got.trailer) == (want.segment_hash, want.size, want.preamble,
                                                                       want.trailer)


@settings(max_examples=400, deadline=None)
@given(at=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7), cuts=st.lists(st.integers(), max_size=4))
def test_a_flipped_bit_is_never_called_verified_when_the_file_reader_refuses_it(small_segment, registry, at, bit, cuts):
    data = bytearray(small_segment.data)
    data[at % len(data)] ^= 1 << bit
    try:
        verify_stream(io.BytesIO(bytes(data)), registry)
        refused = False
    except SegmentError:
        refused = True
    got = fed(bytes(data), cuts, registry).result()
    assert not (refused and got is not None)


@given(keep=st.integers(min_value=0))
def test_a_truncated_or_extended_segment_is_not_verified(small_segment, registry, keep):
    data = small_segment.data
    assert fed(data[: keep % len(data)], [], registry).result() is None
    assert fed(data + b"\x00", [], registry).result() is None


def test_a_segment_signed_by_another_key_or_an_unknown_device_is_not_verified(small_segment):
    from openbwv.sealed.keys import DeviceKey

    assert fed(small_segment.data, [], Registry(DeviceKey.generate(DEVICE_ID))).result() is None
    assert fed(small_segment.data, [], Registry()).result() is None


def test_a_copy_is_a_snapshot_so_a_discarded_chunk_leaves_no_trace(small_segment, registry):
    data = small_segment.data
    half = len(data) // 2
    state = StreamVerifier(registry)
    state.feed(data[:half])
    snapshot = state.copy()
    state.feed(b"\xff" * 100)  # a chunk whose Upload-Checksum failed: thrown away with its state
    snapshot.feed(data[half:])
    assert state.result() is None
    assert snapshot.result() is not None and snapshot.offset == len(data)
