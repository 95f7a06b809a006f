"""Taking a fully uploaded file into evidence: verify, place in the chain, store, record, receipt.

The server accepts nothing it has not checked as `bwv verify` would: the
layout and every bound, the SHA-256 of the ciphertext against the signed
trailer, the device's signature with the enrolled key, and the device's
chain against what the server already holds.  Then, in this order, the file
becomes a blob (durably, atomically), the segment becomes a database row,
and only then is a receipt returned: a receipt is the server's word that the
segment is safe, and a camera frees its storage against it.

Chain rules (evidence is never refused for what is *missing*):

* a segment that follows directly on the held predecessor, or is sequence 1,
  is ``linked``;
* a segment with segments missing before it is accepted and flagged
  ``gap after N`` (N: the highest sequence held before it, 0 if none); when
  a missing one arrives later the flag of the segment after it is updated;
* a segment that competes with a held one (a different segment under the
  same device and sequence, or one that does not link to its held neighbour)
  is a fork, and is refused: it is kept out of evidence and reported.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..sealed.chain import ChainLink, check_link
from ..sealed.errors import (
    ChainFork,
    ChainGap,
    DuplicateSegment,
    HashMismatch,
    KeyFileError,
    MalformedSegment,
    SegmentError,
    SignatureInvalid,
    UnknownDevice,
    UnsupportedVersion,
)
from ..sealed.keys import ServerKeyPair
from ..sealed.reader import KeyLookup, VerifiedSegment, verify_file
from ..sealed.receipt import Receipt, encode, issue
from .blobstore import BlobStore
from .db import CHAIN_LINKED, MetadataStore, SegmentRecord, gap_status
from .errors import ForkRejected, StoreError, VerificationFailed
from .geoindex import TRACK_UNREADABLE, read_track

log = logging.getLogger("bwv.server.ingest")


@dataclass(frozen=True)
class SegmentClaim:
    """What the uploader said the file is (tus metadata); the file must agree."""

    device_id: str
    sequence: int
    segment_hash: str  # lowercase hex


@dataclass(frozen=True)
class Ingested:
    """A segment the server holds, and the receipt for it."""

    segment: SegmentRecord
    duplicate: bool  # it was already held: nothing new was stored

    @property
    def receipt(self) -> bytes:
        return self.segment.receipt.encode()


def _kind(e: SegmentError) -> str:
    for cls, words in (
        (UnknownDevice, "unknown device"),
        (SignatureInvalid, "bad signature"),
        (HashMismatch, "altered or damaged"),
        (UnsupportedVersion, "unsupported format"),
        (MalformedSegment, "malformed segment"),
    ):
        if isinstance(e, cls):
            return words
    return "not a valid segment"


def _link(rec: SegmentRecord) -> ChainLink:
    return ChainLink(rec.device_id, rec.sequence, bytes.fromhex(rec.prev_hash), bytes.fromhex(rec.segment_hash),
                     f"{rec.device_id} #{rec.sequence} (held)")


def place_in_chain(
    prev: ChainLink | None, seg: ChainLink, succ: ChainLink | None
) -> tuple[str, str | None]:
    """The chain status of `seg` between the held segments around it, and the new status of the
    one after it (None: unchanged).  Raises ForkRejected when `seg` cannot take its place."""
    problem = check_link(prev, seg)
    if isinstance(problem, (ChainFork, DuplicateSegment)):
        raise ForkRejected(f"chain fork: {problem.reason}")
    if isinstance(problem, ChainGap):
        status = gap_status(prev.sequence if prev else 0)
    elif prev is None and seg.sequence > 1:
        status = gap_status(0)
    else:
        status = CHAIN_LINKED
    successor: str | None = None
    if succ is not None:
        after = check_link(seg, succ)
        if isinstance(after, (ChainFork, DuplicateSegment)):
            raise ForkRejected(
                f"chain fork: the held segment {succ.sequence} of {seg.device_id} names a different "
                f"predecessor ({succ.prev_hash.hex()[:16]}...) than this segment ({seg.segment_hash.hex()[:16]}...)"
            )
        successor = gap_status(seg.sequence) if isinstance(after, ChainGap) else CHAIN_LINKED
    return status, successor


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Ingestor:
    """Verifies uploaded files and takes them into the blob store and the database."""

    def __init__(
        self,
        db: MetadataStore,
        blobs: BlobStore,
        keys: KeyLookup,
        server_keys: ServerKeyPair,
        *,
        clock: Callable[[], str] = utc_now,
    ):
        self.db = db
        self.blobs = blobs
        self.keys = keys
        self.server_keys = server_keys
        self.clock = clock
        # Deciding a segment's place in the chain and recording it is one step:
        # two uploads of neighbouring segments must not both decide on stale rows.
        self._chain_lock = threading.Lock()

    def verify(self, path: Path, claim: SegmentClaim, verified: VerifiedSegment | None = None) -> VerifiedSegment:
        """Everything `bwv verify` checks of one file, plus: the file is what the uploader said it is.

        `verified`: the file was already verified as its bytes arrived (StreamVerifier over the very
        bytes written to `path`), so it is not read again; without it, or for any doubt, the file is."""
        try:
            seg = verified if verified is not None else verify_file(path, self.keys)
        except SegmentError as e:
            raise VerificationFailed(f"{_kind(e)}: {e.reason}" + (f" (at byte {e.offset})" if e.offset is not None else "")) from None
        except KeyFileError as e:
            raise StoreError(f"the device registry could not be read: {e}") from None
        found = (seg.device_id, seg.sequence, seg.segment_hash.hex())
        claimed = (claim.device_id, claim.sequence, claim.segment_hash)
        for name, got, said in zip(("device_id", "sequence", "segment_hash"), found, claimed):
            if got != said:
                raise VerificationFailed(f"upload metadata says {name} {said!r}, the file is {got!r}")
        return seg

    def ingest(self, path: Path, claim: SegmentClaim, *, dock: str, upload_id: str | None = None,
               verified: VerifiedSegment | None = None) -> Ingested:
        """Verify `path` and take it into evidence; it is consumed on success.

        Raises VerificationFailed (422) or ForkRejected (409) and leaves the
        file where it is for the caller to delete.
        """
        seg = self.verify(path, claim, verified)
        key = seg.segment_hash.hex()
        # Decrypted before the file moves into the store, indexed in the segment's own transaction.
        track = read_track(Path(path), self.keys, self.server_keys, verified=seg)
        link = ChainLink(seg.device_id, seg.sequence, seg.preamble.prev_hash, seg.segment_hash, "this upload")
        with self._chain_lock:
            held = self.db.segment(key)
            if held is not None:
                if upload_id is not None:
                    self.db.complete_upload(upload_id, self.clock())
                Path(path).unlink(missing_ok=True)
                return Ingested(held, duplicate=True)
            deleted = self.db.tombstone_at(seg.device_id, seg.sequence)
            if deleted is not None:
                raise ForkRejected(
                    f"{seg.device_id} #{seg.sequence} was deleted by the retention policy on {deleted[1]} "
                    f"(tombstone of {deleted[0][:16]}...); deleted footage is not taken back"
                )
            rival = self.db.segment_at(seg.device_id, seg.sequence)
            if rival is not None:
                raise ForkRejected(
                    f"chain fork: {seg.device_id} #{seg.sequence} is already held as a different segment "
                    f"({rival.segment_hash[:16]}...), this one is {key[:16]}..."
                )
            prev, succ = self.db.neighbours(seg.device_id, seg.sequence)
            status, successor_status = place_in_chain(
                _link(prev) if prev else None, link, _link(succ) if succ else None
            )
            self.blobs.put_file(Path(path), key)
            received = self.clock()
            receipt = Receipt(
                device_id=seg.device_id,
                sequence=seg.sequence,
                segment_hash=key,
                size=seg.size,
                server_key_id=self.server_keys.public.key_id.hex(),
                received_utc=received,
            )
            doc = encode(issue(receipt, self.server_keys.sign)).decode()
            p = seg.preamble
            record = SegmentRecord(
                segment_hash=key,
                device_id=seg.device_id,
                sequence=seg.sequence,
                prev_hash=p.prev_hash.hex(),
                clip_id=str(p.clip_id),
                segment_index=p.segment_index,
                start_utc_us=p.start_utc_us,
                end_utc_us=seg.trailer.end_utc_us,
                size=seg.size,
                recovered=seg.trailer.recovered,
                chain_status=status,
                received_utc=received,
                dock=dock,
                blob_key=key,
                receipt=doc,
            )
            change = None
            if succ is not None and successor_status != succ.chain_status:
                change = (succ.segment_hash, successor_status)
            self.db.add_segment(record, upload_id=upload_id, successor_status=change, track=track,
                                wrapped_key_sha256=hashlib.sha256(p.wrapped_key).hexdigest())
        if status != CHAIN_LINKED:
            log.warning("%s #%d held with a flagged chain: %s", seg.device_id, seg.sequence, status)
        if track.status == TRACK_UNREADABLE:
            log.error("%s #%d held, but its track is unreadable and not indexed: %s", seg.device_id, seg.sequence,
                      track.note)
        if change is not None:
            log.info("%s #%d: chain status now %s (an earlier segment arrived)", seg.device_id, succ.sequence,
                     change[1])
        return Ingested(record, duplicate=False)


__all__ = ["Ingested", "Ingestor", "SegmentClaim", "place_in_chain"]
