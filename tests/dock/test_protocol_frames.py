"""The dock link's frames: layout, round trip, and every way a frame can be bad (docs/dock-protocol.md)."""

from __future__ import annotations

import struct
from pathlib import Path
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openbwv.dock.errors import (
    BadChecksum,
    BadMagic,
    BadMessage,
    BadPayload,
    FrameError,
    OversizeFrame,
    ReplayedFrame,
    TrailingData,
    TruncatedFrame,
    UnknownType,
    UnsupportedVersion,
)
from openbwv.dock.protocol import (
    HEADER_LEN,
    MAGIC,
    MAX_FRAME,
    MAX_PAYLOAD,
    PAGE_MAX,
    Frame,
    FrameDecoder,
    MessageType,
    SegmentEntry,
    SequenceGuard,
    check_message,
    decode_frame,
    encode_frame,
    encode_message,
    page,
    parse_message,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
types = st.sampled_from(list(MessageType))
seqs = st.integers(0, 2**32 - 1)


def frame_bytes(mtype=MessageType.BYE, seq=1, payload=None) -> bytes:
    return encode_frame(mtype, seq, {"reason": "clear"} if payload is None else payload)


def only_frames(items) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


# --------------------------------------------------------------------------- layout and round trip
def test_frame_layout_is_magic_version_type_seq_length_payload_crc_big_endian():
    data = encode_frame(MessageType.LIST, 7, {"after": ""})
    payload = b'{"after":""}'
    assert data[:2] == b"BW"
    assert data[2] == 1  # version
    assert data[3] == 0x20  # LIST
    assert struct.unpack(">I", data[4:8]) == (7,)
    assert struct.unpack(">I", data[8:12]) == (len(payload),)
    assert data[12:-4] == payload
    assert struct.unpack(">I", data[-4:]) == (zlib.crc32(data[:-4]),)
    assert len(data) == HEADER_LEN + len(payload) + 4


def test_the_example_frame_in_the_protocol_document_is_exact():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "dock-protocol.md").read_text(encoding="utf-8")
    data = encode_frame(MessageType.LIST, 3, {"after": ""})
    assert data.hex(" ") in doc


@given(types, seqs, payloads)
def test_any_frame_round_trips(mtype, seq, payload):
    data = encode_frame(mtype, seq, payload)
    assert decode_frame(data) == Frame(mtype, seq, payload)
    assert FrameDecoder().feed(data) == [Frame(mtype, seq, payload)]


@settings(max_examples=50)
@given(st.lists(st.tuples(types, seqs, payloads), min_size=1, max_size=5), st.data())
def test_frames_come_out_whole_however_the_port_splits_the_bytes(frames, data):
    stream = b"".join(encode_frame(*f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder, out, prev = FrameDecoder(), [], 0
    for cut in cuts + [len(stream)]:
        out += decoder.feed(stream[prev:cut])
        prev = cut
    assert out == [Frame(*f) for f in frames]
    assert decoder.pending == 0


# --------------------------------------------------------------------------- hostile and damaged input
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.data())
def test_random_bytes_only_ever_give_frames_or_the_modules_own_errors(junk, data):
    decoder = FrameDecoder()
    cut = data.draw(st.integers(0, len(junk)))
    items = decoder.feed(junk[:cut]) + decoder.feed(junk[cut:]) + decoder.expire()
    assert all(isinstance(i, (Frame, FrameError)) for i in items)
    assert decoder.pending <= 1
    try:
        decode_frame(junk)
    except FrameError:
        pass  # anything else escaping would fail the test


@settings(max_examples=20, deadline=None)
@given(types, seqs, payloads)
def test_every_single_bit_flip_in_a_frame_is_detected(mtype, seq, payload):
    good = encode_frame(mtype, seq, payload)
    original = Frame(mtype, seq, payload)
    for bit in range(len(good) * 8):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError):
            decode_frame(bytes(bad))
        decoder = FrameDecoder()
        items = decoder.feed(bytes(bad)) + decoder.expire()
        assert not only_frames(items), f"bit {bit} flipped and a frame was still accepted"
        assert any(isinstance(i, FrameError) for i in items), f"bit {bit} flipped and nothing was reported"
        assert original not in items


