"""The dock <-> camera link protocol, version 1: frames and messages, encode and decode.

This is the one module both ends use (the camera's `firmware/docklink.py`
and the dock's `dock/bay.py`), and it is pure: bytes and dicts in, bytes and
dicts out, no ports, clocks or threads, so every bound can be tested
exhaustively.  docs/dock-protocol.md specifies it for people; where the two
disagree, this module is the protocol and the document has a bug.

A frame is, big-endian::

    magic "BW" | version u8 | type u8 | seq u32 | length u32 | payload | crc32 u32

The payload is a UTF-8 JSON object of at most `MAX_PAYLOAD` bytes and the
CRC-32 covers every byte before it.  `FrameDecoder` takes bytes in whatever
pieces the serial port delivers them and gives back frames, or the precise
reason a frame was refused, resynchronising on the magic: a noisy cable
costs a retry, never a crash, and a forged length is refused before anything
is allocated for it.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Callable, Iterable, Mapping

from ..sealed.layout import DEVICE_ID_RE
from .errors import (
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

MAGIC = b"BW"
VERSION = 1
HEADER = struct.Struct(">2sBBII")  # magic, version, type, seq, payload length
CRC = struct.Struct(">I")
HEADER_LEN = HEADER.size  # 12
MAX_PAYLOAD = 64 * 1024
MAX_FRAME = HEADER_LEN + MAX_PAYLOAD + CRC.size
MAX_SEQ = 0xFFFF_FFFF

# Garbage between frames is reported once a frame magic follows it, or once
# this much has piled up, so a line full of noise gives a few log lines, not one per byte.
GARBAGE_REPORT_BYTES = 4096

PAGE_MAX = 100  # segments per SEGMENTS page: 100 entries stay far below MAX_PAYLOAD
MAX_NAME = 128
MAX_TEXT = 1024

# A segment name as the camera lists it: a plain file name, as the writer makes
# them (no separator, no leading dot), so neither end can be walked out of a
# storage directory by a name.
SEGMENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,110}\.bwv\Z")


def is_segment_name(name: object) -> bool:
    return isinstance(name, str) and bool(SEGMENT_NAME_RE.match(name))


class MessageType(IntEnum):
    HELLO = 0x01
    BYE = 0x02
    ERROR = 0x03
    CLOCK_PROBE = 0x10
    CLOCK_REPLY = 0x11
    CLOCK_SET = 0x12
    CLOCK_ACK = 0x13
    LIST = 0x20
    SEGMENTS = 0x21
    FREE = 0x30
    FREED = 0x31


_TYPES = {t.value: t for t in MessageType}

# ERROR codes.
ERR_BAD_FRAME = "bad_frame"
ERR_BAD_MESSAGE = "bad_message"
ERR_REPLAY = "replay"
ERR_UNEXPECTED = "unexpected"
ERR_INTERNAL = "internal"

# FREED codes: why a segment was or was not freed.
FREED_OK = "freed"
FREE_NOT_FOUND = "not_found"
FREE_BAD_NAME = "bad_name"
FREE_NO_RECEIPT = "no_receipt"
FREE_RECEIPT_INVALID = "receipt_invalid"
FREE_UNREADABLE = "unreadable"
FREE_CHANGED = "changed"
FREE_IO_ERROR = "io_error"


# --------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class Frame:
    """One decoded frame: the payload is a JSON object whose fields are not yet checked."""

    type: MessageType
    seq: int
    payload: dict[str, Any]
    version: int = VERSION


def encode_frame(mtype: MessageType, seq: int, payload: Mapping[str, Any]) -> bytes:
    """The bytes of one frame.  Raises BadMessage/OversizeFrame for what the protocol cannot carry."""
    if not isinstance(payload, Mapping):
        raise BadMessage(f"payload must be a JSON object, not {type(payload).__name__}")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise BadMessage(f"sequence number {seq!r} outside 0..{MAX_SEQ}")
    mtype = MessageType(mtype)
    try:
        raw = json.dumps(dict(payload), ensure_ascii=False, allow_nan=False, sort_keys=True,
                         separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise BadMessage(f"{mtype.name} payload cannot be JSON: {e}") from None
    if len(raw) > MAX_PAYLOAD:
        raise OversizeFrame(f"{mtype.name} payload of {len(raw)} bytes exceeds the {MAX_PAYLOAD}-byte bound")
    body = HEADER.pack(MAGIC, VERSION, mtype.value, seq, len(raw)) + raw
    return body + CRC.pack(zlib.crc32(body))


def _check_header(buf: bytes | bytearray | memoryview, offset: int, max_payload: int) -> tuple[MessageType, int, int]:
    """(type, seq, payload length) of a header that starts with the magic; raises the FrameError naming the fault."""
    _magic, version, tcode, seq, length = HEADER.unpack_from(buf)
    if version != VERSION:
        raise UnsupportedVersion(f"frame version {version}; this build speaks version {VERSION}", offset=offset)
    mtype = _TYPES.get(tcode)
    if mtype is None:
        raise UnknownType(f"frame type 0x{tcode:02x} is not a message type of version {VERSION}", offset=offset)
    if length > max_payload:
        raise OversizeFrame(f"payload length {length} exceeds the {max_payload}-byte bound", offset=offset)
    return mtype, seq, length


def _check_crc(buf: bytes | bytearray | memoryview, end: int, offset: int) -> None:
    (found,) = CRC.unpack_from(buf, end - CRC.size)
    computed = zlib.crc32(memoryview(buf)[: end - CRC.size])
    if found != computed:
        raise BadChecksum(f"CRC-32 0x{computed:08x} computed, frame carries 0x{found:08x} (damaged frame)",
                          offset=offset)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_payload(raw: bytes, offset: int | None = None) -> dict[str, Any]:
    """The payload as a dict; BadPayload if it is not UTF-8 JSON holding one object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadPayload(f"payload is not UTF-8 (byte {e.start} of the payload)", offset=offset) from None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise BadPayload(f"payload is not valid JSON: {e}", offset=offset) from None
    if not isinstance(value, dict):
        raise BadPayload(f"payload is a JSON {_kind(value)}, expected an object", offset=offset)
    return value


