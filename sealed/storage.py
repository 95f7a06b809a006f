"""A device's own segment storage and the head of its chain.

Used by the camera firmware and by `bwv seal` (which seals "as that device
would"), so that both allocate sequence numbers and link segments the same
way.  The chain head is kept in `chain.json` (written atomically after each
seal) and reconciled at start-up with what is actually on storage, so a crash
between sealing a file and recording the new head cannot fork the chain.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from .durable import atomic_write
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import MalformedSegment, SegmentError, SignatureInvalid
from .keys import DeviceKey, ServerPublicKey
from .layout import HASH_LEN, SUITE_MLKEM768_X25519
from .reader import read_preamble
from .writer import (
    DEFAULT_CHUNK_LIMIT,
    OPEN_SUFFIX,
    SEALED_SUFFIX,
    SealedInfo,
    SegmentWriter,
    recover_open_segment,
    segment_hash,
)
from .layout import TRAILER_FRAME_LEN, parse_trailer_frame, signed_message

CHAIN_FILE = "chain.json"


@dataclass(frozen=True)
class ChainHead:
    sequence: int  # 0 before the first segment
    segment_hash: bytes


GENESIS = ChainHead(0, bytes(HASH_LEN))


def file_chain_head(path: Path, device_id: str, public_key: Ed25519PublicKey) -> ChainHead:
    """Sequence and segment hash of a sealed file of the device, from its preamble and trailer only.

    The signature is checked (the body is not: that is verify's work), so a
    stray or forged file cannot move the chain head.
    """
    with open(path, "rb") as f:
        preamble, pbytes = read_preamble(f)
        f.seek(0, 2)
        size = f.tell()
        if size < len(pbytes) + TRAILER_FRAME_LEN:
            raise MalformedSegment("too short to hold a trailer", path=str(path))
        f.seek(size - TRAILER_FRAME_LEN)
        trailer = parse_trailer_frame(f.read(TRAILER_FRAME_LEN), size - TRAILER_FRAME_LEN)
    if preamble.device_id != device_id:
        raise SegmentError(f"file belongs to device {preamble.device_id!r}, not {device_id!r}", path=str(path))
    try:
        public_key.verify(trailer.signature, signed_message(pbytes, trailer))
    except InvalidSignature:
        raise SignatureInvalid("signature does not verify with this device's key", path=str(path)) from None
    return ChainHead(preamble.sequence, segment_hash(pbytes, trailer))


class DeviceStorage:
    """Where one device keeps its segments: sealed `.bwv` files and at most one `.open` file."""

    def __init__(
        self,
        directory: Path,
        device: DeviceKey,
        server: ServerPublicKey,
        *,
        state_dir: Path | None = None,
        suite: int = SUITE_MLKEM768_X25519,
        chunk_limit: int = DEFAULT_CHUNK_LIMIT,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.state_path = Path(state_dir or self.directory) / CHAIN_FILE
        self.device = device
        self.server = server
        self.suite = suite
        self.chunk_limit = chunk_limit
        self.problems: list[str] = []
        self.recovered: list[SealedInfo] = []
        self._head = self._load_head()

    # -- chain head ---------------------------------------------------------
    def _load_head(self) -> ChainHead:
        head = GENESIS
        if self.state_path.exists():
            try:
                doc = json.loads(self.state_path.read_text())
                head = ChainHead(int(doc["sequence"]), bytes.fromhex(doc["segment_hash"]))
                if doc.get("device_id") != self.device.device_id or len(head.segment_hash) != HASH_LEN:
                    raise ValueError("chain state belongs to another device or is damaged")
            except (ValueError, KeyError, TypeError) as e:
                raise SegmentError(f"chain state {self.state_path} is unreadable: {e}") from None
        for path in self.sealed_paths():
            try:
                on_disk = file_chain_head(path, self.device.device_id, self.device.public_key())
            except SegmentError:
                continue  # a damaged file is verify's business; it cannot advance the head
            if on_disk.sequence > head.sequence:
                head = on_disk
        return head

    @property
    def head(self) -> ChainHead:
        return self._head

    def _commit(self, info: SealedInfo) -> None:
        self._head = ChainHead(info.sequence, info.segment_hash)
        doc = {
            "device_id": self.device.device_id,
            "sequence": info.sequence,
            "segment_hash": info.segment_hash.hex(),
            "file": info.path.name,
        }
        atomic_write(self.state_path, (json.dumps(doc, indent=2) + "\n").encode())

    # -- files --------------------------------------------------------------
    def sealed_paths(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{SEALED_SUFFIX}") if p.is_file())

    def open_paths(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{OPEN_SUFFIX}") if p.is_file())

    def recover(self) -> list[SealedInfo]:
        """Seal every segment a crash left open, oldest first, and advance the head past them.

        A file too damaged to seal is set aside as `.damaged` (see
        `recover_open_segment`) and reported in `self.problems`; recording goes on.
        """
        done = []
        for path in self.open_paths():
            try:
                info = recover_open_segment(path, self.device)
            except SegmentError as e:
                self.problems.append(str(e))
                continue
            if info is None:
                continue
            done.append(info)
            self.recovered.append(info)
            if info.sequence > self._head.sequence:
                self._commit(info)
        return done

    def open_segment(
        self,
        *,
        clip_id: uuid.UUID,
        segment_index: int,
        start_utc_us: int,
        start_mono_ns: int = 0,
        clock_sync_utc_us: int = 0,
        clock_offset_us: int = 0,
    ) -> "StoredSegment":
        if self.open_paths():
            raise SegmentError(f"{self.directory} holds an unsealed segment; recover() it first")
        writer = SegmentWriter(
            self.directory,
            self.device,
            self.server,
            clip_id=clip_id,
            segment_index=segment_index,
            sequence=self._head.sequence + 1,
            prev_hash=self._head.segment_hash,
            start_utc_us=start_utc_us,
            start_mono_ns=start_mono_ns,
            clock_sync_utc_us=clock_sync_utc_us,
            clock_offset_us=clock_offset_us,
            chunk_limit=self.chunk_limit,
            suite=self.suite,
        )
        return StoredSegment(self, writer)


class StoredSegment:
    """A segment being written into a DeviceStorage; sealing it advances the chain."""

    def __init__(self, storage: DeviceStorage, writer: SegmentWriter):
        self.storage = storage
        self.writer = writer

    def append(self, record_type: int, payload: bytes) -> None:
        self.writer.append(record_type, payload)

    def flush(self) -> None:
        self.writer.flush()

    def seal(self, end_utc_us: int, end_mono_ns: int = 0) -> SealedInfo:
        info = self.writer.seal(end_utc_us, end_mono_ns)
        self.storage._commit(info)
        return info
