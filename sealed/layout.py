"""The byte layout of a sealed segment (`.bwv`), version 1: encode and parse.

Pure functions on bytes, no I/O and no keys, so that every bound can be tested
exhaustively.  The layout is specified in docs/sealed-segment-format.md; this
module is the one implementation the camera, the dock and the server share.

A file is::

    preamble                       written when the segment opens
    chunk frame * n                one per authenticated-encrypted chunk
    trailer frame                  written when the segment is sealed

The preamble and the chunk frames are exactly what a camera has on its storage
while it records, so a segment interrupted by a power cut can be sealed later
by appending a trailer to what survived.  All integers are big-endian.
"""

from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass, field

from .errors import MalformedSegment, UnsupportedVersion

MAGIC = b"\x89BWV\r\n\x1a\n"
VERSION = 1

# Cipher suites: how the segment key is wrapped and how chunks are sealed.
SUITE_MLKEM768_X25519 = 1  # HPKE(ML-KEM-768+X25519, HKDF-SHA256, AES-256-GCM); chunks AES-256-GCM
SUITE_X25519 = 2  # HPKE(DHKEM-X25519, HKDF-SHA256, AES-256-GCM); chunks AES-256-GCM
SUITES = {SUITE_MLKEM768_X25519: "MLKEM768-X25519", SUITE_X25519: "X25519"}

FRAME_CHUNK = 0x43  # "C"
FRAME_TRAILER = 0x54  # "T"

# Bounds.  Every length read from a file is checked against one of these
# before anything is allocated, so a forged length cannot exhaust memory.
MAX_DEVICE_ID = 64
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" would also accept a trailing newline
MAX_WRAPPED_KEY = 4096
MAX_PREAMBLE = 8192
MAX_CHUNK_PLAINTEXT = 8 * 1024 * 1024
MIN_CHUNK_LIMIT = 1024
TAG_LEN = 16
MAX_CHUNK_CIPHERTEXT = MAX_CHUNK_PLAINTEXT + 1 + TAG_LEN  # +1: the record-type byte
MAX_CHUNKS = 1_000_000
NONCE_PREFIX_LEN = 7
SIGNATURE_LEN = 64
HASH_LEN = 32
KEY_ID_LEN = 16

# Trailer flags.
FLAG_RECOVERED = 0x1  # sealed after a power loss from the chunks that survived
KNOWN_FLAGS = FLAG_RECOVERED

# Record types: the first plaintext byte of every chunk.  The type is inside the
# encryption, so an observer cannot even tell video from location data.
RECORD_END = 0x00  # empty; lets a writer mark the last chunk when nothing is pending
RECORD_MEDIA = 0x01  # container bytes (MPEG-TS), in order
RECORD_INFO = 0x02  # UTF-8 JSON: container, codec, resolution, source, ...
RECORD_LOCATION = 0x03  # UTF-8 JSON lines: GNSS fixes
RECORD_EVENTS = 0x04  # UTF-8 JSON lines: bookmarks, triggers, indicator policy changes
RECORD_TYPES = {RECORD_END, RECORD_MEDIA, RECORD_INFO, RECORD_LOCATION, RECORD_EVENTS}

_FIXED_HEAD = struct.Struct(">8sHHI")  # magic, version, reserved, preamble length
_PREAMBLE_BODY = struct.Struct(">16sIQ32sqQqqIH16s7s")
_CHUNK_HEAD = struct.Struct(">BII")  # kind, ciphertext length, crc32 of ciphertext
_TRAILER_HEAD = struct.Struct(">BI")  # kind, trailer length
_TRAILER_BODY = struct.Struct(">qQIQ32sI")
TRAILER_LEN = _TRAILER_BODY.size + SIGNATURE_LEN
TRAILER_FRAME_LEN = _TRAILER_HEAD.size + TRAILER_LEN
CHUNK_HEAD_LEN = _CHUNK_HEAD.size


