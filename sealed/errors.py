"""The exceptions of the sealed-segment format, in one tree.

Every message says what was expected, what was found and where (file and
byte offset when known), because the person reading it may be an evidence
officer, not the author of this module.
"""

from __future__ import annotations


class SegmentError(Exception):
    """Anything wrong with a sealed segment or with handling one."""

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None):
        self.reason = message
        self.path = path
        self.offset = offset
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        return f"{': '.join(where)}: {self.reason}" if where else self.reason

    def at(self, path: str) -> "SegmentError":
        """Attach the file name once the caller knows it (parsers see only bytes)."""
        self.path = str(path)
        self.args = (self._render(),)
        return self


class MalformedSegment(SegmentError):
    """The bytes do not follow the format: bad magic, length out of bounds, truncated, trailing data."""


class UnsupportedVersion(MalformedSegment):
    """A format version or cipher suite this build does not know."""


class HashMismatch(SegmentError):
    """The ciphertext does not hash to what the signed trailer says: altered or damaged."""


class SignatureInvalid(SegmentError):
    """The device signature does not verify with the enrolled key: forged, altered or foreign."""


class UnknownDevice(SegmentError):
    """The segment names a device that is not enrolled."""


class DecryptionFailed(SegmentError):
    """A chunk or the wrapped key fails authentication: wrong key, altered, reordered or dropped chunk."""


class KeyFileError(Exception):
    """A key or key bundle on disk is missing, unreadable or malformed."""


class ChainProblem(SegmentError):
    """Something wrong with the per-device chain across segments."""


class ChainGap(ChainProblem):
    """Segments are missing between two that are present."""


class ChainFork(ChainProblem):
    """A segment does not link to its predecessor, or two different segments claim one sequence number."""


class DuplicateSegment(ChainProblem):
    """The same segment appears more than once (a replay or a stray copy)."""
