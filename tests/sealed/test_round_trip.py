"""What a camera seals, the server gets back: every record, in order, nothing more."""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openbwv.sealed.layout import (
    RECORD_EVENTS,
    RECORD_INFO,
    RECORD_LOCATION,
    RECORD_MEDIA,
    TRAILER_FRAME_LEN,
)
from openbwv.sealed.reader import decrypt_records, verify_file
from openbwv.sealed.writer import segment_hash

from .segment_kit import CHUNK_LIMIT, DEVICE_ID, GENESIS, split_frames

APPENDABLE = [RECORD_MEDIA, RECORD_INFO, RECORD_LOCATION, RECORD_EVENTS]


def joined_runs(records: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Consecutive chunks of one record type, joined back into one payload."""
    return [(rtype, b"".join(p for _, p in run)) for rtype, run in itertools.groupby(records, key=lambda r: r[0])]


def test_a_sealed_segment_verifies_and_decrypts_to_exactly_what_was_appended(sealer, registry, server_keys, tmp_path):
    records = [
        (RECORD_INFO, b'{"container": "mpegts", "codec": "h264"}'),
        (RECORD_MEDIA, os.urandom(700)),
        (RECORD_LOCATION, b'{"lat": 51.5, "lon": -0.12}\n'),
        (RECORD_MEDIA, os.urandom(1000)),
        (RECORD_EVENTS, b'{"event": "bookmark"}\n'),
    ]
    sealed = sealer.seal(tmp_path, records)

    verified = verify_file(sealed.path, registry)

    assert verified.device_id == DEVICE_ID
    assert verified.sequence == 1
    assert verified.trailer.chunk_count == len(records) + 1  # and the end chunk
    assert not verified.trailer.recovered
    assert list(decrypt_records(sealed.path, registry, server_keys)) == records


def test_the_segment_hash_the_writer_reports_is_the_one_verification_computes(small_segment, registry):
    verified = verify_file(small_segment.path, registry)

    assert verified.segment_hash == small_segment.info.segment_hash
    assert verified.size == small_segment.path.stat().st_size


def test_a_payload_larger_than_the_chunk_limit_is_split_and_comes_back_in_append_order(
    sealer, registry, server_keys, tmp_path
):
    big = os.urandom(2 * CHUNK_LIMIT + 300)
    bigger = os.urandom(3 * CHUNK_LIMIT)
    records = [(RECORD_MEDIA, big), (RECORD_INFO, b"{}"), (RECORD_MEDIA, bigger)]
    sealed = sealer.seal(tmp_path, records)

    chunks = list(decrypt_records(sealed.path, registry, server_keys))

    assert [len(p) for _, p in chunks] == [CHUNK_LIMIT, CHUNK_LIMIT, 300, 2, CHUNK_LIMIT, CHUNK_LIMIT, CHUNK_LIMIT]
    assert joined_runs(chunks) == records


def test_an_empty_append_still_leaves_an_empty_record(sealer, registry, server_keys, tmp_path):
    sealed = sealer.seal(tmp_path, [(RECORD_EVENTS, b""), (RECORD_MEDIA, b"x")])

    assert list(decrypt_records(sealed.path, registry, server_keys)) == [(RECORD_EVENTS, b""), (RECORD_MEDIA, b"x")]


def test_a_segment_with_no_records_holds_only_the_end_chunk(sealer, registry, server_keys, tmp_path):
    sealed = sealer.seal(tmp_path, [])

    assert verify_file(sealed.path, registry).trailer.chunk_count == 1
    assert list(decrypt_records(sealed.path, registry, server_keys)) == []


def test_the_file_is_the_preamble_then_one_frame_per_chunk_then_the_trailer(small_segment):
    layout = split_frames(small_segment.data)

    assert len(layout.chunks) == len(small_segment.records) + 1
    assert len(layout.trailer_frame) == TRAILER_FRAME_LEN
    assert layout.join() == small_segment.data
    assert segment_hash(layout.preamble_bytes, layout.trailer) == small_segment.info.segment_hash


def test_nothing_in_the_clear_reveals_the_content(sealer, tmp_path):
    secret = b"GNSS 51.50722,-0.12750 " * 20
    sealed = sealer.seal(tmp_path, [(RECORD_LOCATION, secret)])

    assert b"GNSS" not in sealed.data
    assert secret[:16] not in sealed.data


def test_the_first_segment_of_a_device_names_the_all_zero_previous_hash(small_segment):
    assert small_segment.info.preamble.prev_hash == GENESIS


record = st.tuples(st.sampled_from(APPENDABLE), st.binary(max_size=3 * CHUNK_LIMIT))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record, max_size=6))
def test_any_sequence_of_appends_decrypts_to_itself(sealer, registry, server_keys, tmp_path_factory, records):
    sealed = sealer.seal(tmp_path_factory.mktemp("any"), records)

    chunks = list(decrypt_records(sealed.path, registry, server_keys))

    assert all(len(p) <= CHUNK_LIMIT for _, p in chunks)
    expected = [(rtype, p[i : i + CHUNK_LIMIT]) for rtype, p in records for i in range(0, max(len(p), 1), CHUNK_LIMIT)]
    assert chunks == expected
