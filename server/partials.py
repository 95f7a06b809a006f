"""Where the bytes of uploads in progress live, so that an upload can be continued where it can.

A tus upload's offset is recorded in the metadata database; the bytes below
it must be kept somewhere from which the next PATCH, and the ingest at the
end, can read them.  `PartialStore` is that place, behind one narrow seam
chosen by the blob store (`partial_store_for`):

- `LocalPartialStore` (embedded default, local blob store): one file per
  upload, ``uploads/<upload id>.part``, written with pwritev and fsynced.
  Only this node can continue such an upload, which is all a single server
  needs, and it is the fastest there is (upload_vs_raw).
- `S3PartialStore` (s3partials.py, when the held segments are in an S3
  bucket): numbered pieces ``partial/<upload id>/<start offset>`` in the
  same bucket, so that any node of a fleet can continue an upload another
  began, or one whose node was killed.

The invariant of both: **the offset in the database never points past
durable bytes.**  A PATCH's bytes are written (fsynced, or PUT and
answered) before the offset moves; bytes at or after the recorded offset
belong to a PATCH that never committed and are ignored, then cut away by
the next PATCH.  The pure logic of pieces (`piece_name`, `parse_piece_name`,
`piece_chain`) is here, apart from any I/O, so that it is tested on its own.
"""

from __future__ import annotations

import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from ..sealed.durable import fsync_dir
from .errors import StoreError

if TYPE_CHECKING:
    from .blobstore import BlobStore

UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
OFFSET_DIGITS = 20  # 2^64 has 20 decimal digits: zero-padded names sort as the offsets do
PIECE_NAME_RE = re.compile(r"^[0-9]{%d}\Z" % OFFSET_DIGITS)
READ_PIECE = 1024 * 1024


def check_upload_id(upload_id: str) -> str:
    """Upload ids are made by the server (32 hex); checked again here, so no name from outside reaches a path."""
    if not isinstance(upload_id, str) or not UPLOAD_ID_RE.match(upload_id):
        raise StoreError(f"internal: upload id {upload_id!r} is not 32 hex characters")
    return upload_id


class PartialGap(StoreError):
    """The bytes of an upload held in the store stop short of its recorded offset.

    `held` is how many bytes from the start are there back to back: where the
    upload can go on from once its offset is moved back (the dock HEADs and
    resends from there)."""

    def __init__(self, upload_id: str, held: int, wanted: int, why: str):
        super().__init__(f"upload {upload_id}: the partial bytes in the store are contiguous only up to {held} of "
                         f"the {wanted} recorded ({why}); the offset goes back to {held}, send from there")
        self.upload_id, self.held, self.wanted = upload_id, held, wanted


# --------------------------------------------------------------------------- pieces (pure)
@dataclass(frozen=True, order=True)
class Piece:
    """One stored piece of an upload: `size` bytes from `start`."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def piece_name(start: int) -> str:
    """The name of the piece starting at byte `start`: 20 digits, zero-padded, so a listing is in offset order."""
    if not 0 <= start < 10**OFFSET_DIGITS:
        raise ValueError(f"piece offset {start} out of range")
    return f"{start:0{OFFSET_DIGITS}d}"


def parse_piece_name(name: str) -> int | None:
    """The start offset a piece name says, or None for a name that is not one of ours."""
    return int(name) if PIECE_NAME_RE.match(name) else None


def piece_chain(upload_id: str, pieces: list[Piece], offset: int) -> list[tuple[Piece, int]]:
    """The pieces holding bytes [0, offset) back to back, each with how many of its bytes count.

    Pieces starting at or after `offset` are the leftovers of a PATCH that
    died before it committed its offset: ignored.  Below it, the chain is
    followed from byte 0, each piece starting where the one before ended;
    a piece off that path (one overwritten by a later PATCH that ended
    elsewhere) is ignored too.  The last piece may run past `offset` (a
    writer that lost a race to commit): only its bytes below the offset
    count.  A missing piece, or an empty one, is a PartialGap saying how
    far the bytes do reach.
    """
    by_start: dict[int, Piece] = {}
    for p in pieces:
        if p.start < offset:
            by_start[p.start] = p
    chain: list[tuple[Piece, int]] = []
    pos = 0
    while pos < offset:
        p = by_start.get(pos)
        if p is None:
            later = [s for s in by_start if s > pos]
            why = (f"no piece starts at byte {pos}; the next one starts at {min(later)}" if later
                   else f"no piece starts at byte {pos}")
            raise PartialGap(upload_id, pos, offset, why)
        if p.size <= 0:
            raise PartialGap(upload_id, pos, offset, f"the piece at byte {pos} is empty")
        take = min(p.size, offset - pos)
        chain.append((p, take))
        pos += take
    return chain


# --------------------------------------------------------------------------- the seam
class PartialWriter(Protocol):
    """One PATCH's writes into an upload, from its offset on (used from one worker thread at a time)."""

    def write(self, pieces: list[bytes], pos: int) -> None:
        """Append `pieces` back to back at `pos` (always where the previous write ended)."""

    def sync(self) -> None:
        """Make everything written durable: only after this may the offset be committed."""

    def cut_back(self, offset: int) -> None:
        """Forget every byte at or after `offset`, durably (a chunk discarded)."""

    def close(self) -> None: ...


