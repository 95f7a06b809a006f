"""The bodies of the HTTP API as typed models: one description that checks input and is published.

Every JSON request body a handler reads is a model here: `parse()` turns the
body into it or raises `BadRequest` naming the field and what is wrong, and
`api_docs` publishes the same model's JSON Schema in docs/openapi.json.  The
answers are models too (loose where a body is a report other modules build),
so the published document says what the server sends, and the Schemathesis
test (tests/lifecycle/test_api_conformance.py) holds the server to it.

The identifiers' patterns are the ones the handlers check (clip ids,
request ids, device ids), so a path parameter's published pattern and its
check cannot differ.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StringConstraints, TypeAdapter,
                      ValidationError, WithJsonSchema)

from ..sealed.layout import DEVICE_ID_RE
from . import geoindex, sar
from .users import MAX_PASSWORD, MIN_PASSWORD, ROLES, USERNAME_RE
from .errors import BadRequest

CLIP_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
REQUEST_ID_RE = re.compile(r"^SAR-[0-9]{4}-[0-9]{5}\Z")
MAX_TEXT = sar.MAX_TEXT  # free text (reasons, descriptions)
MAX_BOXES = 1000  # boxes per clip in a subject access export
MAX_EXPORT_CLIPS = 200  # clips in one subject access export (sar_export.MAX_CLIPS says the same)


def published(regex: re.Pattern) -> str:
    """A check's regular expression as JSON Schema writes it (ECMA 262 has no \\Z; its $ ends the text)."""
    return regex.pattern.replace("\\Z", "$")


def _utc_time(text: Any) -> datetime:
    """An ISO 8601 time with its offset (Z or +hh:mm): nothing may depend on the server's time zone."""
    if not isinstance(text, str):
        raise ValueError("must be a time as text (ISO 8601, e.g. 2025-11-25T14:30:00Z)")
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO 8601 time (e.g. 2025-11-25T14:30:00Z)") from None
    if t.tzinfo is None:
        raise ValueError(f"{text[:40]!r} has no time zone; add Z for UTC or an offset like +01:00")
    return t.astimezone(timezone.utc)


def _day(text: Any) -> date:
    if not isinstance(text, str):
        raise ValueError("must be a date as text (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text[:20]!r} is not a date (YYYY-MM-DD)") from None


# A time on the wire: RFC 3339 text, parsed as Python parses ISO 8601, always with an offset.
UtcTime = Annotated[datetime, PlainValidator(_utc_time),
                    WithJsonSchema({"type": "string", "format": "date-time",
                                    "description": "ISO 8601 / RFC 3339 with an offset, e.g. 2025-11-25T14:30:00Z"})]
ClipId = Annotated[str, StringConstraints(pattern=published(CLIP_ID_RE))]
DeviceId = Annotated[str, StringConstraints(pattern=published(DEVICE_ID_RE))]
# Required text: something besides spaces (the pattern says so to clients; the strip makes it so).
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT, pattern=r"\S")]
OptionalText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_TEXT)]
CaseRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"\S")]
Username = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"\S")]
NewUsername = Annotated[str, StringConstraints(pattern=published(USERNAME_RE))]
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)]
Role = Literal[ROLES]  # type: ignore[valid-type]
Number = float  # finite: the bodies' allow_inf_nan=False refuses NaN and Infinity
Day = Annotated[date, PlainValidator(_day), WithJsonSchema({"type": "string", "format": "date"})]


class Body(BaseModel):
    """A JSON request body: unknown fields are ignored (older and newer clients keep working)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)


class Answer(BaseModel):
    """A JSON answer.  Open to fields added later: a client must ignore what it does not know."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The answer as web.json_response sends it (fields under their published names)."""
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- request bodies
class LoginBody(Body):
    username: Username
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class MarkBody(Body):
    case_ref: CaseRef = Field(description="the case the clip is evidence in")
    reason: Reason