def test_a_damaged_frame_does_not_take_the_next_good_one_with_it():
    good = frame_bytes(seq=2)
    for bit in range(len(good) * 8):
        bad = bytearray(frame_bytes(seq=1))
        bad[bit // 8] ^= 1 << (bit % 8)
        decoder = FrameDecoder()
        items = decoder.feed(bytes(bad) + good)
        if not only_frames(items):  # a length grown by the flip is still waiting for bytes
            items += decoder.expire()
        assert only_frames(items) == [decode_frame(good)], f"bit {bit}"


def test_garbage_before_a_frame_is_skipped_and_reported_with_its_length():
    items = FrameDecoder().feed(b"\x00noise\xffB" + frame_bytes())
    assert isinstance(items[0], BadMagic) and items[0].skipped == 8 and items[0].offset == 0
    assert only_frames(items) == [decode_frame(frame_bytes())]


def test_an_unsupported_version_is_named():
    bad = bytearray(frame_bytes())
    bad[2] = 2
    (err,) = FrameDecoder().feed(bytes(bad))[:1]
    assert isinstance(err, UnsupportedVersion) and "version 2" in str(err)
    with pytest.raises(UnsupportedVersion):
        decode_frame(bytes(bad))


def test_an_unknown_message_type_is_named():
    bad = bytearray(frame_bytes())
    bad[3] = 0x7A
    with pytest.raises(UnknownType, match="0x7a"):
        decode_frame(bytes(bad))


def test_a_forged_length_is_refused_before_anything_is_allocated():
    header = struct.pack(">2sBBII", MAGIC, 1, MessageType.FREE, 1, 0xFFFF_FFF0)
    decoder = FrameDecoder()
    items = decoder.feed(header)
    assert isinstance(items[0], OversizeFrame) and "4294967280" in str(items[0])
    assert decoder.pending < HEADER_LEN  # nothing waits for four gigabytes
    with pytest.raises(OversizeFrame):
        decode_frame(header + b"\x00" * 4)


def test_the_payload_bound_is_64_kib_on_both_sides():
    fits = {"reason": "x" * (MAX_PAYLOAD - len('{"reason":""}'))}
    assert len(encode_frame(MessageType.BYE, 1, fits)) == MAX_FRAME
    with pytest.raises(OversizeFrame):
        encode_frame(MessageType.BYE, 1, {"reason": "x" * MAX_PAYLOAD})


def test_a_bad_crc_is_reported_and_the_frame_dropped():
    bad = bytearray(frame_bytes())
    bad[-1] ^= 0xFF
    items = FrameDecoder().feed(bytes(bad))
    assert isinstance(items[0], BadChecksum) and "damaged" in str(items[0])
    assert not only_frames(items)


@pytest.mark.parametrize("raw, why", [
    (b"[1,2]", "JSON array, expected an object"),
    (b'"text"', "JSON string"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{", "not valid JSON"),
    (b'{"a":1,"a":2}', "duplicate key"),
    (b'{"a":NaN}', "NaN is not allowed"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
])
def test_a_payload_that_is_not_one_json_object_is_refused(raw, why):
    body = struct.pack(">2sBBII", MAGIC, 1, MessageType.BYE, 1, len(raw)) + raw
    data = body + struct.pack(">I", zlib.crc32(body))
    with pytest.raises(BadPayload, match=why):
        decode_frame(data)
    (err,) = FrameDecoder().feed(data)
    assert isinstance(err, BadPayload) and err.skipped == len(data)


def test_one_shot_decoding_refuses_short_and_long_input():
    with pytest.raises(TruncatedFrame):
        decode_frame(frame_bytes()[:-1])
    with pytest.raises(TrailingData):
        decode_frame(frame_bytes() + b"\x00")


def test_a_frame_that_stops_arriving_is_given_up_and_what_follows_is_read():
    decoder = FrameDecoder()
    assert decoder.feed(frame_bytes()[:20]) == []
    items = decoder.expire()
    assert isinstance(items[0], TruncatedFrame)
    assert only_frames(decoder.feed(frame_bytes(seq=2))) == [decode_frame(frame_bytes(seq=2))]


def test_a_line_of_pure_noise_is_reported_in_bounded_lumps_not_byte_by_byte():
    decoder = FrameDecoder()
    items = [i for _ in range(10_000) for i in decoder.feed(b"\x00")]
    assert 1 <= len(items) <= 3 and all(isinstance(i, BadMagic) for i in items)
    assert decoder.pending == 0


# --------------------------------------------------------------------------- messages
def test_messages_are_checked_field_by_field():
    with pytest.raises(BadMessage, match="FREE: field 'receipt' is missing"):
        check_message(MessageType.FREE, {"name": "x.bwv"})
    with pytest.raises(BadMessage, match="field 'offset_us': expected an integer, found boolean"):
        check_message(MessageType.CLOCK_SET, {"offset_us": True, "sync_utc_us": 1, "rtt_us": 0})
    with pytest.raises(BadMessage, match="field 'battery_pct': 101 outside 0..100"):
        check_message(MessageType.HELLO, {"role": "camera", "reply_to": 1, "protocol": 1, "device_id": "c",
                                          "firmware": "f", "battery_pct": 101, "storage_free_bytes": 0,
                                          "storage_used_bytes": 0, "segments": 0, "clock_utc_us": 0})
    with pytest.raises(BadMessage, match="'role' must be 'dock' or 'camera'"):
        check_message(MessageType.HELLO, {"role": "server"})
    check_message(MessageType.LIST, {"after": "", "future_field": [1, 2]})  # unknown fields are ignored


def test_a_listing_cannot_carry_a_path_for_a_name():
    entry = SegmentEntry("../../etc/shadow", 10, 1, "0" * 64, "c", 0).to_fields()
    with pytest.raises(BadMessage, match="not a plain segment file name"):
        check_message(MessageType.SEGMENTS, {"reply_to": 1, "segments": [entry], "more": False, "damaged": 0})


def test_a_sender_cannot_put_an_invalid_message_on_the_wire():
    with pytest.raises(BadMessage):
        encode_message(MessageType.CLOCK_PROBE, 1, {"dock_utc_us": "noon"})
    frame = decode_frame(encode_message(MessageType.CLOCK_PROBE, 5, {"dock_utc_us": 123}))
    assert parse_message(frame)["dock_utc_us"] == 123


def test_sequence_numbers_must_rise_and_a_hello_starts_a_new_session():
    guard = SequenceGuard()
    guard.check(1)
    guard.check(5)
    with pytest.raises(ReplayedFrame, match="5 is not above the last one received \\(5\\)"):
        guard.check(5)
    with pytest.raises(ReplayedFrame):
        guard.check(2)
    guard.restart(1)
    guard.check(2)


def test_listing_pages_by_name_so_freeing_between_pages_skips_nothing():
    entries = [SegmentEntry(f"cam-{i:010d}.bwv", 1, i, "0" * 64, "c", 0) for i in range(1, 251)]
    first, more = page(entries, "")
    assert len(first) == PAGE_MAX and more
    rest = [e for e in entries if e not in first[:10]]  # ten freed meanwhile
    second, more = page(rest, first[-1].name)
    assert second[0].name == "cam-0000000101.bwv" and more
    third, more = page(rest, second[-1].name)
    assert len(third) == 50 and not more


def test_a_full_page_of_segments_fits_in_one_frame():
    entry = SegmentEntry("c" * 100 + ".bwv", 2**62, 2**62, "f" * 64, "x" * 36, 2**31).to_fields()
    data = encode_message(MessageType.SEGMENTS, 1, {"reply_to": 1, "segments": [entry] * PAGE_MAX,
                                                   "more": True, "damaged": 0})
    assert len(data) < MAX_FRAME
    assert len(decode_frame(data).payload["segments"]) == PAGE_MAX
