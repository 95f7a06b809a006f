"""Every HTTP route of the evidence server, with the permission it needs, in one table.

The application is built from this table (app.py), the access check reads it
on every request, docs/access-control.md (endpoint x role) and
docs/openapi.json are generated from it (`bwv server api-docs`), and the
role-matrix test calls every row as every role.  A route cannot exist
without saying who may call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .users import DOCK, PERMISSIONS, ROLES


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" or "path"
    description: str
    required: bool = False
    type: str = "string"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # aiohttp pattern: /api/v1/clips/{clip_id}
    handler: str  # "tus.create" or "staff.clip": endpoint object and method name
    summary: str
    permission: str | None  # None: public (no token)
    params: tuple[Param, ...] = ()
    body: str = ""  # the JSON request body, in words (OpenAPI: an object)
    own_footage: bool = False  # an officer may call it only for their own clip
    responses: dict[int, str] = field(default_factory=dict)
    produces: str = "application/json"  # the media type of a successful answer

    def roles(self) -> tuple[str, ...]:
        """Principals that may call it: "anyone" for a public route."""
        if self.permission is None:
            return ("anyone",)
        allowed = PERMISSIONS[self.permission]
        return tuple(r for r in (DOCK, *ROLES) if r in allowed)


def _p(name: str, description: str, *, required: bool = False, type: str = "string") -> Param:
    return Param(name, "query", description, required, type)


CLIP = Param("clip_id", "path", "the clip's UUID", True)
REQUEST = Param("request_id", "path", "the subject access request, e.g. SAR-2026-00001", True)
EXPORT = Param("export", "path", "the export's number (1, 2, ...), as its manifest gives it", True, "integer")
EXPORT_FILE = Param("name", "path", "manifest.json, manifest.sig, or an output the manifest lists (<clip_id>.mp4); "
                                    "any other name is refused (404, audited)", True)
AUDIT_FILTERS = (_p("actor", "e.g. user:alice"), _p("action", "e.g. delete"), _p("target", "e.g. clip:<id>"),
                 _p("outcome", "ok, denied or failed"), _p("since", "ISO 8601"), _p("until", "ISO 8601"),
                 _p("after", "only records after this sequence number", type="integer"))
JSON_LINES = "application/x-ndjson"
WINDOW = (_p("from", "start of the window, ISO 8601 with offset", required=True),
          _p("to", "end of the window, ISO 8601 with offset", required=True))

ROUTES: tuple[Route, ...] = (
    # ---- public
    Route("GET", "/api/v1/health", "api.health", "Liveness and the server's key id", None),
    Route("POST", "/api/v1/login", "staff.login", "Log in with a user name and password; returns a bearer token",
          None, body="username, password"),
    # ---- docks (tus 1.0 uploads and receipts)
    Route("POST", "/tus/", "tus.create", "Create an upload (or 200 with the receipt: already held)", "upload"),
    Route("HEAD", "/tus/{upload_id}", "tus.head", "The upload's durable offset", "upload"),
    Route("PATCH", "/tus/{upload_id}", "tus.patch", "Append bytes; the last byte ingests and returns the receipt",
          "upload"),
    Route("DELETE", "/tus/{upload_id}", "tus.delete", "Terminate an upload (never held evidence)", "upload"),
    Route("GET", "/api/v1/receipts/{device_id}/{sequence}", "api.receipt", "A receipt issued earlier",
          "receipt.read"),
    Route("GET", "/api/v1/segments/{segment_hash}", "api.segment", "What the server holds about a segment",
          "segment.read"),
    # ---- session
    Route("GET", "/api/v1/whoami", "staff.whoami", "The caller's name, role and permissions", "session"),
    Route("POST", "/api/v1/logout", "staff.logout", "Revoke the caller's token", "session"),
    # ---- footage
    Route("GET", "/api/v1/clips", "staff.clips", "Clips recorded in a window (an officer sees their own)",
          "clip.list", params=(*WINDOW, _p("device", "only this device"), _p("officer", "only this officer's")),
          own_footage=True),
    Route("GET", "/api/v1/clips/{clip_id}", "staff.clip",
          "A clip's segments, retention category, due date, marks and holds", "clip.read", params=(CLIP,),
          own_footage=True),
    Route("GET", "/api/v1/clips/{clip_id}/video", "staff.clip_video",
          "The clip decrypted and verified, as MP4 (audited: decrypt, key use)", "clip.view", params=(CLIP,),
          own_footage=True, produces="video/mp4"),
    Route("GET", "/api/v1/clips/{clip_id}/track.gpx", "api.track_gpx", "The clip's GNSS track as GPX 1.1",
          "clip.track", params=(CLIP,), produces="application/gpx+xml"),
    Route("GET", "/api/v1/search", "api.search", "Clips recorded within radius_m of a point during a window",
          "clip.search", params=(_p("lat", "latitude, WGS 84", required=True, type="number"),
                                 _p("lon", "longitude, WGS 84", required=True, type="number"),
                                 _p("radius_m", "radius in metres", required=True, type="number"), *WINDOW)),
    Route("POST", "/api/v1/clips/{clip_id}/marks", "staff.mark", "Mark a clip as evidence: kept until lifted",
          "clip.mark", params=(CLIP,), body="case_ref, reason"),
    Route("POST", "/api/v1/clips/{clip_id}/marks/{mark_id}/lift", "staff.unmark", "Lift an evidence mark",
          "clip.unmark", params=(CLIP, Param("mark_id", "path", "the mark's number", True, "integer")),
          body="reason"),
    Route("PUT", "/api/v1/clips/{clip_id}/category", "staff.category", "File a clip under a retention category",
          "clip.category", params=(CLIP,), body="category, reason"),
    Route("POST", "/api/v1/clips/{clip_id}/exports", "staff.evidential_export",
          "Evidential export for a case: the clip verified, decrypted and unredacted as MP4, with a signed manifest "
          "(hashes of the sealed originals, the decrypted media and the output; who, when, the case). The clip must "
          "carry an active evidence mark for case_ref (audited: key use, decrypt, export)",
          "clip.export", params=(CLIP,), body="case_ref, reason"),
    Route("GET", "/api/v1/clips/{clip_id}/exports/{export}/{name}", "staff.evidential_file",
          "Download a file of an evidential export: its manifest, signature or MP4 (audited: export)",
          "clip.export", params=(CLIP, EXPORT, EXPORT_FILE), produces="application/octet-stream"),
    # ---- retention
    Route("GET", "/api/v1/retention/due", "staff.due",
          "Clips due for deletion within the next days (default 7), with what holds any of them",
          "retention.due", params=(_p("days", "look-ahead in days (0-366, default 7)", type="integer"),
                                   _p("include_held", "1: list marked and requested clips too"))),
    Route("GET", "/api/v1/retention/sweep-preview", "staff.sweep_preview",
          "Dry run of the retention sweep: what it would delete now; nothing is changed", "retention.preview",
          params=(_p("limit", "list at most this many clip ids (0-100000, default 1000)", type="integer"),)),
    Route("POST", "/api/v1/retention/sweep", "staff.sweep",
          "Run a retention sweep now (as the hourly timer does): crypto-shred what is due, tombstone and audit each "
          "deletion, sign an audit checkpoint; 409 while another is running", "retention.sweep"),
    # ---- subject access requests
    Route("POST", "/api/v1/requests", "staff.log_request",
          "Log a subject access request; every clip it matches is held at once", "request.manage",
          body="requester, contact, received (date), description, from, to, place, lat, lon, radius_m, "
               "device, officer"),
    Route("GET", "/api/v1/requests", "staff.requests", "Requests, oldest due first (audited: view)",
          "request.manage",
          params=(_p("status", "open, extended or closed"), _p("overdue", "1: only open requests past due"))),
    Route("GET", "/api/v1/requests/{request_id}", "staff.request",
          "One request, the clips it holds and its exports (audited: view)", "request.manage", params=(REQUEST,)),
    Route("GET", "/api/v1/requests/{request_id}/candidates", "staff.candidates",
          "Search clips for a request by window, device, officer and place", "request.manage",
          params=(REQUEST, *WINDOW, _p("device", "device id"), _p("officer", "officer user name"),
                  _p("lat", "latitude", type="number"), _p("lon", "longitude", type="number"),
                  _p("radius_m", "radius in metres", type="number"))),
    Route("POST", "/api/v1/requests/{request_id}/holds", "staff.hold", "Hold more clips for the request",
          "request.manage", params=(REQUEST,), body="clips (list of clip ids), why"),
    Route("POST", "/api/v1/requests/{request_id}/exports", "staff.export",
          "Decrypt chosen held clips, blur faces but the requester's, write MP4s and a signed manifest; the "
          "answer links each file for download",
          "request.export", params=(REQUEST,),
          body="clips; keep and manual: {clip_id: [[start_s, end_s, x, y, w, h], ...]}"),
    Route("GET", "/api/v1/requests/{request_id}/exports/{export}/{name}", "staff.export_file",
          "Download a file of a subject access export: its manifest, signature or a redacted MP4 (audited: export)",
          "request.export", params=(REQUEST, EXPORT, EXPORT_FILE), produces="application/octet-stream"),
    Route("POST", "/api/v1/requests/{request_id}/extend", "staff.extend",
          "Extend a complex request by 1 or 2 months", "request.manage", params=(REQUEST,), body="months, reason"),
    Route("POST", "/api/v1/requests/{request_id}/close", "staff.close",
          "Close a request (its holds end)", "request.manage", params=(REQUEST,), body="outcome"),
    # ---- audit
    Route("GET", "/api/v1/audit", "staff.audit", "Audit records, oldest first", "audit.read",
          params=(*AUDIT_FILTERS, _p("limit", "at most this many (1-10000, default 1000)", type="integer"))),
    Route("GET", "/api/v1/audit/export", "staff.audit_export",
          "Audit records as JSON lines, streamed, exactly as `bwv audit export` writes them (each with prev_hash and "
          "record_hash, for audit.verify_export); up to the head when the request arrived, given in Bwv-Audit-Head "
          "(audited: export)", "audit.read", params=AUDIT_FILTERS, produces=JSON_LINES),
    Route("GET", "/api/v1/audit/checkpoints", "staff.audit_checkpoints",
          "The signed checkpoints of the audit log as JSON lines, in the format of audit-checkpoints.jsonl "
          "(`bwv audit verify --checkpoints FILE`), oldest first", "audit.read",
          params=(_p("after", "only checkpoints over more than this many records", type="integer"),),
          produces=JSON_LINES),
    Route("GET", "/api/v1/audit/verify", "staff.audit_verify",
          "Recompute the hash chain and check every signed checkpoint", "audit.read"),
    # ---- administration
    Route("GET", "/api/v1/users", "staff.users", "Staff accounts", "user.manage"),
    Route("POST", "/api/v1/users", "staff.add_user", "Create a staff account", "user.manage",
          body="username, role, password, full_name"),
    Route("PATCH", "/api/v1/users/{username}", "staff.change_user",
          "Change a role, reset a password, disable; no one changes their own role (403, audited)",
          "user.manage", params=(Param("username", "path", "the account", True),),
          body="role, password, disabled"),
    Route("POST", "/api/v1/devices/{device_id}/assignments", "staff.assign",
          "Record which officer wore a device, from when (until when)", "device.manage",
          params=(Param("device_id", "path", "the camera", True),), body="officer, from, to"),
)

def route_key(method: str, path: str) -> str:
    return f"{method} {path}"


__all__ = ["CLIP", "EXPORT", "EXPORT_FILE", "Param", "ROUTES", "Route", "route_key"]
