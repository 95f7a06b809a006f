"""tus 1.0.0 resumable uploads (core, creation, checksum, termination) at /tus/.

Published protocol, so that clients we did not write can upload evidence
(https://tus.io/protocols/resumable-upload; our profile of it, with the
metadata keys and receipts, is docs/upload-protocol.md).

The invariant everything here serves: **the offset the server reports is
the number of bytes it has durably written.**  A PATCH body goes to the
upload's partial store in bounded pieces (a file on this node, or pieces in
the fleet's bucket: partials.py); the bytes are made durable (fsync, or PUT
and answered), and only then is the new offset committed to the database,
and only if it is still the offset this PATCH began at.  A chunk whose Upload-Checksum
fails is cut off again and the offset stays where it was (460).  A
connection that drops mid-body keeps what arrived when no checksum was
promised (tus: the server should keep what it received), and nothing of it
when one was.

Everything that comes from outside is checked before use: header lengths
and syntax, every metadata value, the upload id (hex only, and never derived
from anything the client sent), so no request can name a path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Callable

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..sealed.errors import KeyFileError, UnknownDevice
from ..sealed.layout import DEVICE_ID_RE
from ..sealed.reader import StreamVerifier
from .db import SegmentRecord, UploadRecord
from .errors import (
    BadRequest,
    Conflict,
    InsufficientStorage,
    ChecksumMismatch,
    ForkRejected,
    NotFound,
    OffsetMismatch,
    ServerError,
    StoreError,
    TooLarge,
    UnsupportedMediaType,
    VerificationFailed,
)
from .ingest import utc_now
from .partials import PartialGap, PartialWriter
from .service import UPLOAD_ID_RE, EvidenceService, is_space_error

log = logging.getLogger("bwv.server")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,checksum,termination,expiration"
CHECKSUMS: dict[str, Callable[[], "hashlib._Hash"]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
RECEIPT_HEADER = "Bwv-Receipt"
MAX_CONCURRENT_HEADER = "Bwv-Max-Concurrent-Uploads"

MAX_METADATA_HEADER = 4096
MAX_METADATA_PAIRS = 32
MAX_METADATA_VALUE = 1024  # decoded bytes
MAX_FILENAME = 255
WRITE_PIECE = 1024 * 1024  # bytes gathered before a batch goes to the worker: about twice this is an upload's buffer
MAX_BATCH_PIECES = 256  # and never more pieces than one pwritev takes (IOV_MAX is 1024 on Linux)

METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
FILENAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.bwv\Z")
SEQUENCE_RE = re.compile(r"^[1-9][0-9]{0,18}\Z")
HASH_RE = re.compile(r"^[0-9a-fA-F]{64}\Z")
NUMBER_RE = re.compile(r"^[0-9]{1,20}\Z")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
REQUIRED_METADATA = ("filename", "device_id", "sequence", "segment_hash")


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class SegmentMetadata:
    """The required tus metadata of a segment upload, checked."""

    filename: str
    device_id: str
    sequence: int
    segment_hash: str  # lowercase hex


def parse_metadata(header: str | None) -> dict[str, str]:
    """Decode an Upload-Metadata header: ``key base64value`` pairs, comma separated, all bounded."""
    if header is None or not header.strip():
        raise BadRequest(f"Upload-Metadata is required, with the keys {', '.join(REQUIRED_METADATA)}")
    if len(header) > MAX_METADATA_HEADER:
        raise BadRequest(f"Upload-Metadata of {len(header)} characters is over the {MAX_METADATA_HEADER} allowed")
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise BadRequest(f"Upload-Metadata has {len(pairs)} pairs, more than the {MAX_METADATA_PAIRS} allowed")
    out: dict[str, str] = {}
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise BadRequest(f"Upload-Metadata pair {pair.strip()[:40]!r} is not 'key base64value'")
        key = parts[0]
        if not METADATA_KEY_RE.match(key):
            raise BadRequest(f"Upload-Metadata key {key[:40]!r} is not 1-64 letters, digits, '_', '.' or '-'")
        if key in out:
            raise BadRequest(f"Upload-Metadata key {key!r} appears twice")
        raw = parts[1] if len(parts) == 2 else ""
        try:
            value = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"Upload-Metadata value of {key!r} is not base64") from None
        if len(value) > MAX_METADATA_VALUE:
            raise BadRequest(f"Upload-Metadata value of {key!r} is {len(value)} bytes, over {MAX_METADATA_VALUE}")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"Upload-Metadata value of {key!r} is not UTF-8 text") from None
        if CONTROL_RE.search(text):
            raise BadRequest(f"Upload-Metadata value of {key!r} contains control characters")
        out[key] = text
    return out


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in sorted(metadata.items()))


def check_segment_metadata(metadata: dict[str, str]) -> SegmentMetadata:
    """The required keys, each checked: no value can name a path, a foreign sequence or a bad hash."""
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise BadRequest(f"Upload-Metadata lacks {', '.join(missing)} (required: {', '.join(REQUIRED_METADATA)})")
    filename = metadata["filename"]
    if ("/" in filename or "\\" in filename or ".." in filename or len(filename) > MAX_FILENAME
            or not FILENAME_RE.match(filename)):
        raise BadRequest(
            f"filename {filename[:80]!r} must be a plain file name ending in .bwv: letters, digits, '.', '_' "
            f"or '-', no path separators, no '..', at most {MAX_FILENAME} characters"
        )
    device_id = metadata["device_id"]
    if not DEVICE_ID_RE.match(device_id):
        raise BadRequest(f"device_id {device_id[:80]!r} is not 1-64 letters, digits, '.', '_' or '-'")
    sequence_text = metadata["sequence"]
    if not SEQUENCE_RE.match(sequence_text) or int(sequence_text) >= 2**63:
        raise BadRequest(f"sequence {sequence_text[:40]!r} is not a positive decimal integer below 2^63")
    segment_hash = metadata["segment_hash"]
    if not HASH_RE.match(segment_hash):
        raise BadRequest(f"segment_hash {segment_hash[:80]!r} is not 64 hexadecimal characters")
    return SegmentMetadata(filename, device_id, int(sequence_text), segment_hash.lower())


def parse_number(name: str, text: str | None) -> int:
    if text is None:
        raise BadRequest(f"{name} header is required")
    text = text.strip()
    if not NUMBER_RE.match(text):
        raise BadRequest(f"{name} {text[:40]!r} is not a non-negative decimal integer")
    return int(text)


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` (None when absent)."""
    if header is None:
        return None
    alg, _, b64 = header.strip().partition(" ")
    factory = CHECKSUMS.get(alg.lower())
    if factory is None:
        raise BadRequest(f"checksum algorithm {alg[:20]!r} is not supported; use one of {', '.join(CHECKSUMS)}")
    try:
        digest = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Upload-Checksum digest is not base64") from None
    if len(digest) != factory().digest_size:
        raise BadRequest(f"Upload-Checksum {alg} digest is {len(digest)} bytes, expected {factory().digest_size}")
    return alg.lower(), digest


