"""What only the server can catch: forgeries by someone who holds the device's signing key.

A stolen or cloned camera can rewrite a segment and make its hash and
signature consistent again, so public-key verification passes.  It cannot
re-encrypt: every chunk is bound to its position (the counter in its nonce),
the last chunk to the end marker, and the segment key to this one segment.
Decryption therefore fails, and says so.
"""

from __future__ import annotations

import dataclasses

import pytest

from openbwv.sealed.errors import DecryptionFailed, HashMismatch
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.layout import FLAG_RECOVERED
from openbwv.sealed.reader import decrypt_records, verify_file

from .segment_kit import random_records, split_frames


@pytest.fixture
def forge(scratch, registry):
    """Write the attacker's bytes and check they pass verification, so only decryption is left to catch them."""

    def write(data: bytes):
        path = scratch(data)
        verify_file(path, registry)
        return path

    return write


def test_chunks_reordered_and_resigned_with_the_device_key_fail_decryption(
    small_segment, attacker, forge, registry, server_keys
):
    layout = split_frames(small_segment.data)
    c = layout.chunks
    path = forge(attacker.reseal(layout.preamble_bytes, [c[1], c[0], *c[2:]], like=layout.trailer))

    with pytest.raises(DecryptionFailed, match="chunk 0 fails authentication"):
        list(decrypt_records(path, registry, server_keys))


def test_the_end_chunk_dropped_and_resigned_with_the_device_key_fails_decryption(
    small_segment, attacker, forge, registry, server_keys
):
    layout = split_frames(small_segment.data)
    path = forge(attacker.reseal(layout.preamble_bytes, layout.chunks[:-1], like=layout.trailer))

    with pytest.raises(DecryptionFailed, match="end marker"):
        list(decrypt_records(path, registry, server_keys))


def test_a_middle_chunk_dropped_and_resigned_with_the_device_key_fails_decryption(
    small_segment, attacker, forge, registry, server_keys
):
    layout = split_frames(small_segment.data)
    c = layout.chunks
    path = forge(attacker.reseal(layout.preamble_bytes, [c[0], *c[2:]], like=layout.trailer))

    records = decrypt_records(path, registry, server_keys)
    assert next(records) == small_segment.records[0]  # what precedes the cut is genuine...
    with pytest.raises(DecryptionFailed, match="chunk 1 fails authentication"):
        next(records)  # ...and the cut itself is caught


def test_a_chunk_repeated_and_resigned_with_the_device_key_fails_decryption(
    small_segment, attacker, forge, registry, server_keys
):
    layout = split_frames(small_segment.data)
    c = layout.chunks
    path = forge(attacker.reseal(layout.preamble_bytes, [c[0], c[0], *c[1:]], like=layout.trailer))

    with pytest.raises(DecryptionFailed):
        list(decrypt_records(path, registry, server_keys))


def test_the_end_chunk_moved_to_the_middle_and_resigned_fails_decryption(
    small_segment, attacker, forge, registry, server_keys
):
    layout = split_frames(small_segment.data)
    c = layout.chunks
    path = forge(attacker.reseal(layout.preamble_bytes, [c[0], c[-1], *c[1:-1]], like=layout.trailer))

    with pytest.raises(DecryptionFailed):
        list(decrypt_records(path, registry, server_keys))


def test_a_chunk_from_another_segment_resigned_with_the_device_key_fails_decryption(
    small_segment, sealer, attacker, forge, registry, server_keys, tmp_path
):
    mine = split_frames(small_segment.data)
    theirs = split_frames(sealer.seal(tmp_path, random_records()).data)
    chunks = [theirs.chunks[0], *mine.chunks[1:]]
    path = forge(attacker.reseal(mine.preamble_bytes, chunks, like=mine.trailer))

    with pytest.raises(DecryptionFailed, match="chunk 0"):
        list(decrypt_records(path, registry, server_keys))


def test_a_wrapped_key_transplanted_into_another_segment_cannot_be_unwrapped(
    sealer, attacker, forge, registry, server_keys, tmp_path
):
    donor = split_frames(sealer.seal(tmp_path / "donor", random_records(), sequence=1).data)
    host = split_frames(
        sealer.seal(tmp_path / "host", random_records(), sequence=2, prev_hash=b"\x07" * 32).data
    )
    assert len(donor.preamble.wrapped_key) == len(host.preamble.wrapped_key)
    grafted = dataclasses.replace(host.preamble, wrapped_key=donor.preamble.wrapped_key).encode()
    path = forge(attacker.reseal(grafted, host.chunks, like=host.trailer))

    with pytest.raises(DecryptionFailed, match="cannot unwrap the segment key"):
        list(decrypt_records(path, registry, server_keys))


def test_a_server_with_another_key_pair_cannot_decrypt(small_segment, registry):
    other_server = ServerKeyPair.generate()

    with pytest.raises(DecryptionFailed, match="cannot unwrap") as caught:
        list(decrypt_records(small_segment.path, registry, other_server))
    assert small_segment.info.preamble.server_key_id.hex() in str(caught.value)
    assert other_server.public.key_id.hex() in str(caught.value)


def test_nothing_is_decrypted_from_a_file_that_fails_verification(small_segment, scratch, registry, server_keys):
    damaged = bytearray(small_segment.data)
    damaged[-200] ^= 0x01  # inside the last media chunk
    path = scratch(bytes(damaged))

    records = decrypt_records(path, registry, server_keys)
    with pytest.raises(HashMismatch):
        next(records)  # the very first record: verification comes before any decryption


def test_a_device_key_holder_can_only_cut_the_tail_by_marking_the_segment_recovered(
    small_segment, attacker, forge, registry, server_keys
):
    """The known limit of the design: a cut at the end decrypts, but only under the recovered flag, in the open."""
    layout = split_frames(small_segment.data)
    path = forge(attacker.reseal(layout.preamble_bytes, layout.chunks[:2], flags=FLAG_RECOVERED, like=layout.trailer))

    assert verify_file(path, registry).trailer.recovered
    assert list(decrypt_records(path, registry, server_keys)) == small_segment.records[:2]
