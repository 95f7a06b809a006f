"""Reading sealed segments: verify without any private key, decrypt with the server's.

`verify_stream` reads a segment once, front to back, in bounded memory and
checks everything that can be checked with public keys only: the layout and
every bound, each chunk's CRC, the SHA-256 of the body against the signed
trailer, and the device's Ed25519 signature.  `decrypt_records` additionally
unwraps the segment key with the server's private key and authenticates every
chunk, its position (counter) and the end marker.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DecryptionFailed, HashMismatch, MalformedSegment, SegmentError, SignatureInvalid, UnknownDevice
from .keys import ServerKeyPair
from .layout import (
    CHUNK_HEAD_LEN,
    FIXED_HEAD_LEN,
    FRAME_CHUNK,
    FRAME_TRAILER,
    RECORD_END,
    RECORD_TYPES,
    TRAILER_FRAME_LEN,
    Preamble,
    Trailer,
    chunk_nonce,
    parse_chunk_header,
    parse_frame_kind,
    parse_preamble,
    parse_trailer_frame,
    preamble_length,
    signed_message,
    wrap_info,
)
from .writer import chunk_aad, segment_hash


class KeyLookup(Protocol):
    """Where verification finds a device's public key (the registry of enrolled devices)."""

    def public_key(self, device_id: str) -> ed25519.Ed25519PublicKey: ...


@dataclass(frozen=True)
class VerifiedSegment:
    """A segment whose layout, hash and signature have been checked."""

    preamble: Preamble
    preamble_bytes: bytes
    trailer: Trailer
    segment_hash: bytes
    size: int
    path: str | None = None

    @property
    def device_id(self) -> str:
        return self.preamble.device_id

    @property
    def sequence(self) -> int:
        return self.preamble.sequence