class LiftBody(Body):
    reason: Reason


class CategoryBody(Body):
    category: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32, pattern=r"\S")] = Field(
        description="a retention category of the server's policy")
    reason: Reason


class EvidentialExportBody(Body):
    case_ref: CaseRef = Field(description="the case whose active evidence mark the clip carries")
    reason: Reason


class LogRequestBody(Body):
    requester: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")]
    description: Reason = Field(description="what happened, as the requester tells it")
    received: Day | None = Field(None, description="the day the request arrived (default: today, UTC)")
    from_: UtcTime = Field(alias="from", description="start of the encounter's window")
    to: UtcTime = Field(description="end of the encounter's window")
    contact: OptionalText | None = None
    place: OptionalText | None = None
    lat: Annotated[Number, Field(ge=-90, le=90)] | None = None
    lon: Annotated[Number, Field(ge=-180, le=180)] | None = None
    radius_m: Annotated[Number, Field(gt=0, le=geoindex.MAX_RADIUS_M)] | None = None
    device: DeviceId | None = None
    officer: Username | None = None


class HoldBody(Body):
    clips: list[ClipId] = Field(min_length=1, max_length=1000)
    why: OptionalText | None = Field(None, description="default: added by staff")


# [start_s, end_s, x, y, w, h]: seconds into the clip, then a box in the video's pixels.
TimedBox = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=6, max_length=6)]


# [start_s, end_s]: seconds into the clip.
TimeRange = Annotated[list[Annotated[float, Field(allow_inf_nan=False, ge=0)]], Field(min_length=2, max_length=2)]
# [t, x, y, w, h]: where staff drew a followed box on the frame at t seconds.
Keyframe = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=5, max_length=5)]


class FollowBox(BaseModel):
    """A staff box that follows what it covers (a number plate, a screen, a face the detector missed)."""

    model_config = ConfigDict(allow_inf_nan=False)

    start_s: Annotated[float, Field(ge=0)]
    end_s: Annotated[float, Field(ge=0)]
    keyframes: list[Keyframe] = Field(min_length=1, max_length=MAX_BOXES)


class ExportBody(BaseModel):
    """A subject access export.  Further fields are passed on to the export's own plan."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    clips: list[ClipId] = Field(min_length=1, max_length=MAX_EXPORT_CLIPS)
    keep: dict[ClipId, Annotated[list[TimedBox], Field(max_length=MAX_BOXES)]] | None = Field(
        None, description="the requester's own face, left unblurred: clip id -> [[start_s, end_s, x, y, w, h], ...]")
    manual: dict[ClipId, Annotated[list[TimedBox], Field(max_length=MAX_BOXES)]] | None = Field(
        None, description="extra boxes always blurred (missed faces, screens, papers), as keep")
    follow: dict[ClipId, Annotated[list[FollowBox], Field(max_length=MAX_BOXES)]] | None = Field(
        None, description="boxes drawn over something that moves, followed forward and backward from each keyframe "
                          "between start_s and end_s and always blurred; more keyframes correct it")
    silence: dict[ClipId, Annotated[list[TimeRange], Field(max_length=MAX_BOXES)]] | None = Field(
        None, description="time ranges of the sound silenced in the export (a third party speaking, a name read "
                          "out): clip id -> [[start_s, end_s], ...]")
    bleep: dict[ClipId, Annotated[list[TimeRange], Field(max_length=MAX_BOXES)]] | None = Field(
        None, description="time ranges of the sound replaced by a 1 kHz tone, as silence")


class ExtendBody(Body):
    months: Literal[1, 2]
    reason: Reason


class VerifyBody(Body):
    how: Reason = Field(description="how the requester's identity was checked")


class CloseBody(Body):
    outcome: Reason = Field(description="what the requester was given, or why not")


class AddUserBody(Body):
    username: NewUsername
    role: Role
    password: Password
    full_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


class ChangeUserBody(Body):
    role: Role | None = None
    password: Password | None = None
    disabled: StrictBool | None = None


class AssignBody(Body):
    officer: Username = Field(description="the user name of the officer who wore the device")
    from_: UtcTime = Field(alias="from")
    to: UtcTime | None = Field(None, description="absent: still wearing it")


# --------------------------------------------------------------------------- answers
class Error(Answer):
    error: str = Field(description="what was wrong, for the person at the other end")


class DependencyCheck(Answer):
    ok: bool = Field(description="false: this dependency is down or out of room")
    detail: str = Field(description="what was found, or what went wrong, in words")


class Health(Answer):
    status: Literal["ok", "failing"] = Field(description="failing (and status 503): a dependency is down")
    service: str
    version: str
    server_key_id: str
    checks: dict[str, DependencyCheck] = Field(
        description="database, object_store, keys, upload_area and (a local store) evidence_store")


class Session(Answer):
    token: str
    expires: str
    username: str
    role: str


class WhoAmI(Answer):
    username: str
    role: str
    permissions: list[str]


class Status(Answer):
    status: str


class Segment(Answer):
    segment_hash: str
    device_id: str
    sequence: int
    clip_id: str | None = None
    chain_status: str | None = None


class Receipt(Answer):
    """A signed receipt (sealed/receipt.py): the server's word that it holds a segment."""


