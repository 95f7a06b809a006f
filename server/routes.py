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
          own_footage=True),
    Route("GET", "/api/v1/clips/{clip_id}/track.gpx", "api.track_gpx", "The clip's GNSS track as GPX 1.1",
          "clip.track", params=(CLIP,)),
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
    # ---- retention
    Route("GET", "/api/v1/retention/due", "staff.due",
          "Clips due for deletion within the next days (default 7), with what holds any of them",
          "retention.due", params=(_p("days", "look-ahead in days (0-366, default 7)", type="integer"),
                                   _p("include_held", "1: list marked and requested clips too"))),
    # ---- subject access requests
    Route("POST", "/api/v1/requests", "staff.log_request",
          "Log a subject access request; every clip it matches is held at once", "request.manage",
          body="requester, contact, received (date), description, from, to, place, lat, lon, radius_m, "
               "device, officer"),
    Route("GET", "/api/v1/requests", "staff.requests", "Requests, oldest due first", "request.manage",
          params=(_p("status", "open, extended or closed"), _p("overdue", "1: only open requests past due"))),
    Route("GET", "/api/v1/requests/{request_id}", "staff.request", "One request and the clips it holds",
          "request.manage", params=(REQUEST,)),
    Route("GET", "/api/v1/requests/{request_id}/candidates", "staff.candidates",
          "Search clips for a request by window, device, officer and place", "request.manage",
          params=(REQUEST, *WINDOW, _p("device", "device id"), _p("officer", "officer user name"),
                  _p("lat", "latitude", type="number"), _p("lon", "longitude", type="number"),
                  _p("radius_m", "radius in metres", type="number"))),
    Route("POST", "/api/v1/requests/{request_id}/holds", "staff.hold", "Hold more clips for the request",
          "request.manage", params=(REQUEST,), body="clips (list of clip ids), why"),
    Route("POST", "/api/v1/requests/{request_id}/exports", "staff.export",
          "Decrypt chosen held clips, blur faces but the requester's, write MP4s and a manifest",
          "request.export", params=(REQUEST,),
          body="clips; keep and manual: {clip_id: [[start_s, end_s, x, y, w, h], ...]}"),
    Route("POST", "/api/v1/requests/{request_id}/extend", "staff.extend",
          "Extend a complex request by 1 or 2 months", "request.manage", params=(REQUEST,), body="months, reason"),
    Route("POST", "/api/v1/requests/{request_id}/close", "staff.close",
          "Close a request (its holds end)", "request.manage", params=(REQUEST,), body="outcome"),
    # ---- audit
    Route("GET", "/api/v1/audit", "staff.audit", "Audit records, oldest first", "audit.read",
          params=(_p("actor", "e.g. user:alice"), _p("action", "e.g. delete"), _p("target", "e.g. clip:<id>"),
                  _p("outcome", "ok, denied or failed"), _p("since", "ISO 8601"), _p("until", "ISO 8601"),
                  _p("after", "only records after this sequence number", type="integer"),
                  _p("limit", "at most this many (1-10000, default 1000)", type="integer"))),
    Route("GET", "/api/v1/audit/verify", "staff.audit_verify",
          "Recompute the hash chain and check every signed checkpoint", "audit.read"),
    # ---- administration
    Route("GET", "/api/v1/users", "staff.users", "Staff accounts", "user.manage"),
    Route("POST", "/api/v1/users", "staff.add_user", "Create a staff account", "user.manage",
          body="username, role, password, full_name"),
    Route("PATCH", "/api/v1/users/{username}", "staff.change_user", "Change a role, reset a password, disable",
          "user.manage", params=(Param("username", "path", "the account", True),),
          body="role, password, disabled"),
    Route("POST", "/api/v1/devices/{device_id}/assignments", "staff.assign",
          "Record which officer wore a device, from when (until when)", "device.manage",
          params=(Param("device_id", "path", "the camera", True),), body="officer, from, to"),
)

def route_key(method: str, path: str) -> str:
    return f"{method} {path}"


__all__ = ["CLIP", "Param", "ROUTES", "Route", "route_key"]