def _read_exact(f: BinaryIO, n: int, what: str, offset: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise MalformedSegment(f"file ends inside the {what}: needed {n} bytes, found {len(data)} (truncated?)", offset=offset)
    return data


def read_preamble(f: BinaryIO) -> tuple[Preamble, bytes]:
    head = _read_exact(f, FIXED_HEAD_LEN, "fixed header", 0)
    plen = preamble_length(head)
    rest = _read_exact(f, plen - FIXED_HEAD_LEN, "preamble", FIXED_HEAD_LEN)
    data = head + rest
    return parse_preamble(data), data


def verify_stream(
    f: BinaryIO,
    keys: KeyLookup | None,
    *,
    path: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> VerifiedSegment:
    """Check one segment read from `f`; raise a SegmentError naming the first problem.

    With `keys=None` the signature is not checked (layout and hash only);
    callers that decide trust always pass a registry.
    """
    try:
        preamble, preamble_bytes = read_preamble(f)
        pos = len(preamble_bytes)
        h = hashlib.sha256()
        count = 0
        while True:
            kind_b = f.read(1)
            if not kind_b:
                raise MalformedSegment("file ends before the trailer (truncated, or never sealed)", offset=pos)
            kind = parse_frame_kind(kind_b[0], pos)
            if kind == FRAME_TRAILER:
                frame = kind_b + f.read(TRAILER_FRAME_LEN - 1)
                trailer = parse_trailer_frame(frame, pos)
                break
            assert kind == FRAME_CHUNK
            head = kind_b + _read_exact(f, CHUNK_HEAD_LEN - 1, f"header of chunk {count}", pos + 1)
            length, crc = parse_chunk_header(head, pos, preamble.chunk_limit)
            ct = _read_exact(f, length, f"ciphertext of chunk {count}", pos + CHUNK_HEAD_LEN)
            if zlib.crc32(ct) != crc:
                raise HashMismatch(f"chunk {count} is damaged: its CRC does not match its ciphertext", offset=pos)
            h.update(head)
            h.update(ct)
            count += 1
            pos += CHUNK_HEAD_LEN + length
            if on_progress is not None:
                on_progress(pos)
        trailer_pos = pos
        pos += TRAILER_FRAME_LEN
        extra = f.read(1)
        if extra:
            raise MalformedSegment("data after the trailer (file extended or concatenated)", offset=pos)
        if trailer.chunk_count != count:
            raise MalformedSegment(f"trailer says {trailer.chunk_count} chunks, file holds {count}", offset=trailer_pos)
        if trailer.body_len != trailer_pos - len(preamble_bytes):
            raise MalformedSegment(
                f"trailer says the chunks take {trailer.body_len} bytes, they take {trailer_pos - len(preamble_bytes)}",
                offset=trailer_pos,
            )
        if h.digest() != trailer.body_sha256:
            raise HashMismatch("SHA-256 of the ciphertext does not match the signed trailer: content altered", offset=trailer_pos)
        if not trailer.recovered and count == 0:
            raise MalformedSegment("a segment sealed normally must end with an end chunk; this one has no chunks")
        if keys is not None:
            try:
                pub = keys.public_key(preamble.device_id)
            except UnknownDevice:
                raise
            except KeyError:
                raise UnknownDevice(f"device {preamble.device_id!r} is not enrolled here") from None
            try:
                pub.verify(trailer.signature, signed_message(preamble_bytes, trailer))
            except InvalidSignature:
                raise SignatureInvalid(
                    f"signature does not verify with the enrolled key of device {preamble.device_id!r} "
                    "(forged, altered, or signed by another key)",
                    offset=trailer_pos,
                ) from None
    except SegmentError as e:
        if path is not None and e.path is None:
            e.at(path)
        raise
    return VerifiedSegment(preamble, preamble_bytes, trailer, segment_hash(preamble_bytes, trailer), pos, path)


def verify_file(path: Path, keys: KeyLookup | None, **kw) -> VerifiedSegment:
    with open(path, "rb", buffering=1024 * 1024) as f:
        return verify_stream(f, keys, path=str(path), **kw)


def read_summary(path: Path) -> tuple[Preamble, Trailer | None]:
    """Preamble and trailer of a file without reading its body (trusting nothing: for listing only)."""
    with open(path, "rb") as f:
        preamble, _ = read_preamble(f)
        f.seek(0, 2)
        size = f.tell()
        if size < TRAILER_FRAME_LEN:
            return preamble, None
        f.seek(size - TRAILER_FRAME_LEN)
        try:
            return preamble, parse_trailer_frame(f.read(TRAILER_FRAME_LEN), size - TRAILER_FRAME_LEN)
        except MalformedSegment:
            return preamble, None


def decrypt_records(
    path: Path, keys: KeyLookup, server: ServerKeyPair, *, verified: VerifiedSegment | None = None
) -> Iterator[tuple[int, bytes]]:
    """Verify a segment, then yield its (record type, payload) in order.

    Verification comes first, in full: nothing is decrypted from a file whose
    hash or signature fails.  The END record is checked, not yielded.
    `verified`: the caller has just verified exactly this file (ingest, while
    receiving it), so it is not verified a second time.
    """
    seg = verified if verified is not None else verify_file(path, keys)
    p = seg.preamble
    try:
        key = server.unwrap(p.suite, p.wrapped_key, wrap_info(p))
        if len(key) != 32:
            raise ValueError(f"unwrapped key is {len(key)} bytes, expected 32")
    except (InvalidTag, ValueError) as e:
        raise DecryptionFailed(
            f"cannot unwrap the segment key with this server's key (sealed to key id {p.server_key_id.hex()}, "
            f"this server is {server.public.key_id.hex()}): {type(e).__name__} {e}",
            path=str(path),
        ) from None
    aead = AESGCM(key)
    aad = chunk_aad(seg.preamble_bytes)
    n = seg.trailer.chunk_count
    with open(path, "rb", buffering=1024 * 1024) as f:
        f.seek(len(seg.preamble_bytes))
        pos = len(seg.preamble_bytes)
        for i in range(n):
            head = f.read(CHUNK_HEAD_LEN)
            length, _ = parse_chunk_header(head, pos, p.chunk_limit)
            ct = f.read(length)
            last = i == n - 1 and not seg.trailer.recovered
            pt = _open_chunk(aead, chunk_nonce(p.nonce_prefix, i, last), ct, aad)
            if pt is None and i == n - 1 and seg.trailer.recovered:
                # A power cut after the end chunk was written but before the trailer:
                # recovery kept the end chunk, which carries the last-chunk flag.
                last = True
                pt = _open_chunk(aead, chunk_nonce(p.nonce_prefix, i, last), ct, aad)
            if pt is None:
                hint = " (the last chunk must carry the end marker)" if last and not seg.trailer.recovered else ""
                raise DecryptionFailed(
                    f"chunk {i} fails authentication: altered, reordered or out of place{hint}", path=str(path), offset=pos
                )
            rtype = pt[0]
            if rtype not in RECORD_TYPES:
                raise DecryptionFailed(f"chunk {i} holds unknown record type {rtype}", path=str(path), offset=pos)
            if last:
                if rtype != RECORD_END or len(pt) != 1:
                    raise DecryptionFailed(f"last chunk {i} is not an empty end record", path=str(path), offset=pos)
                return
            if rtype == RECORD_END:
                raise DecryptionFailed(f"end record at chunk {i} before the last chunk", path=str(path), offset=pos)
            yield rtype, pt[1:]
            pos += CHUNK_HEAD_LEN + length


def _open_chunk(aead: AESGCM, nonce: bytes, ct: bytes, aad: bytes) -> bytes | None:
    try:
        return aead.decrypt(nonce, ct, aad)
    except InvalidTag:
        return None


class StreamVerifier:
    """`verify_stream` fed as the bytes arrive, in pieces of any size (tus PATCH bodies), so that a
    server verifies an upload while receiving it instead of reading the file back afterwards.

    Pure: no I/O, no clocks.  `copy()` snapshots the state (a chunk whose Upload-Checksum fails is
    undone by going back to the snapshot).  The verdict is deliberately one-sided: `result()`
    returns a `VerifiedSegment` only when every check `verify_stream` makes has passed, and None
    for anything else (a problem, an incomplete file, more bytes than a segment holds).  None
    means "read the file with `verify_file`", which then gives the authoritative verdict and its
    established wording; a bad segment costs that one re-read, a good one is read once.
    """

    _HEAD, _PREAMBLE, _KIND, _CHUNK_HEAD, _CHUNK_BODY, _TRAILER, _DONE = range(7)

    def __init__(self, keys: KeyLookup | None):
        self.keys = keys
        self.offset = 0  # bytes fed
        self.failed = False
        self._phase = self._HEAD
        self._buf = bytearray()
        self._need = FIXED_HEAD_LEN
        self._preamble: Preamble | None = None
        self._preamble_bytes = b""
        self._h = hashlib.sha256()
        self._crc = 0
        self._expect_crc = 0
        self._count = 0
        self._body_left = 0
        self._trailer_pos = 0
        self._trailer: Trailer | None = None
        self._body_done = 0  # bytes of chunk frames taken so far (where the next frame starts, after the preamble)

    def copy(self) -> "StreamVerifier":
        other = StreamVerifier.__new__(StreamVerifier)
        other.__dict__.update(self.__dict__)
        other._buf = bytearray(self._buf)
        other._h = self._h.copy()
        return other

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next bytes of the file.  Never raises for bad content: it is only remembered."""
        view = memoryview(data)
        self.offset += len(view)
        while view and not self.failed:
            if self._phase == self._CHUNK_BODY:
                n = min(self._body_left, len(view))
                part = view[:n]
                self._h.update(part)
                self._crc = zlib.crc32(part, self._crc)
                self._body_left -= n
                view = view[n:]
                if self._body_left == 0:
                    if self._crc != self._expect_crc:
                        self.failed = True
                        return
                    self._count += 1
                    self._phase, self._need = self._KIND, 1
                continue
            if self._phase == self._DONE:
                self.failed = True  # data after the trailer
                return
            take = min(self._need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == self._need:
                frame = bytes(self._buf)
                self._buf.clear()
                try:
                    self._frame_complete(frame)
                except SegmentError:
                    self.failed = True
                    return

    def _frame_complete(self, data: bytes) -> None:
        if self._phase == self._HEAD:
            self._phase, self._need = self._PREAMBLE, preamble_length(data)
            self._buf += data  # the preamble is collected whole, its fixed header included
            return
        if self._phase == self._PREAMBLE:
            self._preamble = parse_preamble(data)
            self._preamble_bytes = data
            self._phase, self._need = self._KIND, 1
            return
        pos = len(self._preamble_bytes) + self._body_done
        if self._phase == self._KIND:
            kind = parse_frame_kind(data[0], pos)
            if kind == FRAME_TRAILER:
                self._trailer_pos = pos
                self._phase, self._need = self._TRAILER, TRAILER_FRAME_LEN
            else:
                self._phase, self._need = self._CHUNK_HEAD, CHUNK_HEAD_LEN
            self._buf += data  # the kind byte is part of the frame
            return
        if self._phase == self._CHUNK_HEAD:
            assert self._preamble is not None
            length, crc = parse_chunk_header(data, pos, self._preamble.chunk_limit)
            self._h.update(data)
            self._body_done += CHUNK_HEAD_LEN + length
            self._crc, self._expect_crc, self._body_left = 0, crc, length
            self._phase = self._CHUNK_BODY
            return
        if self._phase == self._TRAILER:
            self._trailer = parse_trailer_frame(data, self._trailer_pos)
            self._phase = self._DONE
            return

    def result(self) -> VerifiedSegment | None:
        """The verified segment if the bytes fed are one whole, valid, signed segment; else None."""
        if self.failed or self._phase != self._DONE or self._buf or self._trailer is None:
            return None
        trailer, preamble = self._trailer, self._preamble
        assert preamble is not None
        body_len = self._trailer_pos - len(self._preamble_bytes)
        if (trailer.chunk_count != self._count or trailer.body_len != body_len
                or self._h.digest() != trailer.body_sha256 or (not trailer.recovered and self._count == 0)):
            return None
        if self.keys is not None:
            try:
                pub = self.keys.public_key(preamble.device_id)
                pub.verify(trailer.signature, signed_message(self._preamble_bytes, trailer))
            except Exception:  # noqa: BLE001 - any doubt: verify_file gives the verdict and its words
                return None
        size = self._trailer_pos + TRAILER_FRAME_LEN
        return VerifiedSegment(preamble, self._preamble_bytes, trailer,
                               segment_hash(self._preamble_bytes, trailer), size, None)