class AlreadyHeld(Answer):
    """tus creation of a segment the server already holds (or held until the policy deleted it)."""

    held: bool
    segment: dict[str, Any]
    deleted_by_policy: str | None = None


class Candidate(Answer):
    clip_id: str
    device_id: str
    from_: str = Field(alias="from")
    to: str
    closest_m: float | None = None


class ClipList(Answer):
    clips: list[Candidate]


class ClipView(Answer):
    clip_id: str
    device_id: str
    state: str
    recorded: str
    ends: str
    retention: dict[str, Any]
    marks: list[dict[str, Any]]
    holds: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    deleted_segments: list[dict[str, Any]]


class SearchAnswer(Answer):
    query: dict[str, Any]
    clips: list[dict[str, Any]]


class Marked(Answer):
    clip_id: str
    mark: int


class Lifted(Answer):
    clip_id: str
    mark: int
    lifted: bool


class Categorised(Answer):
    clip_id: str
    category: str


class ExportMade(Answer):
    manifest: dict[str, Any]
    files: dict[str, str] = Field(description="file name -> where to download it")


class DueClip(Answer):
    clip_id: str
    device_id: str
    category: str
    recorded: str
    due: str
    held_by_marks: int
    held_by_requests: int


class DueList(Answer):
    now: str
    until: str
    clips: list[DueClip]


class SweepReport(Answer):
    """The sweep's own report (sweep.SweepReport.to_dict), with the clip ids listed."""

    listed: int


class RequestLogged(Answer):
    request: str
    held_clips: list[str]
    due: str


class RequestList(Answer):
    requests: list[dict[str, Any]]


class RequestView(Answer):
    exports: list[dict[str, Any]]


class Candidates(Answer):
    request: str
    clips: list[Candidate]


class HoldsAdded(Answer):
    request: str
    added: list[str] = Field(description="the clips newly held")


class Extended(Answer):
    request: str
    due: str


class Closed(Answer):
    request: str
    status: str
    holds_released: int


class AuditRecord(Answer):
    seq: int
    at_utc: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: str = Field(description="the record's detail as canonical JSON text (it is what the hash covers)")
    prev_hash: str
    record_hash: str


class AuditRecords(Answer):
    records: list[AuditRecord]


class AuditVerification(Answer):
    ok: bool
    records: int


class UserList(Answer):
    users: list[dict[str, Any]]


class UserCreated(Answer):
    username: str
    role: str


class UserChanged(Answer):
    username: str
    changed: bool


class Assigned(Answer):
    assignment: int = Field(description="the assignment's number")