def decode_frame(data: bytes, *, max_payload: int = MAX_PAYLOAD) -> Frame:
    """Exactly one frame from exactly these bytes; raises the FrameError naming what is wrong."""
    if len(data) < HEADER_LEN + CRC.size:
        raise TruncatedFrame(f"{len(data)} bytes cannot hold a frame (at least {HEADER_LEN + CRC.size})", offset=0)
    if data[:2] != MAGIC:
        raise BadMagic(f"frame starts with {bytes(data[:2])!r}, expected {MAGIC!r}", offset=0)
    mtype, seq, length = _check_header(data, 0, max_payload)
    end = HEADER_LEN + length + CRC.size
    if len(data) < end:
        raise TruncatedFrame(f"header promises {end} bytes, found {len(data)}", offset=0)
    if len(data) > end:
        raise TrailingData(f"{len(data) - end} byte(s) after the frame's CRC", offset=end)
    _check_crc(data, end, 0)
    return Frame(mtype, seq, parse_payload(bytes(data[HEADER_LEN:end - CRC.size]), 0))


class FrameDecoder:
    """Turn a byte stream, in any pieces, into frames and rejections.

    `feed` never raises for bad input: each item it returns is a `Frame` or a
    `FrameError` (the reason, the stream offset, the bytes discarded).  After
    a bad header or CRC only the two magic bytes are dropped and the search
    goes on, because a damaged length may have swallowed the next good frame.
    The buffer never holds more than one frame's worth (`MAX_FRAME`) beyond
    the piece being fed: lengths are checked against the bound first.
    """

    def __init__(self, *, max_payload: int = MAX_PAYLOAD):
        self.max_payload = max_payload
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._garbage = 0  # bytes skipped since the last report
        self._garbage_at: int | None = None

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | FrameError]:
        self._buf += data
        out: list[Frame | FrameError] = []
        while True:
            item = self._next()
            if item is None:
                break
            out.append(item)
        if self._garbage >= GARBAGE_REPORT_BYTES:
            out.append(self._garbage_report())
        return out

    def expire(self) -> list[Frame | FrameError]:
        """Give up on a partial frame that stopped arriving (its length was probably damaged).

        The link calls this when bytes have sat in the buffer too long; the
        magic is dropped and whatever follows is searched for frames again.
        """
        out: list[Frame | FrameError] = []
        if not self._buf:
            if self._garbage:
                out.append(self._garbage_report())
            return out
        if self._buf[:2] == MAGIC:
            out.append(TruncatedFrame(f"frame stopped after {len(self._buf)} bytes; dropped",
                                      offset=self._offset, skipped=2))
            self._drop(2)
        else:
            self._skip_garbage(len(self._buf))
        out.extend(self.feed(b""))
        if self._garbage:
            out.append(self._garbage_report())
        return out

    # -- internals -------------------------------------------------------------
    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def _skip_garbage(self, n: int) -> None:
        if self._garbage_at is None:
            self._garbage_at = self._offset
        self._garbage += n
        self._drop(n)

    def _garbage_report(self) -> BadMagic:
        err = BadMagic(f"{self._garbage} byte(s) without a frame magic skipped", offset=self._garbage_at,
                       skipped=self._garbage)
        self._garbage, self._garbage_at = 0, None
        return err

    def _next(self) -> Frame | FrameError | None:
        buf = self._buf
        i = buf.find(MAGIC)
        if i < 0:
            keep = 1 if buf[-1:] == MAGIC[:1] else 0  # may be the first half of a magic
            if len(buf) - keep:
                self._skip_garbage(len(buf) - keep)
            return None
        if i > 0:
            self._skip_garbage(i)
        if self._garbage:
            return self._garbage_report()
        if len(buf) < HEADER_LEN:
            return None
        start = self._offset
        try:
            _mtype, _seq, length = _check_header(buf, start, self.max_payload)
            end = HEADER_LEN + length + CRC.size
            if len(buf) < end:
                return None
            _check_crc(buf, end, start)
        except FrameError as e:
            e.skipped = 2
            self._drop(2)
            return e
        raw = bytes(buf[HEADER_LEN:end - CRC.size])
        self._drop(end)
        try:
            return Frame(_mtype, _seq, parse_payload(raw, start))
        except BadPayload as e:
            e.skipped = end
            return e


