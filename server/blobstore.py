"""Where the bytes of held segments live: a content-addressed blob store.

One narrow interface, `BlobStore`, in the manner of restic's backends, so
that S3-compatible object storage can replace the local file system without
the ingest path changing.  Keys are segment hashes (64 lowercase hex): a blob
is named by what it is, so storing the same segment twice is a no-op and a
key can never point somewhere unexpected.

`LocalBlobStore` keeps ``root/ab/cd/abcd….bwv``.  A blob appears under its
final name only once its bytes and the directory entry are on stable storage
(openbwv.sealed.durable), and is then made read-only: evidence is not edited
in place.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..sealed.durable import durable_rename, fsync_dir
from ..sealed.errors import SegmentError
from ..sealed.reader import read_preamble
from .errors import InsufficientStorage, StoreError

KEY_RE = re.compile(r"^[0-9a-f]{64}\Z")
COPY_PIECE = 1024 * 1024


@runtime_checkable
class BlobStore(Protocol):
    """What the server needs of a place that keeps segment files."""

    def put_file(self, src_path: Path, key: str) -> None:
        """Take `src_path` (already fsynced) into the store under `key`, durably and atomically.

        The source is consumed (moved or removed).  If `key` is already held
        the existing blob is kept: keys are content hashes.
        """

    def open(self, key: str) -> BinaryIO:
        """The blob's bytes, for reading."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove a blob (ingest never deletes held evidence)."""

    def shred(self, key: str, *, sync: bool = True) -> str | None:
        """Destroy the blob's wrapped key, then the blob (the retention sweep; see LocalBlobStore)."""

    def sync_all(self) -> None:
        """Make every shred since the last call durable."""

    def free_bytes(self) -> int:
        """Space left for new blobs, in bytes (what admission control compares with its reserve)."""

    def set_retention(self, key: str, until: datetime) -> None:
        """Keep the blob undeletable until `until` at least (S3: a COMPLIANCE Object Lock, which can be
        lengthened, never shortened).  The metadata database stays the authority on what is due;
        this is the store's own guarantee beneath it."""

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Set or clear a hold under which the blob cannot be deleted whatever its retention date
        (evidence marks, open subject access requests)."""


def check_key(key: str) -> str:
    """A blob key is a segment hash and nothing else: no path can be smuggled in."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise StoreError(f"blob key {key!r} is not 64 lowercase hex characters")
    return key


class LocalBlobStore:
    """Blobs as read-only files under one directory, fanned out by the first two bytes of the key."""

    SUFFIX = ".bwv"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[0:2] / key[2:4] / f"{key}{self.SUFFIX}"

    def put_file(self, src_path: Path, key: str) -> None:
        dst = self.path(key)
        src = Path(src_path)
        if dst.exists():
            src.unlink(missing_ok=True)
            return
        self._make_dirs(dst.parent)
        try:
            try:
                durable_rename(src, dst)  # same file system: a link and an unlink, no copy
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                self._copy_in(src, dst)
        except FileExistsError:
            src.unlink(missing_ok=True)  # a concurrent ingest of the same segment won
            return
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage(f"evidence store {self.root} is full: {e.strerror}") from None
            raise StoreError(f"cannot store blob {key} in {self.root}: {e.strerror}") from None
        os.chmod(dst, 0o444)

    def _copy_in(self, src: Path, dst: Path) -> None:
        """Across file systems: copy to a temporary name beside `dst`, fsync, then rename."""
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, COPY_PIECE)
                fout.flush()
                os.fsync(fout.fileno())
            durable_rename(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        src.unlink()

    def _make_dirs(self, directory: Path) -> None:
        """Create the fan-out directories and make their entries durable too."""
        missing = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            fsync_dir(d.parent)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def shred(self, key: str, *, sync: bool = True) -> str | None:
        """Crypto-shred a held segment: overwrite its wrapped segment key with zeros, make that
        durable, then remove the file.  Returns the SHA-256 of the wrapped key destroyed, None if
        the blob was already gone, "" if its preamble could not be read or its key was already
        zeroed by an earlier, interrupted shred (the file is removed anyway).

        The media is encrypted under that key and the key exists nowhere else, so blocks of the
        file recovered from the disk later (file carving) are ciphertext nobody can open, the
        server key included.  With `sync=False` the caller makes the writes and the unlink
        durable itself (`sync_all`), which lets a sweep pay for one flush per batch, not per file.
        """
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except PermissionError:
            os.chmod(path, 0o600)
            fd = os.open(path, os.O_RDWR)
        try:
            with os.fdopen(fd, "r+b", closefd=False) as f:
                try:
                    preamble, raw = read_preamble(f)
                    wrapped = preamble.wrapped_key
                    # All zeros: a shred killed before its unlink already destroyed the key; its
                    # digest was that of the key, not of these zeros, and is not known here.
                    digest = hashlib.sha256(wrapped).hexdigest() if any(wrapped) else ""
                    offset = len(raw) - len(wrapped)
                except SegmentError:
                    digest, offset, wrapped = "", 0, b""
                if wrapped:
                    os.pwrite(fd, bytes(len(wrapped)), offset)
                    if sync:
                        os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        if sync:
            fsync_dir(path.parent)
        return digest

    def sync_all(self) -> None:
        """Flush everything written to the store's file system (one call for a batch of shreds)."""
        _syncfs(self.root)

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def set_retention(self, key: str, until: datetime) -> None:
        """Nothing: a local file system has no lock the server could not lift itself; the metadata
        database's retention rules are what keep footage here."""
        check_key(key)

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Nothing, as for set_retention: marks and requests hold footage through the database."""
        check_key(key)


def open_blob_store(spec: str, local_root: Path) -> BlobStore:
    """The store a setting names (config.check_blobs): "local" for `local_root`, or an s3:// URL (boto3
    is loaded only then).  An S3 store checks its bucket here, so a wrong one stops the server at start."""
    if spec == "local":
        return LocalBlobStore(local_root)
    from .s3store import S3BlobStore

    return S3BlobStore.from_url(spec)


def readable_path(blobs: BlobStore, key: str, workdir: Path) -> Path:
    """A file holding the blob's bytes, for readers that want a path (opening a clip, reindexing):
    the blob itself in a local store, else a copy written into `workdir` (the caller's to remove)."""
    if isinstance(blobs, LocalBlobStore):
        return blobs.path(key)
    dst = Path(workdir) / f"{check_key(key)}.bwv"
    with blobs.open(key) as src, open(dst, "wb") as out:
        shutil.copyfileobj(src, out, COPY_PIECE)
    return dst


def blob_label(blobs: BlobStore, key: str) -> str:
    """Where a blob lives, for a person reading a problem line: its file, or its S3 object."""
    if isinstance(blobs, LocalBlobStore):
        return str(blobs.path(key))
    location = getattr(blobs, "location", None)
    name = blobs.data_name(key) if hasattr(blobs, "data_name") else key
    return f"s3://{location.bucket}/{name}" if location is not None else name


def _syncfs(directory: Path) -> None:
    """syncfs(2) on the file system holding `directory` (only that one), through libc; sync(2)
    where libc has no syncfs."""
    import ctypes

    fd = os.open(directory, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "syncfs") or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


__all__ = ["BlobStore", "LocalBlobStore", "blob_label", "check_key", "open_blob_store", "readable_path"]
