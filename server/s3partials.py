"""Uploads in progress as pieces in the fleet's S3 bucket, so that any node can continue any upload.

The `PartialStore` of a server whose held segments are in S3 (partials.py
says why there is a seam at all).  An upload's bytes are objects::

    <prefix>partial/<upload id>/<20-digit start offset>

each holding the bytes of one PATCH, or of `PIECE_BYTES` of a long one.  A
piece is PUT, and answered, before the PATCH commits its offset to the
shared database, so a node that takes the upload over (the dock failed over
after its node died) finds every byte below the offset by listing the
pieces (`piece_chain`: followed from byte 0, leftovers at or after the
offset ignored) and re-derives the streaming verifier from them.  At the
end the pieces are assembled into a local temporary file for ingest, then
deleted.

A node also keeps its own copy of each piece it PUT, on its disk, named by
the piece's start and the ETag the store gave it.  Assembly takes a piece
from that copy when the bucket lists the piece with the same ETag and size,
and GETs it otherwise (a piece another node wrote, or rewrote): a dock that
stays on one node, the usual case, then sends its bytes across to the store
twice (the piece, then the held segment) instead of three times.  The copy
is only ever a cache of the bucket: the bucket decides which bytes count,
and the whole segment is verified against its claimed hash before it is
held.

The pieces are not evidence yet (nothing vouches for them until the whole
segment verifies), so they carry no Object Lock: a bucket with Object Lock
is versioned, and every removal here deletes each version by id, or the
bytes would stay in the bucket under a delete marker.  Pieces of uploads
that are no longer wanted (terminated, completed, forgotten) are removed
by the node that finishes with them, and any left behind by a node killed
at the wrong moment by the next start-up of any node (`strays`).
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import StoreError
from .partials import PartialGap, Piece, check_upload_id, parse_piece_name, piece_chain, piece_name
from .s3store import S3BlobStore, _code

PIECE_BYTES = 8 * 1024 * 1024  # a long PATCH is PUT in pieces of about this size: the most buffered per upload
READ_CHUNK = 1024 * 1024
_ETAG = re.compile(r"[0-9A-Za-z-]{1,64}")  # what a copy's name may carry: S3 ETags are hex, '-N' for multipart


class S3PartialWriter:
    """Gathers a PATCH's bytes and PUTs them as pieces; `sync` PUTs the rest (S3 writes are durable once answered)."""

    def __init__(self, store: "S3PartialStore", upload_id: str, offset: int):
        self.store, self.upload_id = store, upload_id
        self.start = offset  # where the gathered, not yet stored bytes begin
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def write(self, pieces: list[bytes], pos: int) -> None:
        if pos != self.start + self.pending_bytes:
            raise StoreError(f"internal: upload {self.upload_id} written at {pos}, expected "
                             f"{self.start + self.pending_bytes}")
        self.pending += pieces
        self.pending_bytes += sum(len(p) for p in pieces)
        if self.pending_bytes >= PIECE_BYTES:
            self._put()

    def _put(self) -> None:
        if not self.pending_bytes:
            return
        body = b"".join(self.pending)
        etag = self.store.put_piece(self.upload_id, self.start, body)
        self.store.keep_copy(self.upload_id, self.start, etag, body)
        self.start += len(body)
        self.pending, self.pending_bytes = [], 0

    def sync(self) -> None:
        self._put()

    def cut_back(self, offset: int) -> None:
        self.pending, self.pending_bytes = [], 0
        self.start = offset
        self.store.delete_pieces(self.upload_id, at_or_after=offset)
        self.store.forget_copies(self.upload_id, at_or_after=offset)

    def close(self) -> None:
        self.pending, self.pending_bytes = [], 0