# --------------------------------------------------------------------------- messages
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = True


def _kind(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _int(lo: int = -(2**63), hi: int = 2**63 - 1) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not int:
            return f"expected an integer, found {_kind(v)}"
        if not lo <= v <= hi:
            return f"{v} outside {lo}..{hi}"
        return None

    return check


def _str(max_len: int = MAX_NAME, *, empty: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"expected a string, found {_kind(v)}"
        if len(v) > max_len:
            return f"string of {len(v)} characters exceeds {max_len}"
        if not v and not empty:
            return "must not be empty"
        return None

    return check


def _hex(length: int) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str) or len(v) != length or any(c not in "0123456789abcdef" for c in v):
            return f"expected {length} lower-case hex digits"
        return None

    return check


def _const(value: Any) -> Check:
    return lambda v: None if v == value else f"expected {value!r}, found {v!r}"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected true or false, found {_kind(v)}"


def _nullable(inner: Check) -> Check:
    return lambda v: None if v is None else inner(v)


def _object_or_null(v: Any) -> str | None:
    return None if v is None or isinstance(v, dict) else f"expected an object or null, found {_kind(v)}"


def _record(schema: Mapping[str, Field]) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, dict):
            return f"expected an object, found {_kind(v)}"
        return _check_fields(schema, v)

    return check


def _list_of(inner: Check, max_items: int) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"expected an array, found {_kind(v)}"
        if len(v) > max_items:
            return f"{len(v)} items exceed the bound of {max_items}"
        for i, item in enumerate(v):
            why = inner(item)
            if why:
                return f"item {i}: {why}"
        return None

    return check


def _check_fields(schema: Mapping[str, Field], payload: Mapping[str, Any]) -> str | None:
    for name, f in schema.items():
        if name not in payload:
            if f.required:
                return f"field {name!r} is missing"
            continue
        why = f.check(payload[name])
        if why:
            return f"field {name!r}: {why}"
    return None


SEQ = _int(1, MAX_SEQ)
U64 = _int(0, 2**63 - 1)
I64 = _int()
REPLY = {"reply_to": Field(SEQ)}

def _device_id(v: Any) -> str | None:
    # Device ids become directory names on the dock and the server: the sealed format's rule, no paths.
    return None if isinstance(v, str) and DEVICE_ID_RE.match(v) else f"{str(v)[:80]!r} is not a device id"


