"""The exceptions of the evidence server, in one tree.

Every error a request can meet is a `ServerError` carrying the HTTP status it
maps to and a reason written for the person operating the dock (or the
author of a third-party client): what was expected, what was found.  The
application turns each into a JSON body ``{"error": reason}``; nothing else
decides status codes, so the published protocol (docs/upload-protocol.md)
and the code cannot drift apart quietly.
"""

from __future__ import annotations

from typing import Mapping


class ServerError(Exception):
    """Anything the server refuses or cannot do; `status` is the HTTP answer."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, reason: str, *, headers: Mapping[str, str] | None = None):
        self.reason = reason
        self.headers = dict(headers or {})
        super().__init__(reason)


class BadRequest(ServerError):
    """A header, metadata value or upload id that is malformed, out of bounds, or a path trick."""

    status = 400
    title = "Bad Request"


class Unauthorized(ServerError):
    """No dock token, or one the server does not know."""

    status = 401
    title = "Unauthorized"

    def __init__(self, reason: str):
        super().__init__(reason, headers={"WWW-Authenticate": 'Bearer realm="openbwv"'})


class Forbidden(ServerError):
    """An authenticated caller whose role does not allow the request (audited as a denial)."""

    status = 403
    title = "Forbidden"


class NotFound(ServerError):
    """No such upload, receipt or segment (or not this dock's upload: the server does not say which)."""

    status = 404
    title = "Not Found"


class Conflict(ServerError):
    """The request contradicts what the server holds."""

    status = 409
    title = "Conflict"


class OffsetMismatch(Conflict):
    """A PATCH whose Upload-Offset is not the offset the server has durably written."""


class ForkRejected(Conflict):
    """A segment that competes with a held one for its place in a device's chain."""


class PreconditionFailed(ServerError):
    """A tus request without `Tus-Resumable: 1.0.0`."""

    status = 412
    title = "Precondition Failed"


class TooLarge(ServerError):
    """An upload longer than the server accepts, or a PATCH running past Upload-Length."""

    status = 413
    title = "Content Too Large"


class RangeNotSatisfiable(ServerError):
    """A byte range that cannot be read or lies past the end (RFC 9110 s.15.5.17); Content-Range says the length."""

    status = 416
    title = "Range Not Satisfiable"

    def __init__(self, reason: str, *, size: int):
        super().__init__(reason, headers={"Content-Range": f"bytes */{size}"})


class UnsupportedMediaType(ServerError):
    """A PATCH whose body is not `application/offset+octet-stream`."""

    status = 415
    title = "Unsupported Media Type"


class VerificationFailed(ServerError):
    """The uploaded file is not a sealed segment this server can accept: layout, hash, signature,
    unknown device, or metadata that does not match the file."""

    status = 422
    title = "Unprocessable Content"


class UploadLocked(ServerError):
    """Another PATCH (or termination) of the same upload is still in progress."""

    status = 423
    title = "Locked"


class ChecksumMismatch(ServerError):
    """tus checksum extension: the chunk does not match its Upload-Checksum; it was discarded."""

    status = 460
    title = "Checksum Mismatch"


class Busy(ServerError):
    """More uploads in progress than the server's announced cap; try again shortly."""

    status = 503
    title = "Service Unavailable"

    def __init__(self, reason: str, *, retry_after_s: int = 2):
        super().__init__(reason, headers={"Retry-After": str(retry_after_s)})


class InsufficientStorage(ServerError):
    """The evidence store is down to its reserve of free space."""

    status = 507
    title = "Insufficient Storage"


class StoreError(ServerError):
    """The blob store or the database failed in a way that is not the client's doing."""

    status = 500
    title = "Internal Server Error"


class ConfigError(Exception):
    """Bad server settings or state directory: the server does not start (not an HTTP error)."""
