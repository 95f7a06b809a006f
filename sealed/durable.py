"""Durable file operations: the only way footage and keys are written.

A file appears under its final name only once its bytes are on stable
storage: write to a temporary name in the same directory, fsync the file,
rename over the final name, fsync the directory.  A power cut leaves either
the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def durable_rename(src: Path, dst: Path) -> None:
    """Rename `src` (already fsynced) to `dst`, refusing to overwrite anything."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; refusing to overwrite footage")
    os.link(src, dst)  # fails if dst appeared meanwhile: no silent overwrite
    os.unlink(src)
    fsync_dir(dst.parent)