def check_upload_id(text: str) -> str:
    if not UPLOAD_ID_RE.match(text):
        raise BadRequest(f"upload id {text[:80]!r} is not 32 lowercase hex characters")
    return text


def receipt_header(segment: SegmentRecord) -> str:
    return base64.b64encode(segment.receipt.encode()).decode("ascii")


# --------------------------------------------------------------------------- writing
class _BodyCut(Exception):
    """The PATCH body stopped before its end: the connection dropped or stalled."""


def _take(writer: PartialWriter, pos: int, pieces: list[bytes], digest: "hashlib._Hash | None",
          stream: StreamVerifier) -> None:
    """One batch of a PATCH body, in a worker thread: into the chunk's checksum, into the segment's
    verifier, then into the partial store at `pos`."""
    for piece in pieces:
        if digest is not None:
            digest.update(piece)
        stream.feed(piece)
    writer.write(pieces, pos)


def _settle(inflight: "Future[None] | None") -> None:
    """Wait (blocking, at most one batch) for a batch still in the worker; its failure is already
    being handled, or is raised by the wait on it that the normal path makes."""
    if inflight is not None:
        wait([inflight])


# --------------------------------------------------------------------------- handlers
class TusEndpoint:
    """The aiohttp handlers of the tus protocol, over one EvidenceService."""

    def __init__(self, service: EvidenceService):
        self.service = service
        # Checksums, verification and writes of PATCH bodies: one batch per upload at a time, so
        # one thread per upload slot (started only as needed).
        self._body_workers = ThreadPoolExecutor(max_workers=max(1, service.config.max_concurrent),
                                                thread_name_prefix="tus-body")

    @property
    def config(self):
        return self.service.config

    def protocol_headers(self) -> dict[str, str]:
        return {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            "Tus-Max-Size": str(self.config.max_upload_bytes),
            MAX_CONCURRENT_HEADER: str(self.config.max_concurrent),
        }

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=self.protocol_headers())

    # ---------------------------------------------------------------- creation
    async def create(self, request: web.Request) -> web.Response:
        dock: str = request["dock"]
        if "Upload-Defer-Length" in request.headers:
            raise BadRequest("Upload-Defer-Length is not supported: send Upload-Length (the segment's size)")
        if request.body_exists:
            raise BadRequest("creation-with-upload is not supported: create with an empty body, then PATCH")
        length = parse_number("Upload-Length", request.headers.get("Upload-Length"))
        if length < 1:
            raise BadRequest("Upload-Length must be at least 1")
        if length > self.config.max_upload_bytes:
            raise TooLarge(
                f"Upload-Length {length} exceeds this server's maximum of {self.config.max_upload_bytes} bytes "
                "(Tus-Max-Size)"
            )
        metadata = parse_metadata(request.headers.get("Upload-Metadata"))
        meta = check_segment_metadata(metadata)
        request["note"] = f"{meta.device_id} #{meta.sequence} {length} B"
        try:
            self.service.registry.public_key(meta.device_id)
        except UnknownDevice:
            raise VerificationFailed(f"unknown device: {meta.device_id!r} is not enrolled on this server") from None
        except KeyFileError as e:
            raise StoreError(f"the device registry could not be read: {e}") from None

        held = self.service.db.segment(meta.segment_hash)
        if held is not None:
            if (held.device_id, held.sequence) != (meta.device_id, meta.sequence):
                raise Conflict(
                    f"segment {meta.segment_hash[:16]}... is held as {held.device_id} #{held.sequence}, "
                    f"not {meta.device_id} #{meta.sequence}"
                )
            request["note"] += " already held"
            return web.json_response(
                {"held": True, "segment": held.public()},
                status=200,
                headers={RECEIPT_HEADER: receipt_header(held)},
            )
        deleted = self.service.db.tombstone_receipt(meta.segment_hash)
        if deleted is not None and deleted[:2] == (meta.device_id, meta.sequence) and deleted[2]:
            # Taken in once, then deleted by the retention policy.  A camera that still holds it (it
            # never got to free it) must be able to: its original receipt says the server had it.
            request["note"] += f" deleted by policy on {deleted[3]}"
            return web.json_response(
                {"held": False, "deleted_by_policy": deleted[3],
                 "segment": {"device_id": deleted[0], "sequence": deleted[1], "segment_hash": meta.segment_hash}},
                status=200,
                headers={RECEIPT_HEADER: base64.b64encode(deleted[2].encode()).decode("ascii")},
            )
        rival = self.service.db.segment_at(meta.device_id, meta.sequence)
        if rival is not None:
            raise Conflict(
                f"chain fork: {meta.device_id} #{meta.sequence} is already held as a different segment "
                f"({rival.segment_hash[:16]}...), not {meta.segment_hash[:16]}..."
            )
        stone = self.service.db.tombstone_at(meta.device_id, meta.sequence)
        if stone is not None:  # said before the bytes are sent, not after (ingest would refuse them anyway)
            raise Conflict(
                f"chain fork: {meta.device_id} #{meta.sequence} was held as a different segment "
                f"({stone[0][:16]}...), deleted by the retention policy on {stone[1]}; not {meta.segment_hash[:16]}..."
            )
        self.service.check_space(length)

        upload_id = await asyncio.to_thread(self.service.new_upload_file)
        now = utc_now()
        record = UploadRecord(
            id=upload_id, dock=dock, metadata=metadata, device_id=meta.device_id, sequence=meta.sequence,
            segment_hash=meta.segment_hash, length=length, created_utc=now, updated_utc=now,
        )
        try:
            await asyncio.to_thread(self.service.db.create_upload, record)
        except BaseException:
            await asyncio.to_thread(self.service.partials.remove, upload_id)
            raise
        request["note"] += f" upload {upload_id} created"
        return web.Response(status=201, headers={"Location": f"/tus/{upload_id}", "Upload-Offset": "0",
                                                 "Upload-Expires": self._expires(record)})

    # ---------------------------------------------------------------- lookup
    def _own_upload(self, request: web.Request) -> UploadRecord:
        upload_id = check_upload_id(request.match_info["upload_id"])
        upload = self.service.db.upload(upload_id)
        if upload is None or upload.dock != request["dock"]:
            raise NotFound(f"no upload {upload_id} for dock {request['dock']} (finished and failed, terminated, "
                           "or never created)")
        return upload

    def _held(self, upload: UploadRecord) -> SegmentRecord:
        held = self.service.db.segment(upload.segment_hash)
        if held is None:
            raise StoreError(f"upload {upload.id} is complete but segment {upload.segment_hash} is not held")
        return held

    # ---------------------------------------------------------------- HEAD
    async def head(self, request: web.Request) -> web.Response:
        upload = self._own_upload(request)
        await self.service.settled(upload.id)
        upload = self._own_upload(request)
        headers = {
            "Upload-Offset": str(upload.offset),
            "Upload-Length": str(upload.length),
            "Upload-Metadata": encode_metadata(upload.metadata),
            "Cache-Control": "no-store",
        }
        if upload.complete:
            headers[RECEIPT_HEADER] = receipt_header(self._held(upload))
        else:
            headers["Upload-Expires"] = self._expires(upload)
        request["note"] = f"{upload.device_id} #{upload.sequence} at {upload.offset}/{upload.length}"
        return web.Response(status=200, headers=headers)

    # ---------------------------------------------------------------- DELETE
    async def delete(self, request: web.Request) -> web.Response:
        upload = self._own_upload(request)
        async with self.service.upload_lock(upload.id):
            await asyncio.to_thread(
                self.service.db.delete_upload if upload.complete else self.service.discard, upload.id
            )
        request["note"] = f"{upload.device_id} #{upload.sequence} upload terminated"
        return web.Response(status=204)

    # ---------------------------------------------------------------- PATCH
    async def patch(self, request: web.Request) -> web.Response:
        upload = self._own_upload(request)
        if request.content_type != OFFSET_CONTENT_TYPE:
            raise UnsupportedMediaType(f"PATCH body must be {OFFSET_CONTENT_TYPE}, not {request.content_type!r}")
        offset = parse_number("Upload-Offset", request.headers.get("Upload-Offset"))
        checksum = parse_checksum(request.headers.get("Upload-Checksum"))
        declared = request.content_length
        request["note"] = f"{upload.device_id} #{upload.sequence}"
        async with self.service.streaming_slot(), self.service.upload_lock(upload.id):
            upload = self._own_upload(request)  # again, under the lock: it may have moved on meanwhile
            if upload.complete:
                if offset == upload.length and not declared:
                    request["note"] += " already complete"
                    return self._done(upload, self._held(upload))
                raise OffsetMismatch(f"upload {upload.id} is complete ({upload.length} bytes); nothing more to send")
            if offset != upload.offset:
                raise OffsetMismatch(
                    f"Upload-Offset {offset} does not match the {upload.offset} bytes this server holds; "
                    "HEAD the upload for its offset and send from there"
                )
            if declared is not None and offset + declared > upload.length:
                raise TooLarge(
                    f"a body of {declared} bytes at offset {offset} would run past Upload-Length {upload.length}"
                )
            metrics = self.service.metrics
            try:
                new_offset = await self._receive(request, upload, checksum)
            except StoreError:
                metrics.dependency_errors.labels("upload_area").inc()
                raise
            metrics.bytes_received.inc(new_offset - offset)
            request["note"] += f" +{new_offset - offset} B at {new_offset}/{upload.length}"
            if new_offset < upload.length:
                return web.Response(status=204, headers={"Upload-Offset": str(new_offset),
                                                         "Upload-Expires": self._expires(None)})
            upload = self._own_upload(request)
            try:
                with metrics.timing_receipt():
                    ingested = await asyncio.to_thread(self.service.complete, upload)
            except ServerError as e:
                if isinstance(e, ForkRejected):
                    metrics.verification_failures.labels("fork").inc()
                elif isinstance(e, VerificationFailed):
                    metrics.verification_failures.labels("verification").inc()
                elif isinstance(e, StoreError):
                    metrics.dependency_errors.labels("object_store").inc()
                request["note"] += f" rejected: {e.reason}"
                raise
            metrics.segments.labels("duplicate" if ingested.duplicate else "new").inc()
            seg = ingested.segment
            request["note"] += (" already held" if ingested.duplicate
                                else f" ingested, chain {seg.chain_status}, hash {seg.segment_hash[:16]}")
            return self._done(upload, seg)

    def _expires(self, upload: UploadRecord | None) -> str:
        """Upload-Expires: when this unfinished upload is discarded unless more of it arrives (RFC 9110
        date); None: one whose offset was committed just now."""
        return format_datetime(self.service.upload_expires(upload.updated_utc if upload else utc_now()), usegmt=True)

    def _done(self, upload: UploadRecord, seg: SegmentRecord) -> web.Response:
        return web.Response(status=204, headers={"Upload-Offset": str(upload.length), RECEIPT_HEADER: receipt_header(seg)})

    async def _receive(self, request: web.Request, upload: UploadRecord, checksum: tuple[str, bytes] | None) -> int:
        """Stream the body to the partial store; return the new durable offset (already committed).

        Two things go on at once, on the two sides of a thread: the event loop takes the body off
        the socket, a worker (`_take`) checksums, verifies and writes the batch before.  The two
        hashes and the CRC release the GIL, so on a machine of a few cores the reading and the
        checking overlap instead of taking turns, and the pieces go to the store as aiohttp handed
        them over (locally one pwritev, no joining copy).  Nothing about the outcome changes: every
        byte is checked, and the offset moves only once the last batch is durable."""
        offset = upload.offset
        digest = CHECKSUMS[checksum[0]]() if checksum else None
        # Bytes past the recorded offset were never acknowledged: the writer cuts them away first.
        writer = await asyncio.to_thread(self.service.partials.open_writer, upload.id, offset)
        inflight: Future[None] | None = None
        try:
            # Verified as it arrives: the body goes into the segment's verifier here, so the file is
            # not read back at the end.  A copy: a chunk that is discarded must not stay in it.
            try:
                stream = await asyncio.to_thread(self.service.stream_state, upload.id, offset)
            except PartialGap as gap:  # pieces lost from the bucket: go back to where they reach
                await asyncio.to_thread(self.service.fall_back, gap)
                raise OffsetMismatch(gap.reason) from None
            pos = offset  # where the next batch goes
            cut: str | None = None
            batch: list[bytes] = []
            batched = 0
            try:
                while True:
                    piece = await self._read_piece(request)
                    if not piece:
                        break
                    if pos + batched + len(piece) > upload.length:
                        raise TooLarge(f"the body runs past Upload-Length {upload.length}; chunk discarded")
                    batch.append(piece)
                    batched += len(piece)
                    if batched >= WRITE_PIECE or len(batch) >= MAX_BATCH_PIECES:
                        if inflight is not None:
                            await asyncio.wrap_future(inflight)  # its OSError, if any, comes out here
                        inflight = self._body_workers.submit(_take, writer, pos, batch, digest, stream)
                        pos += batched
                        batch, batched = [], 0
            except _BodyCut as e:
                cut = str(e)
            if inflight is not None:
                done, inflight = inflight, None
                await asyncio.wrap_future(done)
            if batch:
                await asyncio.wrap_future(self._body_workers.submit(_take, writer, pos, batch, digest, stream))
                pos += batched
            if checksum is not None and (cut or digest.digest() != checksum[1]):
                await asyncio.to_thread(writer.cut_back, offset)
                if cut:
                    raise BadRequest(f"{cut}; the chunk had an Upload-Checksum, so none of it was kept")
                raise ChecksumMismatch(
                    f"the chunk's {checksum[0]} does not match its Upload-Checksum; it was discarded, "
                    f"the offset stays at {offset}"
                )
            await asyncio.to_thread(writer.sync)
        except (TooLarge, StoreError):
            _settle(inflight)
            await asyncio.to_thread(writer.cut_back, offset)
            raise
        except OSError as e:
            _settle(inflight)
            await asyncio.to_thread(writer.cut_back, offset)
            if is_space_error(e):
                raise InsufficientStorage(f"the upload area is full: {e.strerror}") from None
            raise StoreError(f"cannot write upload {upload.id}: {e.strerror}") from None
        finally:
            _settle(inflight)  # the worker is done with the writer before it is closed, whatever happened
            writer.close()
        if pos != offset:
            await asyncio.to_thread(self.service.db.set_upload_offset, upload.id, pos, utc_now(), expected=offset)
            self.service.keep_stream_state(upload.id, stream)
        if cut:
            log.info("upload %s (%s #%d): %s; kept %d bytes, offset now %d", upload.id, upload.device_id,
                     upload.sequence, cut, pos - offset, pos)
            raise BadRequest(f"{cut}; {pos - offset} bytes kept, offset now {pos}")
        return pos

    async def _read_piece(self, request: web.Request) -> bytes:
        """The next piece of the body as aiohttp buffered it (readchunk: no slicing, no joining)."""
        try:
            while True:
                piece, end_of_http_chunk = await asyncio.wait_for(request.content.readchunk(),
                                                                  self.config.idle_timeout_s)
                if piece or not end_of_http_chunk:  # (b"", True) only marks a chunk boundary
                    return piece
        except TimeoutError:
            raise _BodyCut(f"no body bytes for {self.config.idle_timeout_s:g} s") from None
        except (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError, EOFError) as e:
            raise _BodyCut(f"the request body was cut off ({type(e).__name__})") from None


__all__ = [
    "SegmentMetadata",
    "TusEndpoint",
    "check_segment_metadata",
    "encode_metadata",
    "parse_checksum",
    "parse_metadata",
]