@dataclass(frozen=True)
class Preamble:
    """What is known when a segment opens; clear, and signed with the trailer.

    Nothing here is more precise about place than the device id: location
    travels only inside the encrypted chunks.
    """

    device_id: str
    clip_id: uuid.UUID
    segment_index: int
    sequence: int
    prev_hash: bytes
    start_utc_us: int
    start_mono_ns: int
    clock_sync_utc_us: int  # when the dock last set the clock; 0 = never synced
    clock_offset_us: int  # the correction applied then (dock time - camera time)
    chunk_limit: int  # largest payload one chunk may hold (its plaintext is one byte more: the record type)
    suite: int
    server_key_id: bytes
    nonce_prefix: bytes
    wrapped_key: bytes

    def encode(self) -> bytes:
        check_preamble_fields(self)
        dev = self.device_id.encode("ascii")
        body = (
            struct.pack(">B", len(dev))
            + dev
            + _PREAMBLE_BODY.pack(
                self.clip_id.bytes,
                self.segment_index,
                self.sequence,
                self.prev_hash,
                self.start_utc_us,
                self.start_mono_ns,
                self.clock_sync_utc_us,
                self.clock_offset_us,
                self.chunk_limit,
                self.suite,
                self.server_key_id,
                self.nonce_prefix,
            )
            + struct.pack(">H", len(self.wrapped_key))
            + self.wrapped_key
        )
        total = _FIXED_HEAD.size + len(body)
        return _FIXED_HEAD.pack(MAGIC, VERSION, 0, total) + body


@dataclass(frozen=True)
class Trailer:
    """What is known when a segment is sealed, and the device's signature over all of it."""

    end_utc_us: int
    end_mono_ns: int
    chunk_count: int
    body_len: int
    body_sha256: bytes
    flags: int
    signature: bytes = field(default=b"\x00" * SIGNATURE_LEN)

    @property
    def recovered(self) -> bool:
        return bool(self.flags & FLAG_RECOVERED)

    def encode_fields(self) -> bytes:
        """The signed part of the trailer (everything but the signature)."""
        if not 0 <= self.chunk_count <= MAX_CHUNKS:
            raise MalformedSegment(f"chunk count {self.chunk_count} outside 0..{MAX_CHUNKS}")
        if len(self.body_sha256) != HASH_LEN:
            raise MalformedSegment("body hash must be 32 bytes")
        if self.flags & ~KNOWN_FLAGS:
            raise MalformedSegment(f"unknown trailer flags 0x{self.flags:x}")
        return _TRAILER_BODY.pack(
            self.end_utc_us, self.end_mono_ns, self.chunk_count, self.body_len, self.body_sha256, self.flags
        )

    def encode_frame(self) -> bytes:
        if len(self.signature) != SIGNATURE_LEN:
            raise MalformedSegment("signature must be 64 bytes")
        return _TRAILER_HEAD.pack(FRAME_TRAILER, TRAILER_LEN) + self.encode_fields() + self.signature


