"""Writing sealed segments, and sealing what survived a power cut.

A `SegmentWriter` writes the preamble when the segment opens (with the
segment key already wrapped to the server, so the key itself never touches
storage), appends one authenticated-encrypted chunk per `append`, and on
`seal` appends the end chunk and the signed trailer and gives the file its
`.bwv` name.  Until then the file is called `<device>-<sequence>.open`; its
bytes are at every moment a valid prefix of the sealed file, which is what
makes `recover_open_segment` possible.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .durable import durable_rename, fsync_dir
from .errors import MalformedSegment, SegmentError
from .keys import DeviceKey, ServerPublicKey
from .layout import (
    CHUNK_AAD_CONTEXT,
    CHUNK_HEAD_LEN,
    FIXED_HEAD_LEN,
    FLAG_RECOVERED,
    HASH_LEN,
    MAX_CHUNKS,
    MAX_PREAMBLE,
    TRAILER_FRAME_LEN,
    NONCE_PREFIX_LEN,
    RECORD_END,
    RECORD_INFO,
    RECORD_TYPES,
    SEGMENT_HASH_CONTEXT,
    SUITE_MLKEM768_X25519,
    TAG_LEN,
    TRAILER_FRAME_LEN,
    Preamble,
    Trailer,
    chunk_header,
    chunk_nonce,
    parse_chunk_header,
    parse_preamble,
    parse_trailer_frame,
    preamble_length,
    signed_message,
    wrap_info,
)

OPEN_SUFFIX = ".open"
DAMAGED_SUFFIX = ".damaged"
SEALED_SUFFIX = ".bwv"
DEFAULT_CHUNK_LIMIT = 1024 * 1024
WRITEBACK_BYTES = 16 * 1024 * 1024


def segment_file_name(device_id: str, sequence: int, suffix: str = SEALED_SUFFIX) -> str:
    return f"{device_id}-{sequence:010d}{suffix}"


def segment_hash(preamble_bytes: bytes, trailer: Trailer) -> bytes:
    """The hash that names a segment and that its successor links to.

    It covers the preamble and the whole trailer (whose fields include the
    SHA-256 of every chunk), so it commits to every byte of the file.
    """
    return hashlib.sha256(SEGMENT_HASH_CONTEXT + preamble_bytes + trailer.encode_frame()).digest()


def chunk_aad(preamble_bytes: bytes) -> bytes:
    return CHUNK_AAD_CONTEXT + hashlib.sha256(preamble_bytes).digest()


@dataclass(frozen=True)
class SealedInfo:
    """What the writer knows about a segment it has just sealed."""

    path: Path
    preamble: Preamble
    trailer: Trailer
    segment_hash: bytes

    @property
    def sequence(self) -> int:
        return self.preamble.sequence


class SegmentWriter:
    """Seal one segment incrementally; memory stays at one chunk whatever the segment's size."""

    def __init__(
        self,
        directory: Path,
        device: DeviceKey,
        server: ServerPublicKey,
        *,
        clip_id: uuid.UUID,
        segment_index: int,
        sequence: int,
        prev_hash: bytes,
        start_utc_us: int,
        start_mono_ns: int = 0,
        clock_sync_utc_us: int = 0,
        clock_offset_us: int = 0,
        chunk_limit: int = DEFAULT_CHUNK_LIMIT,
        suite: int = SUITE_MLKEM768_X25519,
    ):
        self.directory = Path(directory)
        self.device = device
        key = AESGCM.generate_key(bit_length=256)
        nonce_prefix = os.urandom(NONCE_PREFIX_LEN)
        unwrapped = Preamble(
            device_id=device.device_id,
            clip_id=clip_id,
            segment_index=segment_index,
            sequence=sequence,
            prev_hash=prev_hash,
            start_utc_us=start_utc_us,
            start_mono_ns=start_mono_ns,
            clock_sync_utc_us=clock_sync_utc_us,
            clock_offset_us=clock_offset_us,
            chunk_limit=chunk_limit,
            suite=suite,
            server_key_id=server.key_id,
            nonce_prefix=nonce_prefix,
            wrapped_key=b"\x00",
        )
        wrapped = server.wrap(suite, key, wrap_info(unwrapped))
        self.preamble = Preamble(**{**unwrapped.__dict__, "wrapped_key": wrapped})
        self.preamble_bytes = self.preamble.encode()
        self._aead = AESGCM(key)
        del key
        self._aad = chunk_aad(self.preamble_bytes)
        self._hash = hashlib.sha256()
        self._counter = 0
        self._body_len = 0
        # Reused buffers: one plaintext, two ciphertexts.  SHA-256 of chunk i runs in
        # a worker thread (hashlib releases the GIL) while chunk i+1 is encrypted, so
        # sealing costs about max(AES, SHA) rather than their sum; each ciphertext
        # buffer is reused only once its hash has been taken.
        self._plain = bytearray(chunk_limit + 1)
        self._cipher = [bytearray(chunk_limit + 1 + TAG_LEN) for _ in range(2)]
        self._hashed: list[Future | None] = [None, None]
        self._which = 0
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seal-hash")
        self._unsynced = 0
        self.open_path = self.directory / segment_file_name(device.device_id, sequence, OPEN_SUFFIX)
        self._fd: int | None = os.open(self.open_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._write(self.preamble_bytes)
        self.flush()  # the preamble is durable before any chunk can follow it
        fsync_dir(self.directory)

    @property
    def chunk_count(self) -> int:
        return self._counter

    @property
    def bytes_written(self) -> int:
        return len(self.preamble_bytes) + self._body_len

    def _write(self, *parts: bytes) -> None:
        assert self._fd is not None, "segment already sealed or aborted"
        total = sum(len(p) for p in parts)
        n = os.writev(self._fd, parts)
        if n != total:  # short write (disk full): finish it or fail loudly
            data = b"".join(parts)[n:]
            while data:
                data = data[os.write(self._fd, data) :]

    def append(self, record_type: int, payload: bytes = b"") -> None:
        """Encrypt and write `payload` as one or more chunks of `record_type`."""
        if record_type not in RECORD_TYPES or record_type == RECORD_END:
            raise ValueError(f"record type {record_type} cannot be appended")
        limit = self.preamble.chunk_limit
        if record_type == RECORD_INFO and len(payload) > limit:
            raise ValueError(f"an INFO record must fit in one chunk ({len(payload)} > {limit} bytes)")
        view = memoryview(payload)
        while True:
            piece, view = view[:limit], view[limit:]
            self._append_chunk(record_type, piece, last=False)
            if not view:
                return

    def _append_chunk(self, record_type: int, piece: bytes | memoryview, *, last: bool) -> None:
        # The END chunk may always be written, so a segment that reached the limit can still seal.
        if self._counter >= (MAX_CHUNKS if last else MAX_CHUNKS - 1):
            raise SegmentError(f"segment already holds {self._counter} chunks, the most one may hold")
        n = len(piece)
        plain = memoryview(self._plain)[: n + 1]
        plain[0] = record_type
        plain[1:] = piece
        k = self._which
        self._which ^= 1
        pending = self._hashed[k]
        if pending is not None:
            pending.result()  # buffer k's previous chunk is hashed (and any error surfaces here)
        ct = memoryview(self._cipher[k])[: n + 1 + TAG_LEN]
        self._aead.encrypt_into(chunk_nonce(self.preamble.nonce_prefix, self._counter, last), plain, self._aad, ct)
        head = chunk_header(len(ct), zlib.crc32(ct))
        self._hashed[k] = self._hasher.submit(self._hash_chunk, head, ct)
        self._write(head, ct)
        self._counter += 1
        self._body_len += len(head) + len(ct)
        self._unsynced += len(head) + len(ct)
        if self._unsynced >= WRITEBACK_BYTES:
            # Start writing back what is dirty without waiting, so the final fsync has little left.
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)  # type: ignore[arg-type]
            self._unsynced = 0

    def _hash_chunk(self, head: bytes, ct: memoryview) -> None:
        self._hash.update(head)
        self._hash.update(ct)

    def _body_digest(self) -> bytes:
        for pending in self._hashed:
            if pending is not None:
                pending.result()
        self._hasher.shutdown(wait=True)
        return self._hash.digest()

    def flush(self) -> None:
        """Put everything written so far on stable storage (the camera calls this at least once a second)."""
        assert self._fd is not None
        os.fsync(self._fd)

    def seal(self, end_utc_us: int, end_mono_ns: int = 0) -> SealedInfo:
        """Write the end chunk and the signed trailer, sync, and rename to `.bwv`."""
        self._append_chunk(RECORD_END, b"", last=True)
        trailer = Trailer(
            end_utc_us=end_utc_us,
            end_mono_ns=end_mono_ns,
            chunk_count=self._counter,
            body_len=self._body_len,
            body_sha256=self._body_digest(),
            flags=0,
        )
        trailer = _signed(trailer, self.device, self.preamble_bytes)
        self._write(trailer.encode_frame())
        self.flush()
        os.close(self._fd)  # type: ignore[arg-type]
        self._fd = None
        final = self.open_path.with_name(segment_file_name(self.preamble.device_id, self.preamble.sequence))
        durable_rename(self.open_path, final)
        return SealedInfo(final, self.preamble, trailer, segment_hash(self.preamble_bytes, trailer))

    def close_unsealed(self) -> None:
        """Close the file without sealing (tests simulating a crash; shutdown paths that will recover)."""
        self._hasher.shutdown(wait=True)
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


