"""Where the dock sends segments: the `Uploader` interface, and a directory backend for tests and emulation.

An uploader takes one sealed segment and returns the server's receipt for it
(the bytes of the signed receipt document, sealed/receipt.py), or raises:

* `UploadUnavailable`: the server cannot take it now (down, busy, full).
  The dock waits and tries again; nothing on the camera is touched.
* `UploadRejected`: the server refuses this segment for good (it fails
  verification).  The dock reports it and never frees it.

Skipping what the server already holds is the uploader's job: an upload of a
segment the server has returns its receipt without sending the bytes again.
The HTTP (tus) uploader for the evidence server will sit behind the same
interface; `DirectoryUploader` stands in for it now, so the whole camera
side can be exercised end to end.
"""

from __future__ import annotations

import errno
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from ..sealed.durable import durable_rename, fsync_dir
from ..sealed.errors import SegmentError
from ..sealed.keys import ServerKeyPair
from ..sealed.layout import DEVICE_ID_RE
from ..sealed.reader import KeyLookup, verify_file
from ..sealed.receipt import Receipt, encode, issue
from ..sealed.writer import segment_file_name
from .errors import UploadRejected, UploadUnavailable

ProgressCallback = Callable[[int], None]  # bytes of this segment sent so far


class Uploader(Protocol):
    def upload(self, path: Path, device_id: str, sequence: int, segment_hash: str,
               progress: ProgressCallback) -> bytes:
        """Send one sealed segment; return the server's receipt document (bytes)."""
        ...


class SourceUnreadable(OSError):
    """The segment could not be read from the camera's storage (the camera left the bay?)."""


class DirectoryUploader:
    """An emulated evidence server: keeps segments in `directory/<device>/` and signs receipts.

    It does what the server must do before it gives a receipt: the copy is
    made durable (temporary name, fsync, rename, fsync the directory) and
    verified: layout and hash always, the device signature too when given a
    `registry` of enrolled devices, and it must be the segment the dock
    claims (device, sequence, hash).  Only then is a receipt signed, with the
    `server_keys` it was given.  Thread-safe: bays upload concurrently.
    """

    def __init__(self, directory: Path, server_keys: ServerKeyPair, *, registry: KeyLookup | None = None,
                 chunk_size: int = 1024 * 1024, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.directory = Path(directory)
        self.server_keys = server_keys
        self.registry = registry
        self.chunk_size = chunk_size
        self.now = now
        self.copies = 0  # segments actually copied (not skipped as already held)
        self._lock = threading.Lock()

    def upload(self, path: Path, device_id: str, sequence: int, segment_hash: str,
               progress: ProgressCallback) -> bytes:
        if not DEVICE_ID_RE.match(device_id) or type(sequence) is not int or sequence < 1:
            raise UploadRejected(f"not a segment a server can hold: device {device_id!r} #{sequence!r}")
        dest_dir = self.directory / device_id
        dest = dest_dir / segment_file_name(device_id, sequence)
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UploadUnavailable(f"upload directory {dest_dir}: {e.strerror}") from None
        if dest.exists():
            size = self._check(dest, device_id, sequence, segment_hash, held=True)
            progress(size)
            return self._receipt(device_id, sequence, segment_hash, size)
        tmp = dest_dir / f".{dest.name}.part-{os.getpid()}-{threading.get_ident()}"
        try:
            self._copy(Path(path), tmp, progress)
            size = self._check(tmp, device_id, sequence, segment_hash, held=False)
            with self._lock:
                durable_rename(tmp, dest)
                self.copies += 1
        finally:
            if tmp.exists():
                tmp.unlink()
        return self._receipt(device_id, sequence, segment_hash, size)

    def _copy(self, src: Path, tmp: Path, progress: ProgressCallback) -> None:
        try:
            fin = open(src, "rb")
        except OSError as e:
            raise SourceUnreadable(e.errno, f"cannot read {src}: {e.strerror}") from None
        done = 0
        progress(0)
        with fin:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:
                raise UploadUnavailable(f"cannot create {tmp}: {e.strerror}") from None
            try:
                while True:
                    try:
                        block = fin.read(self.chunk_size)
                    except OSError as e:
                        raise SourceUnreadable(e.errno, f"reading {src} failed at byte {done}: {e.strerror}") from None
                    if not block:
                        break
                    try:
                        view = memoryview(block)
                        while view:
                            view = view[os.write(fd, view):]
                    except OSError as e:
                        why = "server out of space" if e.errno == errno.ENOSPC else e.strerror
                        raise UploadUnavailable(f"writing {tmp}: {why}") from None
                    done += len(block)
                    progress(done)
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(tmp.parent)

    def _check(self, path: Path, device_id: str, sequence: int, segment_hash: str, *, held: bool) -> int:
        try:
            seg = verify_file(path, self.registry)
        except SegmentError as e:
            what = "the copy already held" if held else "the uploaded segment"
            raise UploadRejected(f"{what} fails verification: {e}") from None
        claimed = (device_id, sequence, segment_hash)
        found = (seg.device_id, seg.sequence, seg.segment_hash.hex())
        if found != claimed:
            if held:
                raise UploadRejected(f"the server already holds a different segment as {device_id} #{sequence} "
                                     f"({found[2][:16]}..., not {segment_hash[:16]}...): a fork in the chain")
            raise UploadRejected(f"segment is {found[0]} #{found[1]} ({found[2][:16]}...), "
                                 f"not {device_id} #{sequence} ({segment_hash[:16]}...) as listed")
        return path.stat().st_size

    def _receipt(self, device_id: str, sequence: int, segment_hash: str, size: int) -> bytes:
        receipt = Receipt(
            device_id=device_id, sequence=sequence, segment_hash=segment_hash, size=size,
            server_key_id=self.server_keys.public.key_id.hex(),
            received_utc=self.now().isoformat(timespec="seconds"),
        )
        return encode(issue(receipt, self.server_keys.sign))


__all__ = ["DirectoryUploader", "ProgressCallback", "SourceUnreadable", "Uploader"]