def check_preamble_fields(p: Preamble) -> None:
    """Raise MalformedSegment unless every preamble field is within its bounds."""
    if not DEVICE_ID_RE.match(p.device_id or ""):
        raise MalformedSegment(
            f"device id {p.device_id!r} is not 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    if not 0 <= p.segment_index < 2**32:
        raise MalformedSegment(f"segment index {p.segment_index} outside 0..2^32-1")
    if not 1 <= p.sequence < 2**63:
        raise MalformedSegment(f"sequence number {p.sequence} must be at least 1")
    if len(p.prev_hash) != HASH_LEN:
        raise MalformedSegment("previous-segment hash must be 32 bytes")
    if p.sequence == 1 and p.prev_hash != bytes(HASH_LEN):
        raise MalformedSegment("the first segment of a device (sequence 1) must have an all-zero previous hash")
    if not MIN_CHUNK_LIMIT <= p.chunk_limit <= MAX_CHUNK_PLAINTEXT:
        raise MalformedSegment(f"chunk limit {p.chunk_limit} outside {MIN_CHUNK_LIMIT}..{MAX_CHUNK_PLAINTEXT}")
    if p.suite not in SUITES:
        raise UnsupportedVersion(f"unknown cipher suite {p.suite}; this build knows {sorted(SUITES)}")
    if len(p.server_key_id) != KEY_ID_LEN:
        raise MalformedSegment("server key id must be 16 bytes")
    if len(p.nonce_prefix) != NONCE_PREFIX_LEN:
        raise MalformedSegment("nonce prefix must be 7 bytes")
    if not 1 <= len(p.wrapped_key) <= MAX_WRAPPED_KEY:
        raise MalformedSegment(f"wrapped key of {len(p.wrapped_key)} bytes outside 1..{MAX_WRAPPED_KEY}")


def preamble_length(head: bytes) -> int:
    """From the first 16 bytes of a file, the length of its preamble (checked)."""
    if len(head) < _FIXED_HEAD.size:
        raise MalformedSegment(f"file is {len(head)} bytes, shorter than the {_FIXED_HEAD.size}-byte fixed header", offset=0)
    magic, version, reserved, total = _FIXED_HEAD.unpack_from(head)
    if magic != MAGIC:
        raise MalformedSegment(f"not a sealed segment: magic is {magic!r}, expected {MAGIC!r}", offset=0)
    if version != VERSION:
        raise UnsupportedVersion(f"format version {version}; this build reads version {VERSION}", offset=8)
    if reserved != 0:
        raise MalformedSegment(f"reserved header field is {reserved}, must be 0", offset=10)
    minimum = _FIXED_HEAD.size + 2 + _PREAMBLE_BODY.size + 2 + 1
    if not minimum <= total <= MAX_PREAMBLE:
        raise MalformedSegment(f"preamble length {total} outside {minimum}..{MAX_PREAMBLE}", offset=12)
    return total


FIXED_HEAD_LEN = _FIXED_HEAD.size


def parse_preamble(data: bytes) -> Preamble:
    """Parse a complete preamble (exactly `preamble_length` bytes)."""
    total = preamble_length(data)
    if len(data) != total:
        raise MalformedSegment(f"preamble is {len(data)} bytes, its header says {total}", offset=0)
    pos = _FIXED_HEAD.size
    dev_len = data[pos]
    pos += 1
    if not 1 <= dev_len <= MAX_DEVICE_ID:
        raise MalformedSegment(f"device id length {dev_len} outside 1..{MAX_DEVICE_ID}", offset=pos - 1)
    if pos + dev_len + _PREAMBLE_BODY.size + 2 > total:
        raise MalformedSegment("preamble too short for its device id and fixed fields", offset=pos)
    raw_dev = data[pos : pos + dev_len]
    try:
        device_id = raw_dev.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedSegment(f"device id {raw_dev!r} is not ASCII", offset=pos) from None
    pos += dev_len
    (clip, seg_index, seq, prev, start_utc, start_mono, sync_utc, offset_us, chunk_limit, suite, key_id, nonce_prefix) = (
        _PREAMBLE_BODY.unpack_from(data, pos)
    )
    pos += _PREAMBLE_BODY.size
    (wrapped_len,) = struct.unpack_from(">H", data, pos)
    pos += 2
    if pos + wrapped_len != total:
        raise MalformedSegment(
            f"wrapped key length {wrapped_len} does not fill the preamble ({total - pos} bytes left)", offset=pos - 2
        )
    p = Preamble(
        device_id=device_id,
        clip_id=uuid.UUID(bytes=clip),
        segment_index=seg_index,
        sequence=seq,
        prev_hash=prev,
        start_utc_us=start_utc,
        start_mono_ns=start_mono,
        clock_sync_utc_us=sync_utc,
        clock_offset_us=offset_us,
        chunk_limit=chunk_limit,
        suite=suite,
        server_key_id=key_id,
        nonce_prefix=nonce_prefix,
        wrapped_key=bytes(data[pos:total]),
    )
    check_preamble_fields(p)
    return p


def chunk_header(ciphertext_len: int, crc: int) -> bytes:
    return _CHUNK_HEAD.pack(FRAME_CHUNK, ciphertext_len, crc)


def parse_frame_kind(kind: int, offset: int) -> int:
    if kind not in (FRAME_CHUNK, FRAME_TRAILER):
        raise MalformedSegment(f"frame kind 0x{kind:02x}, expected a chunk (0x43) or the trailer (0x54)", offset=offset)
    return kind


def parse_chunk_header(head: bytes, offset: int, chunk_limit: int) -> tuple[int, int]:
    """Return (ciphertext length, crc32) of a chunk frame header, bounds checked."""
    kind, length, crc = _CHUNK_HEAD.unpack(head)
    if kind != FRAME_CHUNK:
        raise MalformedSegment(f"expected a chunk frame (0x43), found 0x{kind:02x}", offset=offset)
    limit = chunk_limit + 1 + TAG_LEN
    if not 1 + TAG_LEN <= length <= limit:
        raise MalformedSegment(f"chunk ciphertext length {length} outside {1 + TAG_LEN}..{limit}", offset=offset + 1)
    return length, crc


def parse_trailer_frame(frame: bytes, offset: int) -> Trailer:
    """Parse a complete trailer frame (TRAILER_FRAME_LEN bytes)."""
    if len(frame) != TRAILER_FRAME_LEN:
        raise MalformedSegment(
            f"trailer is {len(frame)} bytes, expected {TRAILER_FRAME_LEN} (file truncated?)", offset=offset
        )
    kind, length = _TRAILER_HEAD.unpack_from(frame)
    if kind != FRAME_TRAILER:
        raise MalformedSegment(f"expected the trailer frame (0x54), found 0x{kind:02x}", offset=offset)
    if length != TRAILER_LEN:
        raise MalformedSegment(f"trailer length {length}, expected {TRAILER_LEN}", offset=offset + 1)
    end_utc, end_mono, count, body_len, body_hash, flags = _TRAILER_BODY.unpack_from(frame, _TRAILER_HEAD.size)
    if flags & ~KNOWN_FLAGS:
        raise MalformedSegment(f"unknown trailer flags 0x{flags:x}", offset=offset + _TRAILER_HEAD.size + 60)
    if count > MAX_CHUNKS:
        raise MalformedSegment(f"chunk count {count} over the limit of {MAX_CHUNKS}", offset=offset + 21)
    sig = bytes(frame[_TRAILER_HEAD.size + _TRAILER_BODY.size :])
    return Trailer(end_utc, end_mono, count, body_len, body_hash, flags, sig)


def chunk_nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    """STREAM-construction nonce: prefix (7) || counter (4) || last-chunk flag (1).

    The counter makes a dropped or reordered chunk fail authentication; the
    flag makes a truncation at a chunk boundary fail too (no chunk but the
    real last one decrypts with flag 1).
    """
    if not 0 <= counter < 2**32:
        raise MalformedSegment(f"chunk counter {counter} out of range")
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


SIGNATURE_CONTEXT = b"OpenBWV sealed segment v1\x00"
SEGMENT_HASH_CONTEXT = b"OpenBWV segment hash v1\x00"
KEY_WRAP_CONTEXT = b"OpenBWV segment key v1\x00"
CHUNK_AAD_CONTEXT = b"OpenBWV chunk v1\x00"


def signed_message(preamble_bytes: bytes, trailer: Trailer) -> bytes:
    """What the device signs: the whole preamble and the trailer's fields."""
    return SIGNATURE_CONTEXT + preamble_bytes + trailer.encode_fields()


def wrap_info(p: Preamble) -> bytes:
    """HPKE `info` binding the wrapped key to this one segment, so it cannot be transplanted."""
    dev = p.device_id.encode("ascii")
    return (
        KEY_WRAP_CONTEXT
        + bytes([len(dev)])
        + dev
        + p.clip_id.bytes
        + p.sequence.to_bytes(8, "big")
        + p.segment_index.to_bytes(4, "big")
        + p.nonce_prefix
    )