def _segment_name(v: Any) -> str | None:
    return None if is_segment_name(v) else f"{str(v)[:140]!r} is not a plain segment file name"


SEGMENT_ENTRY = {
    "name": Field(_segment_name),
    "size": Field(U64),
    "sequence": Field(_int(1, 2**63 - 1)),
    "segment_hash": Field(_hex(64)),
    "clip_id": Field(_str(64)),
    "segment_index": Field(U64),
}

STEALTH_CHANGES_MAX = 100
STEALTH_CHANGE = {
    "utc_us": Field(I64),
    "on": Field(_bool),
    "cause": Field(_str(64)),
}

HELLO_FROM_DOCK = {
    "role": Field(_const("dock")),
    "protocol": Field(_int(1, 255)),
    "dock_id": Field(_str()),
}
HELLO_FROM_CAMERA = {
    **REPLY,
    "role": Field(_const("camera")),
    "protocol": Field(_int(1, 255)),
    "device_id": Field(_device_id),
    "firmware": Field(_str()),
    "battery_pct": Field(_nullable(_int(0, 100))),
    "storage_free_bytes": Field(U64),
    "storage_used_bytes": Field(U64),
    "segments": Field(U64),
    "clock_utc_us": Field(I64),
    "clock_sync_utc_us": Field(I64, required=False),
    "clock_offset_us": Field(I64, required=False),
    # Added without a new version (older cameras leave them out, older docks ignore them):
    "battery_minutes_left": Field(_nullable(_int(0, 100_000)), required=False),
    "battery_charging": Field(_nullable(_bool), required=False),
    "stealth_changes": Field(_list_of(_record(STEALTH_CHANGE), STEALTH_CHANGES_MAX), required=False),
}

SCHEMAS: dict[MessageType, Mapping[str, Field]] = {
    MessageType.BYE: {"reason": Field(_str(MAX_TEXT, empty=True), required=False)},
    MessageType.ERROR: {"code": Field(_str(64)), "message": Field(_str(MAX_TEXT, empty=True)),
                        "reply_to": Field(_nullable(SEQ), required=False)},
    MessageType.CLOCK_PROBE: {"dock_utc_us": Field(I64)},
    MessageType.CLOCK_REPLY: {**REPLY, "dock_utc_us": Field(I64), "camera_utc_us": Field(I64)},
    MessageType.CLOCK_SET: {"offset_us": Field(I64), "sync_utc_us": Field(_int(1)), "rtt_us": Field(U64)},
    MessageType.CLOCK_ACK: {**REPLY, "offset_us": Field(I64), "sync_utc_us": Field(_int(1))},
    MessageType.LIST: {"after": Field(_str(MAX_NAME, empty=True)), "limit": Field(_int(1, PAGE_MAX), required=False)},
    MessageType.SEGMENTS: {**REPLY, "segments": Field(_list_of(_record(SEGMENT_ENTRY), PAGE_MAX)),
                           "more": Field(_bool), "damaged": Field(U64)},
    MessageType.FREE: {"name": Field(_str(MAX_NAME)), "receipt": Field(_object_or_null)},
    MessageType.FREED: {**REPLY, "name": Field(_str(MAX_NAME)), "freed": Field(_bool),
                        "code": Field(_str(64)), "reason": Field(_str(MAX_TEXT, empty=True))},
}


def schema_for(mtype: MessageType, payload: Mapping[str, Any]) -> Mapping[str, Field]:
    """The fields a message must carry.  HELLO has two forms, told apart by `role`."""
    if mtype is MessageType.HELLO:
        role = payload.get("role")
        if role == "dock":
            return HELLO_FROM_DOCK
        if role == "camera":
            return HELLO_FROM_CAMERA
        raise BadMessage(f"HELLO field 'role' must be 'dock' or 'camera', found {role!r}")
    return SCHEMAS[mtype]


def check_message(mtype: MessageType, payload: Mapping[str, Any]) -> None:
    """Raise BadMessage naming the first field that does not fit `mtype`.  Unknown fields are ignored
    (a later minor revision may add some without a new protocol version)."""
    why = _check_fields(schema_for(mtype, payload), payload)
    if why:
        raise BadMessage(f"{MessageType(mtype).name}: {why}")