# --------------------------------------------------------------------------- checking
_FIELD_WORDS = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "float_type": "must be a number",
    "float_parsing": "is not a number",
    "finite_number": "must be a finite number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "date_type": "is not a date (YYYY-MM-DD)",
    "date_parsing": "is not a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "is not a date (YYYY-MM-DD)",
}


_SHAPES = {  # a pattern's meaning, in words
    published(CLIP_ID_RE): "is not a clip id (a UUID: 8-4-4-4-12 lowercase hexadecimal)",
    published(DEVICE_ID_RE): "is not a device id (1-64 letters, digits, '.', '_' or '-')",
    published(USERNAME_RE): "is not 2-64 of a-z, 0-9, '.', '_', '-' starting with a letter",
    r"\S": "is required",
}


def _where(loc: tuple) -> str:
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part == "[key]":
            name += " key"
        else:
            name += ("." if name else "") + part.removesuffix("_")
    return name or "body"


def explain(e: ValidationError) -> str:
    """One sentence per problem, each naming the field: what a person fixing the request needs."""
    said = []
    for err in e.errors(include_url=False):
        where, kind, ctx = _where(err["loc"]), err["type"], err.get("ctx") or {}
        if kind == "value_error":
            text = f"{where} {ctx.get('error', err['msg'])}"
        elif kind == "string_too_short" and ctx.get("min_length") == 1:
            text = f"{where} is required"
        elif kind == "string_too_short":
            text = f"{where} must be at least {ctx['min_length']} characters"
        elif kind == "string_too_long":
            text = f"{where} is {len(err['input'])} characters; at most {ctx['max_length']}"
        elif kind == "too_short":
            text = f"{where} must have at least {ctx['min_length']} item(s)"
        elif kind == "too_long":
            text = f"{where} must have at most {ctx['max_length']} item(s)"
        elif kind == "string_pattern_mismatch":
            shape = _SHAPES.get(ctx["pattern"], "does not match " + ctx["pattern"])
            text = f"{where} {shape}" if shape == "is required" else f"{where} {str(err['input'])[:80]!r} {shape}"
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            bound = {"greater_than": "more than", "greater_than_equal": "at least", "less_than": "less than",
                     "less_than_equal": "at most"}[kind]
            value = next(iter(v for k, v in ctx.items()))
            text = f"{where} {err['input']} is out of range: it must be {bound} {value}"
        elif kind == "literal_error":
            text = f"{where} must be {ctx.get('expected', err['msg'])}"
        elif kind in _FIELD_WORDS:
            text = f"{where} {_FIELD_WORDS[kind]}"
        else:
            text = f"{where}: {err['msg']}"
        said.append(text)
    more = f" (and {len(said) - 3} more)" if len(said) > 3 else ""
    return "; ".join(said[:3]) + more


def parse(model: type[BaseModel], doc: Any) -> Any:
    """`doc` (a decoded JSON body) as `model`, or BadRequest saying what is wrong and where."""
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise BadRequest(explain(e)) from None


def schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of a parameter's type (for a path or query parameter in the published API)."""
    return TypeAdapter(annotation).json_schema()


def time_us(name: str, text: str) -> int:
    """A query parameter's time as µs since 1970 UTC, or BadRequest naming it."""
    try:
        t = _utc_time(text)
    except ValueError as e:
        raise BadRequest(f"{name} {e}") from None
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


REQUEST_BODIES: tuple[type[BaseModel], ...] = (
    LoginBody, MarkBody, LiftBody, CategoryBody, EvidentialExportBody, LogRequestBody, HoldBody, ExportBody,
    ExtendBody, CloseBody, AddUserBody, ChangeUserBody, AssignBody)

__all__ = ["Answer", "Body", "CLIP_ID_RE", "REQUEST_ID_RE", "REQUEST_BODIES", "explain", "parse", "published",
           "schema_of", "time_us"]