def _signed(trailer: Trailer, device: DeviceKey, preamble_bytes: bytes) -> Trailer:
    sig = device.sign(signed_message(preamble_bytes, trailer))
    return Trailer(**{**trailer.__dict__, "signature": sig})


def _quarantine(path: Path, why: str) -> None:
    """Set aside an open file that is damaged beyond what a power cut does.

    Never deleted (it may be evidence of tampering) and out of the way, so the
    camera can go on recording; `.damaged` files are listed and uploaded for analysis.
    """
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, target)
    fsync_dir(path.parent)
    raise SegmentError(f"open segment {why}; kept as {target.name} for analysis", path=str(path))


def _complete_trailer(
    f, preamble_bytes: bytes, body_end: int, count: int, body_hash: bytes, device: DeviceKey
) -> Trailer | None:
    """The trailer right after the last good chunk, if it is whole, matches and is this device's."""
    f.seek(body_end)
    frame = f.read(TRAILER_FRAME_LEN + 1)
    if len(frame) != TRAILER_FRAME_LEN:
        return None
    try:
        trailer = parse_trailer_frame(frame, body_end)
    except MalformedSegment:
        return None
    if (trailer.chunk_count, trailer.body_len, trailer.body_sha256) != (count, body_end - len(preamble_bytes), body_hash):
        return None
    try:
        device.public_key().verify(trailer.signature, signed_message(preamble_bytes, trailer))
    except InvalidSignature:
        return None
    return trailer