class S3PartialStore:
    """Partial uploads as pieces in the blob store's bucket (see the module docstring)."""

    shared = True

    def __init__(self, blobs: S3BlobStore, scratch: Path):
        self.blobs = blobs
        self.s3, self.bucket = blobs.s3, blobs.bucket
        self.root = f"{blobs.prefix}partial/"
        self.scratch = Path(scratch)  # where uploads are assembled for ingest (this node's disk)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.copies = self.scratch / "pieces"  # this node's copies of the pieces it PUT, per upload

    # ------------------------------------------------------------------ names and listing
    def folder(self, upload_id: str) -> str:
        return f"{self.root}{check_upload_id(upload_id)}/"

    def pieces(self, upload_id: str) -> list[Piece]:
        """The upload's pieces as the bucket lists them now (current versions), in offset order."""
        return sorted(self._listing(upload_id))

    def _listing(self, upload_id: str) -> dict[Piece, str]:
        """The upload's pieces as the bucket lists them now (current versions), each with its ETag."""
        folder = self.folder(upload_id)
        out: dict[Piece, str] = {}
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                for obj in page.get("Contents", []):
                    start = parse_piece_name(obj["Key"][len(folder):])
                    if start is not None:
                        out[Piece(start, int(obj["Size"]))] = str(obj.get("ETag", "")).strip('"')
        except Exception as e:  # noqa: BLE001 - botocore's errors, turned into words
            raise self.blobs._error(e, f"cannot list the partial pieces of upload {upload_id}") from None
        return out

    def put_piece(self, upload_id: str, start: int, body: bytes) -> str:
        """PUT one piece; the ETag the store gave it."""
        name = self.folder(upload_id) + piece_name(start)
        try:
            answer = self.s3.put_object(Bucket=self.bucket, Key=name, Body=body,
                                        ContentType="application/octet-stream")
        except Exception as e:  # noqa: BLE001
            raise self.blobs._error(e, f"cannot store {len(body)} bytes of upload {upload_id} at {start}") from None
        return str(answer.get("ETag", "")).strip('"')

    # ------------------------------------------------------------------ this node's copies
    def _copy_path(self, upload_id: str, start: int, etag: str) -> Path | None:
        if not _ETAG.fullmatch(etag):
            return None  # a store that gives no usable ETag: no copies, every piece is read back
        return self.copies / check_upload_id(upload_id) / f"{piece_name(start)}.{etag}"

    def keep_copy(self, upload_id: str, start: int, etag: str, body: bytes) -> None:
        """Keep this node's copy of a piece it has just PUT.  Best effort: without it the piece is read
        back from the bucket at assembly, so a full or failing local disk costs time, never bytes."""
        path = self._copy_path(upload_id, start, etag)
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(body)
            os.replace(tmp, path)  # whole or absent: a half-written copy is never taken for the piece
        except OSError:
            tmp.unlink(missing_ok=True)

    def forget_copies(self, upload_id: str, at_or_after: int = 0) -> None:
        folder = self.copies / check_upload_id(upload_id)
        if at_or_after == 0:
            shutil.rmtree(folder, ignore_errors=True)
            return
        for path in folder.glob("*") if folder.is_dir() else ():
            start = parse_piece_name(path.name.split(".", 1)[0])
            if start is None or start >= at_or_after:
                path.unlink(missing_ok=True)

    def _piece_bytes(self, upload_id: str, piece: Piece, take: int, etag: str) -> Iterator[bytes]:
        """A piece's first `take` bytes: from this node's copy when it is the piece the bucket lists (same
        ETag, same size), else from the bucket.  A piece is at most about PIECE_BYTES plus one body batch,
        so a copy is read whole."""
        copy = self._copy_path(upload_id, piece.start, etag)
        data = None
        if copy is not None:
            try:
                data = copy.read_bytes()
            except OSError:
                data = None  # no copy (another node wrote the piece), or an unreadable one
        if data is not None and len(data) == piece.size:
            yield data[:take]
            return
        yield from self._read_piece(upload_id, piece, take)

    def delete_pieces(self, upload_id: str, *, at_or_after: int = 0) -> int:
        """Delete every version of the upload's pieces starting at or after `at_or_after`; return how many."""
        folder = self.folder(upload_id)
        gone = 0
        try:
            for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=folder):
                doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                          for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                          if (start := parse_piece_name(v["Key"][len(folder):])) is None or start >= at_or_after]
                if not doomed:
                    continue
                # One request per page of versions (at most 1,000, as a listing page is), not one per version.
                answer = self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": doomed, "Quiet": True})
                failed = [f for f in answer.get("Errors", []) if f.get("Code") not in ("NoSuchKey", "NoSuchVersion")]
                if failed:
                    raise StoreError(f"cannot delete {len(failed)} partial piece version(s) of upload {upload_id} "
                                     f"from {self.blobs.location}: {failed[0].get('Code')} {failed[0].get('Message', '')}")
                gone += len(doomed) - len(answer.get("Errors", []))
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            if _code(e) in ("NoSuchKey", "404"):
                return gone
            raise self.blobs._error(e, f"cannot delete the partial pieces of upload {upload_id}") from None
        return gone

    def _read_piece(self, upload_id: str, piece: Piece, take: int) -> Iterator[bytes]:
        name = self.folder(upload_id) + piece_name(piece.start)
        extra = {"Range": f"bytes=0-{take - 1}"} if take < piece.size else {}
        got = 0
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=name, **extra)["Body"]
            for chunk in body.iter_chunks(READ_CHUNK):
                got += len(chunk)
                yield chunk
        except Exception as e:  # noqa: BLE001
            if _code(e) in ("NoSuchKey", "404"):
                raise PartialGap(upload_id, piece.start, piece.start + take,
                                 f"the piece at byte {piece.start} vanished while being read") from None
            raise self.blobs._error(e, f"cannot read the piece at {piece.start} of upload {upload_id}") from None
        if got != take:
            raise PartialGap(upload_id, piece.start, piece.start + take,
                             f"the piece at byte {piece.start} gave {got} of {take} bytes")

    # ------------------------------------------------------------------ the seam
    def new_upload(self) -> str:
        """A fresh id; nothing is stored until the first PATCH (an empty upload needs no piece)."""
        import secrets

        return secrets.token_hex(16)

    def open_writer(self, upload_id: str, offset: int) -> S3PartialWriter:
        """A writer from `offset`; pieces at or after it, of a PATCH that never committed, are deleted first
        so that they can never be taken for bytes of this one later."""
        self.delete_pieces(upload_id, at_or_after=offset)
        self.forget_copies(upload_id, at_or_after=offset)
        return S3PartialWriter(self, upload_id, offset)

    def read(self, upload_id: str, offset: int) -> Iterator[bytes]:
        listing = self._listing(upload_id)
        for piece, take in piece_chain(upload_id, sorted(listing), offset):
            yield from self._piece_bytes(upload_id, piece, take, listing[piece])

    @contextmanager
    def assembled(self, upload_id: str, length: int) -> Iterator[Path]:
        """The pieces copied back to back into a local temporary file (ingest consumes it; removed if not)."""
        listing = self._listing(upload_id)
        chain = piece_chain(upload_id, sorted(listing), length)
        path = self.scratch / f"{check_upload_id(upload_id)}.assembling-{os.getpid()}"
        try:
            with open(path, "wb") as out:
                for piece, take in chain:
                    for chunk in self._piece_bytes(upload_id, piece, take, listing[piece]):
                        out.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def finished(self, upload_id: str) -> None:
        self.delete_pieces(upload_id)
        self.forget_copies(upload_id)

    def remove(self, upload_id: str) -> None:
        self.delete_pieces(upload_id)
        self.forget_copies(upload_id)

    def held(self, upload_id: str, offset: int) -> int | None:
        """How far the pieces reach back to back below `offset` (never past it: the pieces beyond may be a
        PATCH streaming on another node right now, so start-up leaves them to the next PATCH)."""
        try:
            piece_chain(upload_id, self.pieces(upload_id), offset)
        except PartialGap as gap:
            return gap.held
        return offset

    def trim(self, upload_id: str, offset: int) -> None:
        """Nothing: `held` never reports bytes past the offset (see there)."""

    def strays(self, wanted: Callable[[str], bool]) -> list[str]:
        """Remove the pieces of every upload `wanted` refuses, and this node's unfinished assemblies.

        `wanted` is asked per upload after listing, so an upload created by
        another node since this one read its list of uploads is kept: a row
        is always recorded before its first piece is written."""
        notes: list[str] = []
        for path in self.scratch.iterdir():
            if path.is_file():
                path.unlink()
                notes.append(f"removed stray file {path.name} from {self.scratch}")
        ids: list[str] = []
        try:
            pager = self.s3.get_paginator("list_objects_v2")
            for page in pager.paginate(Bucket=self.bucket, Prefix=self.root, Delimiter="/"):
                ids += [p["Prefix"][len(self.root):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except Exception as e:  # noqa: BLE001
            raise self.blobs._error(e, "cannot list the partial uploads") from None
        for upload_id in ids:
            try:
                check_upload_id(upload_id)
            except StoreError:
                continue  # not ours: left alone
            if not wanted(upload_id):
                n = self.delete_pieces(upload_id)
                notes.append(f"removed {n} stray piece(s) of upload {upload_id} from {self.blobs.location}")
        # This node's copies: kept only for uploads still wanted (the bucket decides, above).
        for folder in self.copies.iterdir() if self.copies.is_dir() else ():
            try:
                check_upload_id(folder.name)
                keep = wanted(folder.name)
            except StoreError:
                keep = False
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
                notes.append(f"removed this node's copies of the pieces of upload {folder.name}")
        return notes


__all__ = ["PIECE_BYTES", "S3PartialStore", "S3PartialWriter"]
