"""The exceptions of the dock and of the dock <-> camera link, in one tree.

The people who read these are at a rack of docking bays at the end of a
shift: every message says what was expected, what was found, and where
(bay, port, byte offset in the stream, file), so a bad cable, a mis-wired bay
and a server outage can be told apart without reading this package.
"""

from __future__ import annotations


class DockError(Exception):
    """Anything that went wrong in the dock or on its link to a camera."""


# --------------------------------------------------------------------------- the wire
class ProtocolError(DockError):
    """Bytes or messages on the dock link that break docs/dock-protocol.md."""


class FrameError(ProtocolError):
    """A frame that cannot be accepted.  `offset` is where it began in the byte stream, if known.

    The decoder hands these back as values (it never raises them on bad
    input), so a noisy line is logged and resynchronised, not a crash.
    """

    code = "bad_frame"

    def __init__(self, message: str, *, offset: int | None = None, skipped: int = 0):
        self.reason = message
        self.offset = offset
        self.skipped = skipped  # bytes discarded because of this problem
        super().__init__(f"stream byte {offset}: {message}" if offset is not None else message)


class BadMagic(FrameError):
    """Bytes that do not start with the frame magic (line noise, a partial frame, another protocol)."""


class UnsupportedVersion(FrameError):
    """A frame of a protocol version this build does not speak."""


class UnknownType(FrameError):
    """A frame whose message type this version does not define."""


class OversizeFrame(FrameError):
    """A length field beyond the protocol's bound: rejected before anything is allocated."""


class BadChecksum(FrameError):
    """The CRC-32 does not match the frame: damaged on the line."""


class BadPayload(FrameError):
    """The payload is not a UTF-8 JSON object."""


class TruncatedFrame(FrameError):
    """Fewer bytes than the header promises (only for one-shot decoding)."""


class TrailingData(FrameError):
    """Bytes after a complete frame (only for one-shot decoding)."""


class BadMessage(ProtocolError):
    """A well-formed frame whose fields do not fit its message type."""

    code = "bad_message"


class ReplayedFrame(ProtocolError):
    """A sequence number not above the last one seen on this connection: replayed, duplicated or stale."""

    code = "replay"


class UnexpectedMessage(ProtocolError):
    """A valid message, but not the one the exchange calls for at this point."""

    code = "unexpected"


class PeerError(ProtocolError):
    """The other end answered with an ERROR message."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.peer_message = message
        super().__init__(f"peer reported {code}: {message}")


# --------------------------------------------------------------------------- the port
class LinkError(DockError):
    """The serial link itself: port missing, unplugged, or silent."""


class LinkTimeout(LinkError):
    """No (valid) answer within the time allowed."""


class LinkClosed(LinkError):
    """The port was closed or the device went away."""


# --------------------------------------------------------------------------- uploads
class UploadError(DockError):
    """An upload did not produce a receipt."""


class UploadUnavailable(UploadError):
    """The server cannot take the upload now (down, busy, out of space): retry later, free nothing."""


class UploadRejected(UploadError):
    """The server refused this segment for good (it fails verification): do not retry, free nothing."""


# --------------------------------------------------------------------------- the daemon
class BayError(DockError):
    """A bay could not do its work with the camera in it."""


class MountMismatch(BayError):
    """The storage mounted for a bay does not hold what the camera on its serial port lists (mis-wired bay?)."""


class CameraGone(BayError):
    """The camera left the bay (its storage unmounted or its port vanished) during a session."""


class Stopped(DockError):
    """The daemon is shutting down; work in progress was abandoned without touching the camera."""


class DockConfigError(DockError, ValueError):
    """The bays configuration file is unreadable or holds an invalid value."""
