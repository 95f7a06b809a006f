"""Tools for the sealed-segment tests: a registry, a sealer, and a way to take files apart.

Plain classes and functions (the fixtures that hand them out live in
conftest.py), so tests can also use them inside hypothesis examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from openbwv.sealed.errors import UnknownDevice
from openbwv.sealed.keys import DeviceKey, ServerKeyPair
from openbwv.sealed.layout import (
    CHUNK_HEAD_LEN,
    FIXED_HEAD_LEN,
    FRAME_TRAILER,
    HASH_LEN,
    RECORD_EVENTS,
    RECORD_INFO,
    RECORD_LOCATION,
    RECORD_MEDIA,
    TRAILER_FRAME_LEN,
    Preamble,
    Trailer,
    parse_chunk_header,
    parse_preamble,
    parse_trailer_frame,
    preamble_length,
    signed_message,
)
from openbwv.sealed.writer import SealedInfo, SegmentWriter

CHUNK_LIMIT = 1024  # the smallest the format allows: small files, many chunks
GENESIS = bytes(HASH_LEN)
DEVICE_ID = "cam-0042"


class Registry:
    """The enrolled devices as a server keeps them: public keys only."""

    def __init__(self, *devices: DeviceKey):
        self._keys: dict[str, ed25519.Ed25519PublicKey] = {}
        for device in devices:
            self.enroll(device)

    def enroll(self, device: DeviceKey) -> None:
        self.enroll_key(device.device_id, ed25519.Ed25519PublicKey.from_public_bytes(device.public_bytes))

    def enroll_key(self, device_id: str, key: ed25519.Ed25519PublicKey) -> None:
        self._keys[device_id] = key

    def public_key(self, device_id: str) -> ed25519.Ed25519PublicKey:
        try:
            return self._keys[device_id]
        except KeyError:
            raise UnknownDevice(f"device {device_id!r} is not enrolled") from None


@dataclass(frozen=True)
class Sealed:
    """A segment sealed by a test, with what went into it."""

    info: SealedInfo
    records: list[tuple[int, bytes]]  # (record type, payload) as appended

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def data(self) -> bytes:
        return self.info.path.read_bytes()


class Sealer:
    """Seal segments the way a camera does, one SegmentWriter per segment."""

    def __init__(self, device: DeviceKey, server: ServerKeyPair):
        self.device = device
        self.server = server

    def writer(
        self,
        directory: Path,
        *,
        device: DeviceKey | None = None,
        sequence: int = 1,
        prev_hash: bytes = GENESIS,
        clip_id: uuid.UUID | None = None,
        segment_index: int = 0,
        chunk_limit: int = CHUNK_LIMIT,
    ) -> SegmentWriter:
        directory.mkdir(parents=True, exist_ok=True)
        return SegmentWriter(
            directory,
            device or self.device,
            self.server.public,
            clip_id=clip_id or uuid.UUID(int=sequence),
            segment_index=segment_index,
            sequence=sequence,
            prev_hash=prev_hash,
            start_utc_us=1_700_000_000_000_000 + sequence * 60_000_000,
            start_mono_ns=sequence * 60_000_000_000,
            chunk_limit=chunk_limit,
        )

    def seal(self, directory: Path, records: list[tuple[int, bytes]] | None = None, **kw) -> Sealed:
        if records is None:
            records = random_records()
        w = self.writer(directory, **kw)
        for rtype, payload in records:
            w.append(rtype, payload)
        info = w.seal(end_utc_us=w.preamble.start_utc_us + 60_000_000, end_mono_ns=w.preamble.start_mono_ns + 1)
        return Sealed(info, list(records))


def random_records(sizes: tuple[int, ...] = (200, 120, 300)) -> list[tuple[int, bytes]]:
    """A few chunks of random bytes, each of a different record type."""
    kinds = (RECORD_MEDIA, RECORD_LOCATION, RECORD_EVENTS, RECORD_INFO)
    return [(kinds[i % len(kinds)], os.urandom(n)) for i, n in enumerate(sizes)]


@dataclass(frozen=True)
class Layout:
    """A sealed file cut along its frames: preamble, chunk frames (end chunk last), trailer frame."""

    preamble_bytes: bytes
    chunks: list[bytes]
    trailer_frame: bytes

    @property
    def preamble(self) -> Preamble:
        return parse_preamble(self.preamble_bytes)

    @property
    def trailer(self) -> Trailer:
        return parse_trailer_frame(self.trailer_frame, 0)

    def join(self) -> bytes:
        return self.preamble_bytes + b"".join(self.chunks) + self.trailer_frame

    def chunk_offsets(self) -> list[int]:
        """Byte offset in the file of each chunk frame."""
        out, pos = [], len(self.preamble_bytes)
        for c in self.chunks:
            out.append(pos)
            pos += len(c)
        return out


def split_frames(data: bytes) -> Layout:
    """Cut a well-formed sealed file into its frames (no checks beyond the layout)."""
    plen = preamble_length(data[:FIXED_HEAD_LEN])
    preamble = parse_preamble(data[:plen])
    pos, chunks = plen, []
    while data[pos] != FRAME_TRAILER:
        length, _ = parse_chunk_header(data[pos : pos + CHUNK_HEAD_LEN], pos, preamble.chunk_limit)
        chunks.append(data[pos : pos + CHUNK_HEAD_LEN + length])
        pos += CHUNK_HEAD_LEN + length
    assert len(data) - pos == TRAILER_FRAME_LEN
    return Layout(data[:plen], chunks, data[pos:])


class Attacker:
    """Someone holding a device's signing key (a stolen or cloned camera), but not the server's key.

    They can rewrite a file and make its hash and signature consistent again;
    only decryption, which checks each chunk's position and the end marker,
    can tell.
    """

    def __init__(self, device: DeviceKey):
        self.device = device

    def reseal(self, preamble_bytes: bytes, chunks: list[bytes], *, flags: int = 0, like: Trailer | None = None) -> bytes:
        body = b"".join(chunks)
        trailer = Trailer(
            end_utc_us=like.end_utc_us if like else 1_700_000_060_000_000,
            end_mono_ns=like.end_mono_ns if like else 0,
            chunk_count=len(chunks),
            body_len=len(body),
            body_sha256=hashlib.sha256(body).digest(),
            flags=flags,
        )
        sig = self.device.sign(signed_message(preamble_bytes, trailer))
        return preamble_bytes + body + dataclasses.replace(trailer, signature=sig).encode_frame()