def recover_open_segment(path: Path, device: DeviceKey, *, end_utc_us: int | None = None) -> SealedInfo | None:
    """Seal what survived of a segment interrupted by a crash or power cut.

    Keeps every complete chunk whose frame checks (length in bounds, CRC of
    the ciphertext correct), cuts the file after the last such chunk, and
    seals it with the RECOVERED flag.  The camera cannot decrypt (it has no
    key), so the CRC is how it tells a torn write from a chunk that made it.

    Returns None, after removing the file, when not even the preamble made it
    to storage: the preamble is synced before any chunk is written, so such a
    file holds no footage and its sequence number was never used.
    """
    path = Path(path)
    with open(path, "r+b") as f:
        data_len = os.fstat(f.fileno()).st_size
        head = f.read(FIXED_HEAD_LEN)
        try:
            plen = preamble_length(head)
            rest = f.read(plen - FIXED_HEAD_LEN)
            preamble_bytes = head + rest
            preamble = parse_preamble(preamble_bytes)
        except MalformedSegment:
            f.close()
            if data_len <= MAX_PREAMBLE:  # a torn preamble: nothing after it can be durable
                os.unlink(path)
                fsync_dir(path.parent)
                return None
            _quarantine(path, "has a damaged preamble")
        if preamble.device_id != device.device_id:
            f.close()
            _quarantine(path, f"belongs to device {preamble.device_id!r}, not {device.device_id!r}")
        final = path.with_name(segment_file_name(preamble.device_id, preamble.sequence))
        if final.exists() and os.path.samefile(path, final):
            # The seal completed and the power cut came inside durable_rename (after the
            # link, before the unlink): the sealed file is whole; only drop the extra name.
            f.seek(data_len - TRAILER_FRAME_LEN)
            trailer = parse_trailer_frame(f.read(TRAILER_FRAME_LEN), data_len - TRAILER_FRAME_LEN)
            f.close()
            os.unlink(path)
            fsync_dir(path.parent)
            return SealedInfo(final, preamble, trailer, segment_hash(preamble_bytes, trailer))
        h = hashlib.sha256()
        good_end = plen
        count = 0
        pos = plen
        while True:
            fh = f.read(CHUNK_HEAD_LEN)
            if len(fh) < CHUNK_HEAD_LEN:
                break
            try:
                length, crc = parse_chunk_header(fh, pos, preamble.chunk_limit)
            except MalformedSegment:
                break
            ct = f.read(length)
            if len(ct) < length or zlib.crc32(ct) != crc:
                break
            h.update(fh)
            h.update(ct)
            count += 1
            pos += CHUNK_HEAD_LEN + length
            good_end = pos
        complete = _complete_trailer(f, preamble_bytes, good_end, count, h.digest(), device)
        if complete is not None:
            # The seal finished (trailer synced) and only the rename was lost: keep the
            # device's own trailer rather than relabel a whole segment as recovered.
            f.close()
            durable_rename(path, final)
            return SealedInfo(final, preamble, complete, segment_hash(preamble_bytes, complete))
        f.truncate(good_end)
        if end_utc_us is None:
            end_utc_us = max(preamble.start_utc_us, int(os.stat(path).st_mtime * 1_000_000))
        trailer = Trailer(
            end_utc_us=end_utc_us,
            end_mono_ns=0,  # unknown: the monotonic clock did not survive the restart
            chunk_count=count,
            body_len=good_end - plen,
            body_sha256=h.digest(),
            flags=FLAG_RECOVERED,
        )
        trailer = _signed(trailer, device, preamble_bytes)
        f.seek(good_end)
        f.write(trailer.encode_frame())
        f.flush()
        os.fsync(f.fileno())
    durable_rename(path, final)
    return SealedInfo(final, preamble, trailer, segment_hash(preamble_bytes, trailer))


__all__ = [
    "HASH_LEN",
    "TAG_LEN",
    "SealedInfo",
    "SegmentWriter",
    "recover_open_segment",
    "segment_file_name",
    "segment_hash",
]