@dataclass(frozen=True)
class Message:
    """A frame whose fields have been checked against its type."""

    type: MessageType
    seq: int
    fields: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def reply_to(self) -> int | None:
        return self.fields.get("reply_to")


def parse_message(frame: Frame) -> Message:
    check_message(frame.type, frame.payload)
    return Message(frame.type, frame.seq, frame.payload)


def encode_message(mtype: MessageType, seq: int, fields: Mapping[str, Any]) -> bytes:
    """Check, then frame: a sender cannot put on the wire what a receiver would refuse."""
    check_message(MessageType(mtype), fields)
    return encode_frame(mtype, seq, fields)


# --------------------------------------------------------------------------- sequence numbers
class SequenceGuard:
    """Sequence numbers received on one connection must only go up.

    This refuses duplicated and stale frames (a line that echoes, a reply
    that arrives after its request was retried).  It is not authentication:
    the camera's safety rests on receipts, which a dock cannot forge.
    """

    def __init__(self) -> None:
        self.last = 0

    def check(self, seq: int) -> None:
        if seq <= self.last:
            raise ReplayedFrame(f"sequence number {seq} is not above the last one received ({self.last})")
        self.last = seq

    def restart(self, seq: int) -> None:
        """A HELLO opens a new session: its number is the new floor."""
        self.last = seq


class SequenceCounter:
    """The numbers one end puts on its frames: 1, 2, 3, ... for the life of the connection."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        if self._last >= MAX_SEQ:
            raise BadMessage(f"sequence numbers exhausted ({MAX_SEQ}); reconnect")
        self._last += 1
        return self._last


# --------------------------------------------------------------------------- typed views
@dataclass(frozen=True)
class SegmentEntry:
    """One sealed segment as the camera lists it."""

    name: str
    size: int
    sequence: int
    segment_hash: str  # hex
    clip_id: str
    segment_index: int

    def to_fields(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_fields(cls, d: Mapping[str, Any]) -> "SegmentEntry":
        return cls(**{k: d[k] for k in SEGMENT_ENTRY})


@dataclass(frozen=True)
class CameraHello:
    """What a camera says about itself when the dock greets it."""

    device_id: str
    firmware: str
    battery_pct: int | None
    storage_free_bytes: int
    storage_used_bytes: int
    segments: int
    clock_utc_us: int
    clock_sync_utc_us: int = 0
    clock_offset_us: int = 0
    protocol: int = VERSION
    battery_minutes_left: int | None = None
    battery_charging: bool | None = None
    stealth_changes: list[dict[str, Any]] | None = None

    @classmethod
    def from_message(cls, m: Message) -> "CameraHello":
        if m.type is not MessageType.HELLO or m.get("role") != "camera":
            raise BadMessage(f"expected a camera HELLO, found {m.type.name}")
        return cls(**{k: m.fields[k] for k in cls.__dataclass_fields__ if k in m.fields})

    def to_fields(self) -> dict[str, Any]:
        fields = {"role": "camera", **asdict(self)}
        # Sent only when known, so an older dock's HELLO check (which ignores unknown fields) sees what it did.
        for optional in ("battery_minutes_left", "battery_charging", "stealth_changes"):
            if fields[optional] is None:
                del fields[optional]
        return fields


def page(entries: Iterable[SegmentEntry], after: str, limit: int = PAGE_MAX) -> tuple[list[SegmentEntry], bool]:
    """The entries with names after `after` (names sort by sequence), at most `limit`, and whether more follow.

    A name cursor rather than an index: segments freed between two pages do
    not make the next page skip any.
    """
    rest = sorted((e for e in entries if e.name > after), key=lambda e: e.name)
    limit = max(1, min(limit, PAGE_MAX))
    return rest[:limit], len(rest) > limit


__all__ = [
    "SEGMENT_NAME_RE", "is_segment_name",
    "CRC", "HEADER", "HEADER_LEN", "MAGIC", "MAX_FRAME", "MAX_PAYLOAD", "PAGE_MAX", "VERSION",
    "CameraHello", "Frame", "FrameDecoder", "Message", "MessageType", "SegmentEntry", "SequenceCounter",
    "SequenceGuard", "check_message", "decode_frame", "encode_frame", "encode_message", "page",
    "parse_message", "parse_payload",
]