class PartialStore(Protocol):
    """The bytes of uploads in progress (see the module docstring)."""

    shared: bool  # whether other nodes see these bytes (they can continue the upload)

    def new_upload(self) -> str:
        """A fresh upload id with an empty partial, durably; the caller then records the upload's row."""

    def open_writer(self, upload_id: str, offset: int) -> PartialWriter:
        """A writer from `offset` on, bytes past it (never acknowledged) cut away first."""

    def read(self, upload_id: str, offset: int) -> Iterator[bytes]:
        """Bytes [0, offset) in pieces (to re-derive the streaming verifier); PartialGap if they are not all there."""

    def assembled(self, upload_id: str, length: int):
        """Context manager: a local file holding the whole upload, for ingest (which may consume it)."""

    def finished(self, upload_id: str) -> None:
        """The upload was ingested: remove whatever of its partial is left."""

    def remove(self, upload_id: str) -> None:
        """Forget an upload's partial bytes (terminated, failed verification, or forgotten)."""

    def held(self, upload_id: str, offset: int) -> int | None:
        """At start-up: how many bytes from 0 the store holds of the first `offset` (None: the partial is lost)."""

    def trim(self, upload_id: str, offset: int) -> None:
        """At start-up: cut bytes past the recorded `offset` (only where `held` said there are some)."""

    def strays(self, wanted: Callable[[str], bool]) -> list[str]:
        """At start-up: remove partials of uploads `wanted` says no (unknown or complete); describe each."""


# --------------------------------------------------------------------------- local files
def _cut_back_fd(fd: int, offset: int) -> None:
    os.ftruncate(fd, offset)
    os.fsync(fd)


def _write_all(fd: int, pieces: list[bytes], pos: int) -> None:
    """All of `pieces`, back to back at `pos`: one pwritev each time, resumed after a short write."""
    views = [memoryview(p) for p in pieces]
    while views:
        n = os.pwritev(fd, views, pos)
        pos += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


class LocalPartialWriter:
    """pwritev onto the upload's file, fsync to make it durable, ftruncate to cut back."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, pieces: list[bytes], pos: int) -> None:
        _write_all(self.fd, pieces, pos)

    def sync(self) -> None:
        os.fsync(self.fd)

    def cut_back(self, offset: int) -> None:
        _cut_back_fd(self.fd, offset)

    def close(self) -> None:
        os.close(self.fd)


class LocalPartialStore:
    """Partial uploads as files ``<upload id>.part`` in one directory of this node (the embedded default)."""

    shared = False

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path:
        return self.directory / f"{check_upload_id(upload_id)}.part"

    def new_upload(self) -> str:
        while True:
            upload_id = secrets.token_hex(16)
            try:
                fd = os.open(self.path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.directory)
            return upload_id

    def open_writer(self, upload_id: str, offset: int) -> LocalPartialWriter:
        try:
            fd = os.open(self.path(upload_id), os.O_WRONLY)
        except FileNotFoundError:
            raise StoreError(f"the partial file of upload {upload_id} is missing") from None
        try:
            if os.fstat(fd).st_size != offset:  # bytes past the recorded offset were never acknowledged
                _cut_back_fd(fd, offset)
        except BaseException:
            os.close(fd)
            raise
        return LocalPartialWriter(fd)

    def read(self, upload_id: str, offset: int) -> Iterator[bytes]:
        """Up to `offset` bytes; a file found shorter ends early (verify_file decides at the end), as before."""
        with open(self.path(upload_id), "rb", buffering=0) as f:
            done = 0
            while done < offset:
                piece = f.read(min(READ_PIECE, offset - done))
                if not piece:
                    return
                done += len(piece)
                yield piece

    @contextmanager
    def assembled(self, upload_id: str, length: int) -> Iterator[Path]:
        """The partial file itself: ingest moves it into the store (no copy)."""
        yield self.path(upload_id)

    def finished(self, upload_id: str) -> None:
        """Nothing: ingest consumed the file (moved into the store, or removed as a duplicate)."""

    def remove(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)
        fsync_dir(self.directory)

    def held(self, upload_id: str, offset: int) -> int | None:
        """The file's size (it may run past the offset: `trim` cuts that), or None if it is gone; an
        upload still at offset 0 gets its empty file back."""
        path = self.path(upload_id)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            if offset == 0:
                path.touch(mode=0o600)
                fsync_dir(self.directory)
                return 0
            return None

    def trim(self, upload_id: str, offset: int) -> None:
        fd = os.open(self.path(upload_id), os.O_WRONLY)
        try:
            _cut_back_fd(fd, offset)
        finally:
            os.close(fd)

    def strays(self, wanted: Callable[[str], bool]) -> list[str]:
        notes = []
        for path in self.directory.iterdir():
            upload_id = path.name.removesuffix(".part")
            if path.is_file() and not (path.name.endswith(".part") and UPLOAD_ID_RE.match(upload_id)
                                       and wanted(upload_id)):
                path.unlink()
                notes.append(f"removed stray file {path.name} from {self.directory}")
        return notes


def partial_store_for(blobs: "BlobStore", uploads_dir: Path) -> PartialStore:
    """Partial uploads go where the held segments go: beside them in the bucket when that is shared by
    a fleet (any node continues any upload), else in this node's own upload directory."""
    from .s3store import S3BlobStore

    if isinstance(blobs, S3BlobStore):
        from .s3partials import S3PartialStore

        return S3PartialStore(blobs, uploads_dir)
    return LocalPartialStore(uploads_dir)


__all__ = ["LocalPartialStore", "PartialGap", "PartialStore", "PartialWriter", "Piece", "check_upload_id",
           "parse_piece_name", "partial_store_for", "piece_chain", "piece_name"]
