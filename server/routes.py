"""Every HTTP route of the evidence server, with the permission it needs, in one table.

The application is built from this table (app.py), the access check reads it
on every request, docs/access-control.md (endpoint x role) and
docs/openapi.json are generated from it (`bwv server api-docs`), and the
role-matrix test calls every row as every role.  A route cannot exist
without saying who may call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..sealed.layout import DEVICE_ID_RE
from . import api_models as m
from .api_models import CLIP_ID_RE, REQUEST_ID_RE, published
from .geoindex import MAX_RADIUS_M
from .sar_export import FILE_NAME_RE, MAX_EXPORT_NUMBER
from .service import UPLOAD_ID_RE
from .staff_api import MAX_LISTED
from .tus import HASH_RE, SEQUENCE_RE
from .users import DOCK, PERMISSIONS, ROLES, USERNAME_RE

MAX_SEQ = 2**62  # audit sequence numbers and mark ids the handlers accept


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query", "path" or "header"
    description: str
    required: bool = False
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp pattern: /api/v1/clips/{clip_id}
    handler: str  # "tus.create" or "staff.clip": endpoint object and method name
    summary: str
    permission: str | None  # None: public (no token)
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None  # the JSON request body, checked by the handler with this model
    own_footage: bool = False  # an officer may call it only for their own clip
    answer: type[BaseModel] | None = None  # the JSON body of a successful answer
    status: int = 200  # the status of a successful answer (201: something was created)
    # Further statuses this route sends: why, or (why, the model of the body sent with it).
    also: dict[int, str | tuple[str, type[BaseModel]]] = field(default_factory=dict)
    produces: str | tuple[str, ...] = "application/json"  # the media type(s) of a successful answer
    body_type: str = "application/json"  # the media type of the request body (tus PATCH: bytes)

    def roles(self) -> tuple[str, ...]:
        """Principals that may call it: "anyone" for a public route."""
        if self.permission is None:
            return ("anyone",)
        allowed = PERMISSIONS[self.permission]
        return tuple(r for r in (DOCK, *ROLES) if r in allowed)


def _p(name: str, description: str, *, required: bool = False, **schema: Any) -> Param:
    return Param(name, "query", description, required, {"type": "string", **schema})


def _path(name: str, description: str, **schema: Any) -> Param:
    return Param(name, "path", description, True, {"type": "string", **schema})


def _int(name: str, description: str, lo: int, hi: int) -> Param:
    return Param(name, "query", description, False, {"type": "integer", "minimum": lo, "maximum": hi})


def _number(name: str, description: str, *, required: bool = False, **bounds: float) -> Param:
    return Param(name, "query", description, required, {"type": "number", **bounds})


def _header(name: str, description: str, *, required: bool = False, **schema: Any) -> Param:
    return Param(name, "header", description, required, {"type": "string", **schema})


TIME = {"format": "date-time"}
FLAG = {"enum": ["1", "0", "true", "false", "yes", "no"]}  # 1, true or yes: on
CLIP = _path("clip_id", "the clip's UUID", pattern=published(CLIP_ID_RE))
REQUEST = _path("request_id", "the subject access request, e.g. SAR-2026-00001", pattern=published(REQUEST_ID_RE))
EXPORT = Param("export", "path", "the export's number (1, 2, ...), as its manifest gives it", True,
               {"type": "integer", "minimum": 1, "maximum": MAX_EXPORT_NUMBER})
EXPORT_FILE = _path("name", "manifest.json, manifest.sig, or an output the manifest lists (<clip_id>.mp4); "
                            "any other name is refused (404, audited)", pattern=published(FILE_NAME_RE))
DEVICE = _path("device_id", "the camera", pattern=published(DEVICE_ID_RE))
UPLOAD = _path("upload_id", "the upload, as the Location of its creation named it", pattern=published(UPLOAD_ID_RE))
TUS = _header("Tus-Resumable", "the tus version: 1.0.0 (412 otherwise)", required=True, enum=["1.0.0"])
AUDIT_FILTERS = (_p("actor", "e.g. user:alice", maxLength=200), _p("action", "e.g. delete", maxLength=64),
                 _p("target", "e.g. clip:<id>", maxLength=200),
                 _p("outcome", "ok, denied or failed", enum=["ok", "denied", "failed"]),
                 _p("since", "ISO 8601 with offset", **TIME), _p("until", "ISO 8601 with offset", **TIME),
                 _int("after", "only records after this sequence number", 0, MAX_SEQ))
JSON_LINES = "application/x-ndjson"
EXPORT_FILES = ("video/mp4", "application/json", "text/plain")  # an MP4, manifest.json, manifest.sig
WINDOW = (_p("from", "start of the window, ISO 8601 with offset", required=True, **TIME),
          _p("to", "end of the window, ISO 8601 with offset", required=True, **TIME))
# Further statuses, each said once, then named by the routes that send them.
CONFLICT = {409: "conflicts with what is held (a deleted clip, a closed request, a lifted mark)"}
TUS_STATUSES = {412: "no Tus-Resumable: 1.0.0 header (the answer names the version spoken)"}
TUS_WRITE = {
    409: "Upload-Offset is not the offset the server holds, or the segment forks a device's chain",
    413: "the body runs past Upload-Length",
    415: "the body is not application/offset+octet-stream",
    422: "the completed file is not a sealed segment this server accepts (layout, hash, signature, device)",
    423: "another PATCH or termination of the same upload is still in progress",
    460: "the chunk does not match its Upload-Checksum; it was discarded and the offset stays",
    503: "as many uploads in progress as the server takes at once (Retry-After)",
    507: "the evidence store is down to its reserve of free space",
}

ROUTES: tuple[Route, ...] = (
    # ---- public
    Route("GET", "/api/v1/health", "api.health",
          "Liveness, the server's key id, and each dependency's state (database, object store, keys, disk)", None,
          answer=m.Health, also={503: ("a dependency is down: the body says which", m.Health)}),
    Route("GET", "/metrics", "api.metrics",
          "This node's counters in Prometheus's text format (uploads in flight, bytes and segments ingested, "
          "receipt latency, verification failures, sweeps, dependency errors); only from the addresses in "
          "metrics_from (default loopback)", None, produces="text/plain",
          also={403: "the caller's address is not in metrics_from"}),
    Route("POST", "/api/v1/login", "staff.login", "Log in with a user name and password; returns a bearer token",
          None, body=m.LoginBody, answer=m.Session,
          also={401: "wrong user name or password, a disabled or locked account (audited up to a rate)"}),
    # ---- docks (tus 1.0 uploads and receipts)
    Route("POST", "/tus/", "tus.create", "Create an upload (or 200 with the receipt: already held)", "upload",
          params=(TUS, _header("Upload-Length", "the segment's size in bytes", required=True, pattern="^[0-9]{1,20}$"),
                  _header("Upload-Metadata", "filename, device_id, sequence, segment_hash: tus key base64value pairs",
                          required=True, maxLength=4096)),
          status=201, answer=None,
          also={200: ("the segment is already held (or was, until the policy deleted it): its receipt in Bwv-Receipt",
                      m.AlreadyHeld),
                **TUS_STATUSES, 409: "the segment forks a device's chain, or is held under another sequence",
                413: "Upload-Length is over Tus-Max-Size",
                422: "the device is not enrolled on this server", 507: TUS_WRITE[507]}),
    Route("HEAD", "/tus/{upload_id}", "tus.head", "The upload's durable offset", "upload", params=(UPLOAD, TUS),
          answer=None, also={**TUS_STATUSES, 404: "no such upload for this dock"}),
    Route("PATCH", "/tus/{upload_id}", "tus.patch", "Append bytes; the last byte ingests and returns the receipt",
          "upload", params=(UPLOAD, TUS, _header("Upload-Offset", "where these bytes start", required=True,
                                                  pattern="^[0-9]{1,20}$"),
                            _header("Upload-Checksum", "sha1 or sha256, then the chunk's digest in base64",
                                    maxLength=200)),
          status=204, answer=None, body_type="application/offset+octet-stream",
          also={**TUS_STATUSES, 404: "no such upload for this dock", **TUS_WRITE}),
    Route("DELETE", "/tus/{upload_id}", "tus.delete", "Terminate an upload (never held evidence)", "upload",
          params=(UPLOAD, TUS), status=204, answer=None,
          also={**TUS_STATUSES, 404: "no such upload for this dock", 423: TUS_WRITE[423]}),
    Route("GET", "/api/v1/receipts/{device_id}/{sequence}", "api.receipt", "A receipt issued earlier",
          "receipt.read", params=(DEVICE, _path("sequence", "the segment's place in the device's chain (1, 2, ...)",
                                                pattern=published(SEQUENCE_RE))), answer=m.Receipt),
    Route("GET", "/api/v1/segments/{segment_hash}", "api.segment", "What the server holds about a segment",
          "segment.read", params=(_path("segment_hash", "SHA-256 of the sealed file, hexadecimal",
                                        pattern=published(HASH_RE)),), answer=m.Segment),
    # ---- session
    Route("GET", "/api/v1/whoami", "staff.whoami", "The caller's name, role and permissions", "session",
          answer=m.WhoAmI),
    Route("POST", "/api/v1/logout", "staff.logout", "Revoke the caller's token", "session", answer=m.Status),
    # ---- footage
    Route("GET", "/api/v1/clips", "staff.clips", "Clips recorded in a window (an officer sees their own)",
          "clip.list", params=(*WINDOW, _p("device", "only this device", pattern=published(DEVICE_ID_RE)),
                               _p("officer", "only this officer's", maxLength=64)),
          own_footage=True, answer=m.ClipList),
    Route("GET", "/api/v1/clips/{clip_id}", "staff.clip",
          "A clip's segments, retention category, due date, marks and holds", "clip.read", params=(CLIP,),
          own_footage=True, answer=m.ClipView),
    Route("GET", "/api/v1/clips/{clip_id}/video", "staff.clip_video",
          "The clip decrypted and verified, as MP4 (H.264/AAC, faststart), by byte range, never to be cached. "
          "The first request opens a view for the caller (audited: decrypt, key use); their further requests "
          "read that view until it expires (an hour)", "clip.view",
          params=(CLIP, _header("Range", "one byte range, RFC 9110: bytes=FIRST-LAST, bytes=FIRST- or bytes=-N")),
          own_footage=True, produces="video/mp4",
          also={**CONFLICT, 206: "the range asked for (Content-Range)",
                416: "a range that cannot be read or starts past the end (Content-Range: bytes */SIZE)"}),
    Route("GET", "/api/v1/clips/{clip_id}/track.gpx", "api.track_gpx", "The clip's GNSS track as GPX 1.1",
          "clip.track", params=(CLIP,), produces="application/gpx+xml"),
    Route("GET", "/api/v1/search", "api.search", "Clips recorded within radius_m of a point during a window",
          "clip.search", params=(_number("lat", "latitude, WGS 84", required=True, minimum=-90, maximum=90),
                                 _number("lon", "longitude, WGS 84", required=True, minimum=-180, maximum=180),
                                 _number("radius_m", "radius in metres", required=True, exclusiveMinimum=0,
                                         maximum=MAX_RADIUS_M), *WINDOW), answer=m.SearchAnswer),
    Route("POST", "/api/v1/clips/{clip_id}/marks", "staff.mark", "Mark a clip as evidence: kept until lifted",
          "clip.mark", params=(CLIP,), body=m.MarkBody, status=201, answer=m.Marked, also=CONFLICT),
    Route("POST", "/api/v1/clips/{clip_id}/marks/{mark_id}/lift", "staff.unmark", "Lift an evidence mark",
          "clip.unmark", params=(CLIP, Param("mark_id", "path", "the mark's number", True,
                                             {"type": "integer", "minimum": 1, "maximum": MAX_SEQ})),
          body=m.LiftBody, answer=m.Lifted, also=CONFLICT),
    Route("PUT", "/api/v1/clips/{clip_id}/category", "staff.category", "File a clip under a retention category",
          "clip.category", params=(CLIP,), body=m.CategoryBody, answer=m.Categorised, also=CONFLICT),
    Route("POST", "/api/v1/clips/{clip_id}/exports", "staff.evidential_export",
          "Evidential export for a case: the clip verified, decrypted and unredacted as MP4, with a signed manifest "
          "(hashes of the sealed originals, the decrypted media and the output; who, when, the case). The clip must "
          "carry an active evidence mark for case_ref (audited: key use, decrypt, export)",
          "clip.export", params=(CLIP,), body=m.EvidentialExportBody, status=201, answer=m.ExportMade,
          also=CONFLICT),
    Route("GET", "/api/v1/clips/{clip_id}/exports/{export}/{name}", "staff.evidential_file",
          "Download a file of an evidential export: its manifest, signature or MP4 (audited: export)",
          "clip.export", params=(CLIP, EXPORT, EXPORT_FILE), produces=EXPORT_FILES),
    # ---- retention
    Route("GET", "/api/v1/retention/due", "staff.due",
          "Clips due for deletion within the next days (default 7), with what holds any of them",
          "retention.due", params=(_int("days", "look-ahead in days (default 7)", 0, 366),
                                   _p("include_held", "1: list marked and requested clips too", **FLAG)),
          answer=m.DueList),
    Route("GET", "/api/v1/retention/sweep-preview", "staff.sweep_preview",
          "Dry run of the retention sweep: what it would delete now; nothing is changed", "retention.preview",
          params=(_int("limit", "list at most this many clip ids (default 1000)", 0, MAX_LISTED),),
          answer=m.SweepReport),
    Route("POST", "/api/v1/retention/sweep", "staff.sweep",
          "Run a retention sweep now (as the hourly timer does): crypto-shred what is due, tombstone and audit each "
          "deletion, sign an audit checkpoint; 409 while another is running", "retention.sweep",
          answer=m.SweepReport, also={409: "another sweep started over HTTP is still running"}),
    # ---- subject access requests
    Route("POST", "/api/v1/requests", "staff.log_request",
          "Log a subject access request; every clip it matches is held at once", "request.manage",
          body=m.LogRequestBody, status=201, answer=m.RequestLogged),
    Route("GET", "/api/v1/requests", "staff.requests", "Requests, oldest due first (audited: view)",
          "request.manage",
          params=(_p("status", "open, extended or closed", enum=["open", "extended", "closed"]),
                  _p("overdue", "1: only open requests past due", **FLAG)), answer=m.RequestList),
    Route("GET", "/api/v1/requests/{request_id}", "staff.request",
          "One request, the clips it holds and its exports (audited: view)", "request.manage", params=(REQUEST,),
          answer=m.RequestView),
    Route("GET", "/api/v1/requests/{request_id}/candidates", "staff.candidates",
          "Search clips for a request by window, device, officer and place", "request.manage",
          params=(REQUEST, *WINDOW, _p("device", "device id", pattern=published(DEVICE_ID_RE)),
                  _p("officer", "officer user name", maxLength=64),
                  _number("lat", "latitude (with lon and radius_m)", minimum=-90, maximum=90),
                  _number("lon", "longitude (with lat and radius_m)", minimum=-180, maximum=180),
                  _number("radius_m", "radius in metres (with lat and lon)", exclusiveMinimum=0,
                          maximum=MAX_RADIUS_M)), answer=m.Candidates),
    Route("POST", "/api/v1/requests/{request_id}/holds", "staff.hold", "Hold more clips for the request",
          "request.manage", params=(REQUEST,), body=m.HoldBody, answer=m.HoldsAdded, also=CONFLICT),
    Route("POST", "/api/v1/requests/{request_id}/exports", "staff.export",
          "Decrypt chosen held clips, blur faces but the requester's, write MP4s and a signed manifest; the "
          "answer links each file for download",
          "request.export", params=(REQUEST,), body=m.ExportBody, status=201, answer=m.ExportMade, also=CONFLICT),
    Route("GET", "/api/v1/requests/{request_id}/exports/{export}/{name}", "staff.export_file",
          "Download a file of a subject access export: its manifest, signature or a redacted MP4 (audited: export)",
          "request.export", params=(REQUEST, EXPORT, EXPORT_FILE), produces=EXPORT_FILES),
    Route("POST", "/api/v1/requests/{request_id}/extend", "staff.extend",
          "Extend a complex request by 1 or 2 months", "request.manage", params=(REQUEST,), body=m.ExtendBody,
          answer=m.Extended, also=CONFLICT),
    Route("POST", "/api/v1/requests/{request_id}/verify", "staff.verify",
          "Record that the requester of a request from the public page was verified; it then holds by time "
          "alone", "request.manage", params=(REQUEST,), body=m.VerifyBody, answer=m.HoldsAdded, also=CONFLICT),
    Route("POST", "/api/v1/requests/{request_id}/close", "staff.close",
          "Close a request (its holds end)", "request.manage", params=(REQUEST,), body=m.CloseBody,
          answer=m.Closed, also=CONFLICT),
    # ---- audit
    Route("GET", "/api/v1/audit", "staff.audit", "Audit records, oldest first", "audit.read",
          params=(*AUDIT_FILTERS, _int("limit", "at most this many (default 1000)", 1, 10_000)),
          answer=m.AuditRecords),
    Route("GET", "/api/v1/audit/export", "staff.audit_export",
          "Audit records as JSON lines, streamed, exactly as `bwv audit export` writes them (each with prev_hash and "
          "record_hash, for audit.verify_export); up to the head when the request arrived, given in Bwv-Audit-Head "
          "(audited: export)", "audit.read", params=AUDIT_FILTERS, produces=JSON_LINES),
    Route("GET", "/api/v1/audit/checkpoints", "staff.audit_checkpoints",
          "The signed checkpoints of the audit log as JSON lines, in the format of audit-checkpoints.jsonl "
          "(`bwv audit verify --checkpoints FILE`), oldest first", "audit.read",
          params=(_int("after", "only checkpoints over more than this many records", 0, MAX_SEQ),),
          produces=JSON_LINES),
    Route("GET", "/api/v1/audit/verify", "staff.audit_verify",
          "Recompute the hash chain and check every signed checkpoint", "audit.read", answer=m.AuditVerification),
    # ---- administration
    Route("GET", "/api/v1/users", "staff.users", "Staff accounts", "user.manage", answer=m.UserList),
    Route("POST", "/api/v1/users", "staff.add_user", "Create a staff account", "user.manage",
          body=m.AddUserBody, status=201, answer=m.UserCreated, also={409: "the user name is taken"}),
    Route("PATCH", "/api/v1/users/{username}", "staff.change_user",
          "Change a role, reset a password, disable; no one changes their own role (403, audited)",
          "user.manage", params=(_path("username", "the account", pattern=published(USERNAME_RE)),),
          body=m.ChangeUserBody, answer=m.UserChanged),
    Route("POST", "/api/v1/devices/{device_id}/assignments", "staff.assign",
          "Record which officer wore a device, from when (until when)", "device.manage",
          params=(DEVICE,), body=m.AssignBody, status=201, answer=m.Assigned, also=CONFLICT),
)

def route_key(method: str, path: str) -> str:
    return f"{method} {path}"


__all__ = ["CLIP", "EXPORT", "EXPORT_FILE", "Param", "ROUTES", "Route", "published", "route_key"]
