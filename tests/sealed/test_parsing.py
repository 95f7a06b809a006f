"""The parser meets hostile bytes: it rejects them with a SegmentError, within its bounds, and never crashes.

A segment arrives from a camera that may have been tampered with, so every
length it states is checked before anything is allocated or read, and no
input, however made, gets out of the parser as anything but a SegmentError.
"""

from __future__ import annotations

import io
import struct
import uuid

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from openbwv.sealed.errors import KeyFileError, MalformedSegment, SegmentError, UnsupportedVersion
from openbwv.sealed.keys import DeviceKey
from openbwv.sealed.layout import (
    CHUNK_HEAD_LEN,
    FIXED_HEAD_LEN,
    MAGIC,
    MAX_CHUNK_PLAINTEXT,
    MAX_PREAMBLE,
    MIN_CHUNK_LIMIT,
    SUITE_MLKEM768_X25519,
    SUITE_X25519,
    TAG_LEN,
    TRAILER_FRAME_LEN,
    VERSION,
    Preamble,
    chunk_header,
    parse_chunk_header,
    parse_preamble,
    parse_trailer_frame,
)
from openbwv.sealed.reader import verify_stream

from .segment_kit import CHUNK_LIMIT, split_frames

ROBUST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class ReadLog(io.BytesIO):
    """A stream that remembers every read asked of it: (position, size)."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, n: int | None = -1) -> bytes:
        self.reads.append((self.tell(), 2**63 if n is None or n < 0 else n))
        return super().read(n)

    def largest_read_from(self, position: int) -> int:
        return max((n for at, n in self.reads if at >= position), default=0)


def fixed_head(total: int, version: int = VERSION) -> bytes:
    return struct.pack(">8sHHI", MAGIC, version, 0, total)


# -- any input, only SegmentError ---------------------------------------------


@ROBUST
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_rejected_only_with_segment_errors(registry, data):
    with pytest.raises(SegmentError):
        verify_stream(io.BytesIO(data), registry)


@ROBUST
@given(body=st.binary(min_size=0, max_size=MAX_PREAMBLE + 64), claimed=st.integers(0, 2**32 - 1))
def test_random_bytes_behind_a_valid_magic_are_rejected_only_with_segment_errors(registry, body, claimed):
    with pytest.raises(SegmentError):
        verify_stream(io.BytesIO(fixed_head(claimed) + body), registry)


frame = st.one_of(
    st.builds(lambda n, crc, body: chunk_header(n, crc) + body, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=1200)),
    st.builds(lambda body: b"T" + body, st.binary(max_size=TRAILER_FRAME_LEN + 8)),
    st.binary(max_size=64),
)


@ROBUST
@given(frames=st.lists(frame, max_size=5))
def test_random_frames_after_a_valid_preamble_are_rejected_only_with_segment_errors(small_segment, registry, frames):
    preamble = split_frames(small_segment.data).preamble_bytes

    with pytest.raises(SegmentError):
        verify_stream(io.BytesIO(preamble + b"".join(frames)), registry)


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=64)),
)


def mutate(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for op, at, arg in ops:
        at %= len(out) + 1
        if op == "set" and at < len(out):
            out[at] = arg
        elif op == "delete":
            del out[at : at + arg]
        elif op == "insert":
            out[at:at] = arg
    return bytes(out)


@ROBUST
@given(ops=st.lists(mutation, min_size=1, max_size=8))
def test_random_mutations_of_a_valid_file_are_rejected_only_with_segment_errors(small_segment, registry, ops):
    original = small_segment.data
    mutated = mutate(original, ops)
    assume(mutated != original)

    with pytest.raises(SegmentError):
        verify_stream(io.BytesIO(mutated), registry)


@ROBUST
@given(data=st.binary(max_size=2048))
def test_parse_preamble_rejects_random_bytes_as_malformed(data):
    with pytest.raises(MalformedSegment):
        parse_preamble(data)


@ROBUST
@given(body=st.binary(min_size=80, max_size=2048))
def test_random_fields_under_a_consistent_header_raise_nothing_but_malformed_segment(body):
    data = fixed_head(FIXED_HEAD_LEN + len(body)) + body
    try:
        parse_preamble(data)
    except MalformedSegment:
        pass  # anything else propagates and fails the test; a parse that succeeds is fine too


@ROBUST
@given(frame=st.binary(min_size=TRAILER_FRAME_LEN, max_size=TRAILER_FRAME_LEN))
def test_parse_trailer_frame_accepts_or_rejects_as_malformed(frame):
    try:
        parse_trailer_frame(frame, 0)
    except MalformedSegment:
        pass


@ROBUST
@given(head=st.binary(min_size=CHUNK_HEAD_LEN, max_size=CHUNK_HEAD_LEN), limit=st.integers(MIN_CHUNK_LIMIT, MAX_CHUNK_PLAINTEXT))
def test_a_chunk_header_either_states_a_length_within_bounds_or_is_rejected(head, limit):
    try:
        length, _ = parse_chunk_header(head, 0, limit)
    except MalformedSegment:
        return
    assert 1 + TAG_LEN <= length <= limit + 1 + TAG_LEN


# -- bounds --------------------------------------------------------------------


@pytest.mark.parametrize("claimed", [CHUNK_LIMIT + 1 + TAG_LEN + 1, MAX_CHUNK_PLAINTEXT + 1 + TAG_LEN, 2**32 - 1])
def test_a_chunk_longer_than_the_segment_allows_is_rejected_before_it_is_read(small_segment, registry, claimed):
    preamble = split_frames(small_segment.data).preamble_bytes
    stream = ReadLog(preamble + chunk_header(claimed, 0) + bytes(CHUNK_LIMIT * 4))

    with pytest.raises(MalformedSegment, match=f"chunk ciphertext length {claimed} outside") as caught:
        verify_stream(stream, registry)

    assert caught.value.offset == len(preamble) + 1  # where the length field is
    assert stream.largest_read_from(len(preamble)) <= CHUNK_HEAD_LEN


def test_the_largest_chunk_the_segment_allows_is_accepted_and_one_byte_more_is_not():
    largest = CHUNK_LIMIT + 1 + TAG_LEN  # a full chunk, its record-type byte and the GCM tag

    assert parse_chunk_header(chunk_header(largest, 0), 0, CHUNK_LIMIT) == (largest, 0)
    with pytest.raises(MalformedSegment, match=str(largest + 1)):
        parse_chunk_header(chunk_header(largest + 1, 0), 0, CHUNK_LIMIT)


@pytest.mark.parametrize("claimed", [0, 1, TAG_LEN])
def test_a_chunk_too_short_to_hold_a_record_type_and_a_tag_is_rejected(claimed):
    with pytest.raises(MalformedSegment, match=f"length {claimed} outside"):
        parse_chunk_header(chunk_header(claimed, 0), 0, CHUNK_LIMIT)


@pytest.mark.parametrize("claimed", [MAX_PREAMBLE + 1, 2**32 - 1, 20])
def test_a_preamble_length_out_of_bounds_is_rejected_before_it_is_read(registry, claimed):
    stream = ReadLog(fixed_head(claimed) + bytes(MAX_PREAMBLE * 2))

    with pytest.raises(MalformedSegment, match=f"preamble length {claimed} outside") as caught:
        verify_stream(stream, registry)

    assert caught.value.offset == 12
    assert stream.largest_read_from(0) <= FIXED_HEAD_LEN


def test_a_foreign_file_is_rejected_by_its_magic(registry):
    with pytest.raises(MalformedSegment, match="not a sealed segment"):
        verify_stream(io.BytesIO(b"\x00\x00\x00\x18ftypmp42" + bytes(100)), registry)


def test_a_future_format_version_is_rejected_as_unsupported(registry):
    with pytest.raises(UnsupportedVersion, match="version 2"):
        verify_stream(io.BytesIO(fixed_head(200, version=2) + bytes(200)), registry)


# -- the preamble's fields -----------------------------------------------------


def a_preamble(**changes) -> Preamble:
    fields = dict(
        device_id="cam-0042",
        clip_id=uuid.UUID(int=7),
        segment_index=3,
        sequence=9,
        prev_hash=b"\x11" * 32,
        start_utc_us=1_700_000_000_000_000,
        start_mono_ns=12,
        clock_sync_utc_us=0,
        clock_offset_us=-250,
        chunk_limit=CHUNK_LIMIT,
        suite=SUITE_MLKEM768_X25519,
        server_key_id=b"\x22" * 16,
        nonce_prefix=b"\x33" * 7,
        wrapped_key=b"\x44" * 1120,
    )
    fields.update(changes)
    return Preamble(**fields)


device_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@settings(max_examples=100, deadline=None)
@given(
    device_id=device_ids,
    segment_index=st.integers(0, 2**32 - 1),
    sequence=st.integers(2, 2**63 - 1),
    start=st.integers(-(2**63), 2**63 - 1),
    chunk_limit=st.integers(MIN_CHUNK_LIMIT, MAX_CHUNK_PLAINTEXT),
    suite=st.sampled_from([SUITE_MLKEM768_X25519, SUITE_X25519]),
    wrapped=st.binary(min_size=1, max_size=4096),
)
def test_any_valid_preamble_survives_encoding_and_parsing(device_id, segment_index, sequence, start, chunk_limit, suite, wrapped):
    p = a_preamble(
        device_id=device_id,
        segment_index=segment_index,
        sequence=sequence,
        start_utc_us=start,
        chunk_limit=chunk_limit,
        suite=suite,
        wrapped_key=wrapped,
    )
    assert parse_preamble(p.encode()) == p


def test_a_device_id_with_a_trailing_newline_is_rejected():
    """`$` in a regular expression also matches before a final newline; the format must not."""
    encoded = a_preamble(device_id="cam-00420").encode()
    at = encoded.index(b"cam-00420") + len("cam-0042")
    with_newline = encoded[:at] + b"\n" + encoded[at + 1 :]

    with pytest.raises(MalformedSegment, match="device id"):
        parse_preamble(with_newline)
    with pytest.raises(MalformedSegment, match="device id"):
        a_preamble(device_id="cam-0042\n").encode()
    with pytest.raises(KeyFileError, match="device id"):
        DeviceKey.generate("cam-0042\n")


@pytest.mark.parametrize("device_id", ["", "-cam", "cam 1", "cam/1", "cam\u00e91", "c" * 65])
def test_a_device_id_outside_the_allowed_characters_and_length_is_rejected(device_id):
    with pytest.raises(MalformedSegment, match="device id"):
        a_preamble(device_id=device_id).encode()


def test_a_device_id_of_64_characters_is_the_longest_allowed():
    p = a_preamble(device_id="c" * 64)
    assert parse_preamble(p.encode()) == p


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(sequence=0), "sequence number 0"),
        (dict(sequence=1), "all-zero previous hash"),
        (dict(chunk_limit=MIN_CHUNK_LIMIT - 1), "chunk limit"),
        (dict(chunk_limit=MAX_CHUNK_PLAINTEXT + 1), "chunk limit"),
        (dict(suite=9), "unknown cipher suite 9"),
        (dict(wrapped_key=b""), "wrapped key of 0 bytes"),
        (dict(wrapped_key=bytes(4097)), "wrapped key of 4097 bytes"),
    ],
)
def test_a_preamble_field_out_of_bounds_is_rejected_with_a_message_naming_it(change, message):
    with pytest.raises(MalformedSegment, match=message):
        a_preamble(**change).encode()


def test_a_preamble_is_rejected_when_its_wrapped_key_does_not_fill_it():
    encoded = bytearray(a_preamble().encode())
    struct.pack_into(">H", encoded, len(encoded) - 1120 - 2, 1000)

    with pytest.raises(MalformedSegment, match="wrapped key length 1000 does not fill the preamble"):
        parse_preamble(bytes(encoded))
