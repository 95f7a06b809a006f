"""The audit log: who did what to which footage, when, and with what outcome, kept so it can be proved.

Every action on evidence (upload, view, decrypt, export, mark, hold, delete,
key use, a refused access, a search, user administration...) appends one
record: actor, time, action, target, outcome and a small JSON detail.  A
defence lawyer will ask whether this log is complete and unaltered; the log
is built so that the answer can be checked rather than asserted.

Hash chain.  Records are numbered 1, 2, 3... without gaps (``seq``) and each
carries the hash of the record before it (``prev_hash``; record 1 carries 64
zeros) and its own hash over all of its fields, that link included::

    record_hash = SHA-256(RECORD_CONTEXT || canonical JSON of
                          {seq, at_utc, actor, action, target, outcome, detail, prev_hash})

Canonical JSON is keys sorted, no whitespace, UTF-8 without escaping
non-ASCII (for these values it is RFC 8785's form); ``detail`` is hashed as
the exact text stored.  Altering a field breaks that record's hash; removing,
inserting or reordering records breaks the seq numbering or the links.

Checkpoints.  Someone who can write the database can also recompute every
hash, so a chain alone proves nothing against its keeper.  `checkpoint`
therefore has the server key sign the head (size and last hash), in the
manner of Certificate Transparency's signed tree heads.  A rewrite of
history then contradicts an earlier signature, and a truncation leaves a
signature that covers records no longer there.  Checkpoints are stored
in the database, and they should also be kept elsewhere (`append_checkpoint_file`,
or handed to an auditor): only a checkpoint kept off the server catches a
truncation of the log *and* of its checkpoint table, or a rewrite by
someone holding the server key.  The format is specified for independent
verifiers in docs/audit.md.

`append` and `checkpoint` run inside the caller's write transaction, so an
action and its record commit together or not at all.  `verify` walks the
whole log once, in constant memory, and reports each problem in plain words
with the record it concerns.  The schema is `SCHEMA` (the server applies it
as a migration in db.py).  This module knows nothing of HTTP or the CLI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import sqlite3
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from json.encoder import encode_basestring
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, TextIO, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..sealed.durable import fsync_dir
from .store import audit_log

# --------------------------------------------------------------------------- format constants
RECORD_CONTEXT = b"OpenBWV audit record v1\x00"
CHECKPOINT_CONTEXT = b"OpenBWV audit checkpoint v1\x00"
CHECKPOINT_FORMAT = "openbwv-audit-checkpoint-v1"
GENESIS_HASH = "0" * 64  # the prev_hash of record 1

MAX_ACTOR_CHARS = 128
MAX_TARGET_CHARS = 512
MAX_DETAIL_BYTES = 64 * 1024  # room for metadata, not for a data dump (a long segment list: record its hash)
MAX_QUERY_LIMIT = 100_000
MAX_CHECKPOINT_BYTES = 4096
MAX_EXPORT_LINE_BYTES = 256 * 1024  # a record with the largest detail, escaped once more
MAX_PROBLEMS_LISTED = 1000  # a report lists this many problems and counts the rest

SERVER_ACTOR = "server"  # the actor of records the server writes on its own behalf (checkpoints)

SCHEMA = """
CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY CHECK (seq >= 1),
    at_utc       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    detail       TEXT NOT NULL,
    prev_hash    TEXT NOT NULL CHECK (length(prev_hash) = 64),
    record_hash  TEXT NOT NULL CHECK (length(record_hash) = 64)
);
CREATE INDEX audit_log_by_actor ON audit_log(actor, seq);
CREATE INDEX audit_log_by_target ON audit_log(target, seq);
CREATE INDEX audit_log_by_time ON audit_log(at_utc);
CREATE TABLE audit_checkpoints (
    size         INTEGER PRIMARY KEY CHECK (size >= 1),
    head_hash    TEXT NOT NULL CHECK (length(head_hash) = 64),
    at_utc       TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    signature    TEXT NOT NULL
);
"""

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX = re.compile(r"(?:[0-9a-f]{2})+\Z")
_AT_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Action(StrEnum):
    """What was done.  A fixed vocabulary, so that "every view of clip X" is one exact query."""

    UPLOAD = "upload"  # a segment received and held
    VIEW = "view"
    DECRYPT = "decrypt"
    EXPORT = "export"
    MARK = "mark"  # marked as evidence: kept past routine retention
    UNMARK = "unmark"
    HOLD = "hold"  # legal hold
    RELEASE = "release"
    DELETE = "delete"
    KEY_USE = "key_use"  # a private key unwrapped a segment key or signed
    ACCESS_DENIED = "access_denied"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    SEARCH = "search"
    REQUEST_LOGGED = "request_logged"  # a records / disclosure request
    REQUEST_CLOSED = "request_closed"
    REQUEST_EXTENDED = "request_extended"
    REQUEST_VERIFIED = "request_verified"  # staff checked who made a request on the public page
    USER_ADDED = "user_added"
    USER_CHANGED = "user_changed"
    USER_REMOVED = "user_removed"
    TOKEN_ISSUED = "token_issued"
    TOKEN_REVOKED = "token_revoked"
    CATEGORY_SET = "category_set"
    DEVICE_ASSIGNED = "device_assigned"  # a camera issued to an officer: whose footage it records
    SWEEP_STARTED = "sweep_started"  # the retention sweep
    SWEEP_FINISHED = "sweep_finished"
    AUDIT_VERIFIED = "audit_verified"
    AUDIT_EXPORTED = "audit_exported"
    MIGRATE = "migrate"  # the installation copied here from another (`bwv server migrate`), reconciled
    CHECKPOINT = "checkpoint"  # written by `checkpoint` only: the record a signed checkpoint covers


class Outcome(StrEnum):
    OK = "ok"
    DENIED = "denied"  # refused: not permitted
    FAILED = "failed"  # permitted, but it did not succeed


ACTIONS = frozenset(a.value for a in Action)
OUTCOMES = frozenset(o.value for o in Outcome)

# Problem kinds in a VerifyReport.
ALTERED = "altered"
MISSING = "missing"
REORDERED = "reordered"
BROKEN_LINK = "broken_link"
TRUNCATED = "truncated"
BAD_CHECKPOINT = "bad_checkpoint"
CHECKPOINT_MISMATCH = "checkpoint_mismatch"
CHECKPOINT_MISSING = "checkpoint_missing"
UNREADABLE = "unreadable"

PublicKeys = Union[ed25519.Ed25519PublicKey, Mapping[Union[bytes, str], ed25519.Ed25519PublicKey]]


# --------------------------------------------------------------------------- errors
class AuditError(Exception):
    """The audit log cannot do what was asked; the message says what was expected and found."""


class AuditInputError(AuditError, ValueError):
    """A record that would not be a valid entry: unknown action or outcome, oversized or malformed field."""


class CheckpointInvalid(AuditError):
    """A checkpoint document (JSON line or file) that is malformed."""


# --------------------------------------------------------------------------- records
# str -> JSON string literal, non-ASCII kept, control characters escaped as RFC 8785 does (C-accelerated).
_json_string: Callable[[str], str] = encode_basestring


def canonical_json(value: object) -> str:
    """Sorted keys, no whitespace, non-ASCII as UTF-8, no NaN: one text for one value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(seq: int, at_utc: str, actor: str, action: str, target: str, outcome: str, detail: str,
                prev_hash: str) -> str:
    """The hash of one record, hex.  Equal to hashing `RECORD_CONTEXT` + `canonical_json` of the eight
    fields (tests hold it to that); spelled out here because `verify` runs it a million times."""
    e = _json_string
    text = ('{"action":' + e(action) + ',"actor":' + e(actor) + ',"at_utc":' + e(at_utc)
            + ',"detail":' + e(detail) + ',"outcome":' + e(outcome) + ',"prev_hash":' + e(prev_hash)
            + ',"seq":' + str(int(seq)) + ',"target":' + e(target) + "}")
    return hashlib.sha256(RECORD_CONTEXT + text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the log, as stored (and as exported: one JSON line each)."""

    seq: int
    at_utc: str  # ISO 8601, UTC, microseconds: 2025-01-31T12:00:00.000000Z
    actor: str
    action: str
    target: str
    outcome: str
    detail: str  # canonical JSON object, exactly the text that was hashed
    prev_hash: str
    record_hash: str

    @property
    def details(self) -> dict:
        return json.loads(self.detail)

    def computed_hash(self) -> str:
        return record_hash(self.seq, self.at_utc, self.actor, self.action, self.target, self.outcome,
                           self.detail, self.prev_hash)

    def to_dict(self) -> dict:
        # Spelled out rather than dataclasses.asdict, which deep-copies: an export writes a million of these.
        return {"seq": self.seq, "at_utc": self.at_utc, "actor": self.actor, "action": self.action,
                "target": self.target, "outcome": self.outcome, "detail": self.detail,
                "prev_hash": self.prev_hash, "record_hash": self.record_hash}

    def to_json(self) -> str:
        """`canonical_json(self.to_dict())`, spelled out for speed like `record_hash` (tests hold it to that)."""
        e = _json_string
        return ('{"action":' + e(self.action) + ',"actor":' + e(self.actor) + ',"at_utc":' + e(self.at_utc)
                + ',"detail":' + e(self.detail) + ',"outcome":' + e(self.outcome) + ',"prev_hash":'
                + e(self.prev_hash) + ',"record_hash":' + e(self.record_hash) + ',"seq":' + str(int(self.seq))
                + ',"target":' + e(self.target) + "}")


def utc_text(at: datetime) -> str:
    """The one timestamp form in the log: fixed width, so text order is time order in queries."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise AuditInputError(f"time {at.isoformat()} has no time zone; audit times must be unambiguous")
    at = at.astimezone(timezone.utc)
    if at.year < 1970:
        raise AuditInputError(f"time {at.isoformat()} is before 1970: no audit record is that old "
                              "(is the clock wrong?)")
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now_text(at: datetime | None) -> str:
    return utc_text(datetime.now(timezone.utc) if at is None else at)


def _text_field(name: str, value: object, limit: int, *, empty_ok: bool) -> str:
    if not isinstance(value, str):
        raise AuditInputError(f"audit {name} must be text, found {type(value).__name__}")
    if not value and not empty_ok:
        raise AuditInputError(f"audit {name} must not be empty")
    if len(value) > limit:
        raise AuditInputError(f"audit {name} is {len(value)} characters, more than the {limit} allowed: "
                              f"{value[:40]!r}...")
    if _CONTROL.search(value):
        raise AuditInputError(f"audit {name} {value[:60]!r} contains a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditInputError(f"audit {name} {value[:60]!r} is not valid Unicode (lone surrogate)") from None
    return str(value)


def printable(text: object, limit: int) -> str:
    """Untrusted text (a request path, a user name typed at a login prompt) made fit for a record.

    `append` refuses control characters and oversized fields, which is right
    for what the server itself names, but a record of a refused request must
    not be refused in turn because the attacker put a newline in the URL.
    Control characters become ``\\xNN``, a lone surrogate ``\\udNNN``, and
    text over `limit` characters is cut, ending in "…".
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, found {limit}")
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _vocabulary(kind: str, value: object, known: frozenset[str]) -> str:
    if not isinstance(value, str) or value not in known:
        raise AuditInputError(f"unknown audit {kind} {value!r}; known: {', '.join(sorted(known))}")
    return str(value)


def _detail_text(detail: Mapping[str, object] | None) -> str:
    if detail is None:
        return "{}"
    if not isinstance(detail, Mapping):
        raise AuditInputError(f"audit detail must be a JSON object (a dict), found {type(detail).__name__}")
    try:
        text = canonical_json(dict(detail))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError) as e:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise AuditInputError(f"audit detail is not plain JSON: {e}") from None
    if size > MAX_DETAIL_BYTES:
        raise AuditInputError(f"audit detail is {size} bytes of JSON, more than the {MAX_DETAIL_BYTES} allowed")
    return text


def _require_transaction(db: sqlite3.Connection, what: str) -> None:
    if not db.in_transaction:
        raise AuditError(
            f"audit {what} must run inside the caller's write transaction (BEGIN IMMEDIATE), so that the "
            "action and its record commit together; this connection has none open"
        )


def _head(db: sqlite3.Connection) -> tuple[int, str] | None:
    """(seq, record_hash) of the last record: one step down the primary key, whatever the log's length."""
    return audit_log.head_link(db)


def _insert(db: sqlite3.Connection, actor: str, action: str, target: str, outcome: str, detail: str,
            at_utc: str) -> AuditRecord:
    audit_log.lock_chain(db)  # several nodes on one PostgreSQL: one appender at a time (store/audit_log.py)
    head = _head(db)
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
    rec = AuditRecord(seq, at_utc, actor, action, target, outcome, detail, prev,
                      record_hash(seq, at_utc, actor, action, target, outcome, detail, prev))
    audit_log.insert(db, (rec.seq, rec.at_utc, rec.actor, rec.action, rec.target, rec.outcome, rec.detail,
                          rec.prev_hash, rec.record_hash))
    return rec


def append(
    db: sqlite3.Connection,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str = Outcome.OK,
    detail: Mapping[str, object] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append one record inside the caller's open write transaction and return it.

    The caller's transaction is what makes the record trustworthy: the action
    and its record commit together, or a rollback removes both, so the log
    never claims an action that did not happen nor misses one that did.  The
    head is read and the next record inserted under that same transaction's
    lock, so concurrent appends cannot fork the chain.  Cost is one primary-key
    lookup and one insert, independent of the log's length.

    `actor` names who acted ("user:alice", "dock:dock-1", "server"); `target`
    what was acted on (a segment hash, clip id, user name; "" if nothing);
    `detail` a small JSON object; `at` defaults to now (must carry a time zone).
    """
    if action == Action.CHECKPOINT:
        raise AuditInputError("audit action 'checkpoint' is written by checkpoint() alone, with its signature")
    action = _vocabulary("action", action, ACTIONS)
    outcome = _vocabulary("outcome", outcome, OUTCOMES)
    actor = _text_field("actor", actor, MAX_ACTOR_CHARS, empty_ok=False)
    target = _text_field("target", target, MAX_TARGET_CHARS, empty_ok=True)
    detail_text = _detail_text(detail)
    at_utc = _now_text(at)
    _require_transaction(db, "append")
    return _insert(db, actor, action, target, outcome, detail_text, at_utc)


def append_many(db: sqlite3.Connection, entries: Iterable[Mapping[str, object]]) -> list[AuditRecord]:
    """Append several records, in the order given, inside the caller's open write transaction: each
    entry holds `append`'s keyword arguments and is checked as `append` checks them; the records
    are what as many `append` calls would write.  The chain is locked and its head read once and the
    rows inserted by one executemany: a sweep records up to a batch of deletions per transaction, and
    on PostgreSQL each statement is a round trip (three per `append`)."""
    rows: list[tuple[str, str, str, str, str, str]] = []
    for entry in entries:
        if entry["action"] == Action.CHECKPOINT:
            raise AuditInputError("audit action 'checkpoint' is written by checkpoint() alone, with its signature")
        rows.append((_text_field("actor", entry["actor"], MAX_ACTOR_CHARS, empty_ok=False),
                     _vocabulary("action", entry["action"], ACTIONS),
                     _text_field("target", entry["target"], MAX_TARGET_CHARS, empty_ok=True),
                     _vocabulary("outcome", entry.get("outcome", Outcome.OK), OUTCOMES),
                     _detail_text(entry.get("detail")), _now_text(entry.get("at"))))
    if not rows:
        return []
    _require_transaction(db, "append")
    audit_log.lock_chain(db)
    head = _head(db)
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
    records = []
    for actor, action, target, outcome, detail, at_utc in rows:
        rec = AuditRecord(seq, at_utc, actor, action, target, outcome, detail, prev,
                          record_hash(seq, at_utc, actor, action, target, outcome, detail, prev))
        records.append(rec)
        seq, prev = seq + 1, rec.record_hash
    audit_log.insert_many(db, [(r.seq, r.at_utc, r.actor, r.action, r.target, r.outcome, r.detail, r.prev_hash,
                                r.record_hash) for r in records])
    return records


def head(db: sqlite3.Connection) -> AuditRecord | None:
    """The last record, or None for an empty log."""
    row = audit_log.head(db)
    return AuditRecord(*row) if row else None


# --------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """The server's signature over the log's first `size` records, whose last has hash `head_hash`.

    Wire and file form, one line: ``{"checkpoint":{at_utc,format,head_hash,key_id,size},"signature":b64}``
    in canonical JSON; the signature is Ed25519 over ``CHECKPOINT_CONTEXT`` + the canonical JSON of the
    ``checkpoint`` object.
    """

    size: int
    head_hash: str  # hex: record_hash of record `size`
    at_utc: str
    key_id: str  # hex: the server key that signed (ServerPublicKey.key_id)
    signature: str  # base64 of 64 bytes

    def signed_fields(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "size": self.size, "head_hash": self.head_hash,
                "at_utc": self.at_utc, "key_id": self.key_id}

    def signed_bytes(self) -> bytes:
        return CHECKPOINT_CONTEXT + canonical_json(self.signed_fields()).encode("utf-8")

    def to_dict(self) -> dict:
        return {"checkpoint": self.signed_fields(), "signature": self.signature}

    def to_json(self) -> str:
        """One line, no newline: what an auditor keeps."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, doc: object) -> "Checkpoint":
        if not isinstance(doc, dict) or set(doc) != {"checkpoint", "signature"}:
            raise CheckpointInvalid("a checkpoint must be an object with exactly 'checkpoint' and 'signature'")
        fields, signature = doc["checkpoint"], doc["signature"]
        expected = {"format", "size", "head_hash", "at_utc", "key_id"}
        if not isinstance(fields, dict) or set(fields) != expected:
            raise CheckpointInvalid(f"checkpoint fields must be exactly {sorted(expected)}")
        size = fields["size"]
        checks = [
            (fields["format"] == CHECKPOINT_FORMAT, f"format {fields['format']!r}, expected {CHECKPOINT_FORMAT!r}"),
            (isinstance(size, int) and not isinstance(size, bool) and size >= 1,
             f"size {size!r} is not a positive integer"),
            (isinstance(fields["head_hash"], str) and bool(_HEX64.match(fields["head_hash"])),
             "head_hash is not 64 lowercase hex digits"),
            (isinstance(fields["at_utc"], str) and bool(_AT_UTC.match(fields["at_utc"])),
             f"at_utc {fields['at_utc']!r} is not of the form 2025-01-31T12:00:00.000000Z"),
            (isinstance(fields["key_id"], str) and bool(_HEX.match(fields["key_id"])), "key_id is not hex"),
            (isinstance(signature, str) and len(_b64_or_empty(signature)) == 64, "signature is not base64 of 64 bytes"),
        ]
        for ok, why in checks:
            if not ok:
                raise CheckpointInvalid(f"checkpoint rejected: {why}")
        return cls(size, fields["head_hash"], fields["at_utc"], fields["key_id"], signature)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Checkpoint":
        if len(text) > MAX_CHECKPOINT_BYTES:
            raise CheckpointInvalid(f"checkpoint of {len(text)} bytes exceeds {MAX_CHECKPOINT_BYTES}")
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise CheckpointInvalid(f"checkpoint is not JSON: {e}") from None
        return cls.from_dict(doc)

    def signature_problem(self, keys: PublicKeys) -> str | None:
        """None if the signature verifies with the key for `key_id`; otherwise why not, in words."""
        key = _key_for(keys, self.key_id)
        if key is None:
            return f"was signed by key {self.key_id}, which is not among the server keys given"
        try:
            key.verify(_b64_or_empty(self.signature), self.signed_bytes())
        except (InvalidSignature, TypeError, ValueError):
            return ("has a bad signature: it does not verify with the server key "
                    "(forged, altered, or signed by another key)")
        return None


def _b64_or_empty(text: object) -> bytes:
    try:
        return base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except (binascii.Error, ValueError):
        return b""


def _key_for(keys: PublicKeys, key_id: object) -> ed25519.Ed25519PublicKey | None:
    if isinstance(keys, ed25519.Ed25519PublicKey):
        return keys
    for kid, key in keys.items():
        if (kid.hex() if isinstance(kid, bytes) else kid) == key_id:
            return key
    return None


def stored_checkpoints(db: sqlite3.Connection) -> list[Checkpoint]:
    """Every checkpoint in the database, oldest first (a few thousand a year: small)."""
    return [Checkpoint(*row) for row in audit_log.checkpoints(db)]


def latest_checkpoint(db: sqlite3.Connection) -> Checkpoint | None:
    row = audit_log.latest_checkpoint(db)
    return Checkpoint(*row) if row else None


def checkpoint(
    db: sqlite3.Connection,
    sign: Callable[[bytes], bytes],
    key_id: bytes,
    *,
    at: datetime | None = None,
) -> Checkpoint | None:
    """Sign the log's head inside the caller's write transaction; None if nothing is new since the last.

    First a `checkpoint` record is appended, and the signature covers it: the
    log itself then says when each checkpoint was signed, so a checkpoint
    deleted from its table is noticed by `verify` (unless the records after
    it go too, which only a checkpoint kept elsewhere can reveal).

    A checkpoint never signs what it has not checked: the records since the
    previous checkpoint are re-hashed and their links followed first, and a
    log found shorter than a checkpoint already given, or broken since it,
    raises AuditError rather than lend it a signature.  That check reads only
    the records since the last checkpoint, so checkpoint often (hourly, say).
    """
    _require_transaction(db, "checkpoint")
    at_utc = _now_text(at)
    audit_log.lock_chain(db)  # the head read here is the one the checkpoint record follows
    current = _head(db)
    last = latest_checkpoint(db)
    done = last.size if last else 0
    if current is not None and current[0] < done:
        raise AuditError(
            f"the audit log ends at record {current[0]} but checkpoint {done} was signed over more: records "
            "are missing (run `bwv audit verify`); no new checkpoint signed"
        )
    _check_last(db, last)
    if current is None or current[0] == done:
        return None
    _check_since(db, last)
    rec = _insert(db, SERVER_ACTOR, Action.CHECKPOINT.value, "audit_log", Outcome.OK.value,
                  canonical_json({"previous_checkpoint": done}), at_utc)
    unsigned = Checkpoint(rec.seq, rec.record_hash, at_utc, key_id.hex(), "")
    signature = base64.b64encode(sign(unsigned.signed_bytes())).decode("ascii")
    cp = Checkpoint(rec.seq, rec.record_hash, at_utc, key_id.hex(), signature)
    audit_log.insert_checkpoint(db, (cp.size, cp.head_hash, cp.at_utc, cp.key_id, cp.signature))
    return cp


def _check_last(db: sqlite3.Connection, last: Checkpoint | None) -> None:
    """The last checkpoint row must name a checkpoint record with the hash it signed.  Otherwise a row
    slipped into the table could make the server believe the log is signed and stop signing it."""
    if last is None:
        return
    row = audit_log.link_at(db, last.size)
    if row is None or row[0] != last.head_hash or row[1] != Action.CHECKPOINT:
        raise AuditError(f"record {last.size} is not the checkpoint record the last checkpoint signed: the log or "
                         "its checkpoint table was altered (run `bwv audit verify`); no new checkpoint signed")


def _check_since(db: sqlite3.Connection, last: Checkpoint | None) -> None:
    """Re-hash and follow the links from the last checkpoint to the head; raise on the first fault."""
    done, prev = (last.size, last.head_hash) if last else (0, GENESIS_HASH)
    expected = done + 1
    for row in audit_log.records_after(db, done):
        rec = AuditRecord(*row)
        if rec.seq != expected or rec.prev_hash != prev or rec.computed_hash() != rec.record_hash:
            raise AuditError(f"record {rec.seq} is altered, misplaced or unlinked since checkpoint {done} "
                             "(run `bwv audit verify`); no new checkpoint signed")
        expected, prev = rec.seq + 1, rec.record_hash


def append_checkpoint_file(path: Path | str, cp: Checkpoint) -> None:
    """Append one checkpoint as a JSON line and fsync: the copy kept where the database's keeper cannot
    reach (another machine, write-once storage, the auditor's mailbox).

    A line torn by a power cut during an earlier append is closed off first,
    so it never runs into this one.
    """
    path = Path(path)
    line = (cp.to_json() + "\n").encode("utf-8")
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def read_checkpoint_file(path: Path | str) -> list[Checkpoint]:
    """The checkpoints in a file written by `append_checkpoint_file`, in file order.

    A malformed line is an error naming its line number, except a last line
    without its newline that does not parse: that is an append cut short by a
    power cut, and it is skipped (the database holds the same checkpoint).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CheckpointInvalid(f"cannot read checkpoint file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CheckpointInvalid(f"checkpoint file {path} is not UTF-8 text") from None
    lines = text.split("\n")
    out: list[Checkpoint] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.from_json(line))
        except CheckpointInvalid as e:
            if number == len(lines):  # no newline after it: torn
                break
            raise CheckpointInvalid(f"{path} line {number}: {e}") from None
    return out


# --------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Problem:
    """One thing wrong, with the record (seq) it concerns; `kind` is one of the module's problem kinds."""

    seq: int | None
    kind: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    """What `verify` found.  `ok` only if every record, link and checkpoint checked out."""

    records: int = 0  # records read
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints: int = 0  # stored checkpoints checked
    external: int = 0  # external checkpoints checked
    signed_through: int = 0  # the largest size covered by a valid checkpoint that matches the log
    problems: list[Problem] = field(default_factory=list)  # the first MAX_PROBLEMS_LISTED, by seq
    problems_total: int = 0

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    @property
    def unsigned(self) -> int:
        """Records after the last matching checkpoint: only as trustworthy as the database until signed."""
        return max(0, self.head_seq - self.signed_through)

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["ok"] = self.ok
        doc["unsigned"] = self.unsigned
        return doc

    def summary(self) -> str:
        """Plain words for a person: the verdict, then one line per problem."""
        verdict = "OK" if self.ok else f"FAILED: {self.problems_total} problem(s)"
        lines = [
            f"audit log {verdict}",
            f"  {self.records} records, head {self.head_seq} ({self.head_hash[:16]}...)",
            f"  {self.checkpoints} stored and {self.external} external checkpoints checked; "
            f"signed through record {self.signed_through}, {self.unsigned} record(s) not yet signed",
        ]
        lines += [f"  - {p.message}" for p in self.problems]
        if self.problems_total > len(self.problems):
            lines.append(f"  ... and {self.problems_total - len(self.problems)} more")
        return "\n".join(lines)


class _Walk:
    """The one pass behind `verify` and `verify_export`: fed records in order, keeps O(1) state.

    Besides the running head it keeps a window of the last `WINDOW` hashes,
    so that a broken link can be told apart as "links back to record m" or
    "links to a later record" (reordering) rather than only "broken".  The
    checkpoints to match are held by size (a few per hour of the log's life).
    """

    WINDOW = 4096

    def __init__(self, keys: PublicKeys, checkpoints: Iterable[tuple[str, Checkpoint]], *, excerpt: bool,
                 recorded: set[int] | None):
        self.excerpt = excerpt
        self.recorded = recorded  # sizes of stored checkpoints, or None if not known (an export)
        self.listed: list[Problem] = []
        self.total = 0
        self.report = VerifyReport()
        self.by_size: dict[int, list[tuple[str, Checkpoint]]] = {}
        for origin, cp in checkpoints:
            if origin == "stored":
                self.report.checkpoints += 1
            else:
                self.report.external += 1
            why = cp.signature_problem(keys)
            if why:
                self.problem(cp.size, BAD_CHECKPOINT, f"{origin} checkpoint at {cp.size} {why}")
            else:
                self.by_size.setdefault(cp.size, []).append((origin, cp))
        self.prev_seq = 0
        self.prev_hash: str | None = GENESIS_HASH  # None after a record that could not be read
        self.recent: dict[str, int] = {}
        self.ring: deque[str] = deque()
        self.pending: dict[str, int] = {}  # prev_hash -> seq, for links to nothing seen yet

    def problem(self, seq: int | None, kind: str, message: str) -> None:
        self.total += 1
        if len(self.listed) < MAX_PROBLEMS_LISTED:
            self.listed.append(Problem(seq, kind, message))

    def feed(self, seq: int, at_utc: str, actor: str, action: str, target: str, outcome: str, detail: str,
             prev_hash: str, stored_hash: str) -> None:
        self.report.records += 1
        if record_hash(seq, at_utc, actor, action, target, outcome, detail, prev_hash) != stored_hash:
            self.problem(seq, ALTERED, f"record {seq} was altered: its hash does not match its content")
        last = self.prev_seq
        if seq <= last:  # only in an export: a database's primary key keeps seq unique and ordered
            self.problem(seq, REORDERED, f"record {seq} comes after record {last}: records are out of order "
                                         "or repeated")
            return
        if seq != last + 1:
            if not self.excerpt:
                if last == 0:
                    self.problem(1, MISSING, f"records 1 to {seq - 1} are missing (the log starts at {seq})")
                elif seq == last + 2:
                    self.problem(last + 1, MISSING, f"record {last + 1} is missing (seq jumps from {last} to {seq})")
                else:
                    self.problem(last + 1, MISSING,
                                 f"records {last + 1} to {seq - 1} are missing (seq jumps from {last} to {seq})")
            else:
                self._anchor(seq, prev_hash)
        elif self.prev_hash is not None and prev_hash != self.prev_hash:
            self._diagnose_link(seq, prev_hash)
        if self.pending:
            earlier = self.pending.pop(stored_hash, None)
            if earlier is not None:
                self.problem(earlier, REORDERED, f"record {earlier} links to record {seq}, which comes after it: "
                                                 "records were reordered")
        if seq in self.by_size:
            for origin, cp in self.by_size.pop(seq):
                if cp.head_hash == stored_hash:
                    self.report.signed_through = max(self.report.signed_through, seq)
                else:
                    self.problem(seq, CHECKPOINT_MISMATCH,
                                 f"{origin} checkpoint at {seq} does not match the log: it signed record {seq} as "
                                 f"{cp.head_hash[:16]}..., the log has {stored_hash[:16]}... (records up to {seq} "
                                 "were rewritten)")
        if self.recorded is not None and action == Action.CHECKPOINT and seq not in self.recorded:
            self.problem(seq, CHECKPOINT_MISSING,
                         f"record {seq} says a checkpoint was signed over the log up to it, but the checkpoint "
                         "table has none at that size (deleted?)")
        self.recent[stored_hash] = seq
        self.ring.append(stored_hash)
        if len(self.ring) > self.WINDOW:
            old = self.ring.popleft()
            if self.recent.get(old, -1) <= seq - self.WINDOW:
                self.recent.pop(old, None)
        self.prev_seq, self.prev_hash = seq, stored_hash

    def _anchor(self, seq: int, prev_hash: str) -> None:
        """In an excerpt, a record whose predecessor is absent can still be tied to a checkpoint there."""
        for origin, cp in self.by_size.get(seq - 1, []):
            if cp.head_hash != prev_hash:
                self.problem(seq, BROKEN_LINK, f"record {seq} does not follow the {origin} checkpoint at {seq - 1}: "
                                               "its prev_hash is not the signed head")

    def _diagnose_link(self, seq: int, prev_hash: str) -> None:
        if seq == 1:
            self.problem(1, BROKEN_LINK, "record 1 does not start the chain: its prev_hash is not 64 zeros")
            return
        earlier = self.recent.get(prev_hash)
        if earlier is not None and earlier < seq - 1:
            self.problem(seq, REORDERED, f"record {seq} links back to record {earlier}, not to record {seq - 1}: "
                                         "records between were reordered or inserted")
        elif prev_hash == GENESIS_HASH:
            self.problem(seq, BROKEN_LINK, f"record {seq} claims to start the chain (prev_hash of 64 zeros) "
                                           f"but follows record {seq - 1}")
        else:
            self.pending[prev_hash] = seq
            if len(self.pending) > self.WINDOW:
                self._unresolved(*next(iter(self.pending.items())))

    def _unresolved(self, prev_hash: str, seq: int) -> None:
        del self.pending[prev_hash]
        self.problem(seq, BROKEN_LINK, f"record {seq} does not link to record {seq - 1}: its prev_hash matches no "
                                       f"record near it (record {seq - 1} was replaced, or record {seq} altered)")

    def unreadable(self, where: str, why: str, seq: int | None = None) -> None:
        """A record (or export line) that cannot be decoded: reported, and when its seq is known it still
        takes its place, so that the records after it are not also called missing."""
        self.problem(seq, UNREADABLE, f"{where} cannot be read: {why}")
        if seq is not None and seq > self.prev_seq:
            self.report.records += 1
            self.prev_seq, self.prev_hash = seq, None

    def finish(self) -> VerifyReport:
        for prev_hash, seq in list(self.pending.items()):
            self._unresolved(prev_hash, seq)
        head = self.prev_seq
        beyond: list[tuple[int, str]] = []
        for size, cps in self.by_size.items():
            for origin, _ in cps:
                if size > head:
                    beyond.append((size, origin))
                elif not self.excerpt:
                    self.problem(size, CHECKPOINT_MISMATCH,
                                 f"{origin} checkpoint at {size} cannot be matched: record {size} is missing")
        if beyond and not self.excerpt:
            size, origin = max(beyond)
            if head == 0:
                message = f"the log is empty, but a signed {origin} checkpoint covers {size} records"
            else:
                message = f"records after {head} are missing: a signed {origin} checkpoint covers {size}"
            self.problem(head + 1, TRUNCATED, message)
        self.report.head_seq, self.report.head_hash = head, self.prev_hash or ""
        self.report.problems = sorted(self.listed, key=lambda p: (p.seq is None, p.seq or 0))
        self.report.problems_total = self.total
        return self.report


def verify(db: sqlite3.Connection, public_key: PublicKeys, *, external: Iterable[Checkpoint] = ()) -> VerifyReport:
    """Check the whole log and every checkpoint, stored and `external`, in one pass; never raises for
    what it finds (it reports it).

    `public_key` is the server's Ed25519 receipt key, or a mapping key id -> key when checkpoints span
    a key rotation.  The log and its checkpoint table are read in one read transaction, so a server
    appending meanwhile cannot make a consistent log look truncated.
    """
    own = not db.in_transaction
    if own:
        audit_log.begin_snapshot(db)
    try:
        stored = stored_checkpoints(db)
        walk = _Walk(public_key, [*(("stored", cp) for cp in stored), *(("external", cp) for cp in external)],
                     excerpt=False, recorded={cp.size for cp in stored})
        # As bytes: text that is not UTF-8 (written behind the server's back) is a finding, not a crash.
        cursor = audit_log.records_as_bytes(db)
        feed = walk.feed
        for seq, *raw in cursor:
            try:
                fields = [value.decode("utf-8") for value in raw]
            except (AttributeError, UnicodeDecodeError):  # AttributeError: None has no decode (a NULL)
                walk.unreadable(f"record {seq}", "a field is empty (NULL) or not UTF-8 text: it was altered", seq)
                continue
            feed(seq, *fields)
        return walk.finish()
    finally:
        if own:
            db.execute("ROLLBACK")


# --------------------------------------------------------------------------- queries and export
def _filters(actor: str | None, action: str | None, target: str | None, since: datetime | str | None,
             until: datetime | str | None, outcome: str | None, after_seq: int) -> tuple[str, list]:
    where, args = ["seq > ?"], [int(after_seq)]
    if actor is not None:
        where.append("actor = ?")
        args.append(actor)
    if action is not None:
        where.append("action = ?")
        args.append(_vocabulary("action", action, ACTIONS))
    if target is not None:
        where.append("target = ?")
        args.append(target)
    if outcome is not None:
        where.append("outcome = ?")
        args.append(_vocabulary("outcome", outcome, OUTCOMES))
    if since is not None:
        where.append("at_utc >= ?")
        args.append(_bound_text("since", since))
    if until is not None:
        where.append("at_utc < ?")
        args.append(_bound_text("until", until))
    return " AND ".join(where), args


def _bound_text(name: str, value: datetime | str) -> str:
    """A query bound as log text; a time without a zone is taken as UTC (how people type dates)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise AuditInputError(f"{name} {value!r} is not an ISO 8601 date or time (2025-01-31 or "
                                  "2025-01-31T12:00:00Z)") from None
    if not isinstance(value, datetime):
        raise AuditInputError(f"{name} must be a datetime or ISO 8601 text, found {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return utc_text(value)


def query(
    db: sqlite3.Connection,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    outcome: str | None = None,
    limit: int = 1000,
    after_seq: int = 0,
) -> list[AuditRecord]:
    """Records matching every filter given, in seq order: `since` inclusive, `until` exclusive.

    At most `limit` are returned; pass the last one's seq as `after_seq` for the next page (the log
    only grows, so pages never shift).
    """
    if not isinstance(limit, int) or not 1 <= limit <= MAX_QUERY_LIMIT:
        raise AuditInputError(f"limit must be between 1 and {MAX_QUERY_LIMIT}, found {limit!r}")
    where, args = _filters(actor, action, target, since, until, outcome, after_seq)
    return [AuditRecord(*row) for row in audit_log.matching(db, where, args, limit)]


def _iter_records(db: sqlite3.Connection, **filters) -> Iterator[AuditRecord]:
    if "limit" in filters:
        raise TypeError("an export has no limit; use after_seq and filters to choose what it holds")
    where, args = _filters(filters.pop("actor", None), filters.pop("action", None), filters.pop("target", None),
                           filters.pop("since", None), filters.pop("until", None), filters.pop("outcome", None),
                           filters.pop("after_seq", 0))
    if filters:
        raise TypeError(f"unknown audit filter(s): {', '.join(sorted(filters))}")
    for row in audit_log.matching(db, where, args):
        yield AuditRecord(*row)


def export_jsonl(db: sqlite3.Connection, out: TextIO, **filters) -> int:
    """Write the matching records (filters as for `query`, without `limit`) as JSON lines, each with
    its prev_hash and record_hash; return how many.

    The whole log exported can be re-verified without the database (`verify_export`) against the
    checkpoints an auditor holds.  A filtered excerpt proves each record's own hash, links wherever
    consecutive records are present, and ties to a checkpoint only where the record at its size (or
    just before an excerpt's start) is present: a hash chain cannot prove a lone record belongs to a
    signed log without the records between them.
    """
    count = 0
    for rec in _iter_records(db, **filters):
        out.write(rec.to_json() + "\n")
        count += 1
    return count


_EXPORT_FIELDS = {"seq": int, "at_utc": str, "actor": str, "action": str, "target": str, "outcome": str,
                  "detail": str, "prev_hash": str, "record_hash": str}


def _export_record(line: str) -> AuditRecord:
    if len(line) > MAX_EXPORT_LINE_BYTES:
        raise ValueError(f"line of {len(line)} characters exceeds {MAX_EXPORT_LINE_BYTES}")
    doc = json.loads(line)
    if not isinstance(doc, dict) or set(doc) != set(_EXPORT_FIELDS):
        raise ValueError(f"expected exactly the fields {sorted(_EXPORT_FIELDS)}")
    for name, kind in _EXPORT_FIELDS.items():
        if not isinstance(doc[name], kind) or isinstance(doc[name], bool):
            raise ValueError(f"{name} must be {kind.__name__}")
    return AuditRecord(**doc)


def verify_export(lines: Iterable[str], public_key: PublicKeys, *, external: Iterable[Checkpoint] = (),
                  excerpt: bool = False) -> VerifyReport:
    """Check an `export_jsonl` file without the database, against the checkpoints given.

    A full export (the default) is held to everything `verify` checks: seq from 1 without gaps, every
    hash and link, every checkpoint matched, none beyond the end.  With `excerpt=True` (a filtered or
    partial export) gaps are expected: each record's hash is checked, links where neighbours are both
    present, and checkpoints where their record or the record after them is present.
    """
    walk = _Walk(public_key, [("external", cp) for cp in external], excerpt=excerpt, recorded=None)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = _export_record(line)
        except ValueError as e:
            walk.unreadable(f"line {number}", f"not an audit record: {e}")
            continue
        walk.feed(rec.seq, rec.at_utc, rec.actor, rec.action, rec.target, rec.outcome, rec.detail,
                  rec.prev_hash, rec.record_hash)
    return walk.finish()


__all__ = [
    "ACTIONS",
    "ALTERED",
    "Action",
    "AuditError",
    "AuditInputError",
    "AuditRecord",
    "BAD_CHECKPOINT",
    "BROKEN_LINK",
    "CHECKPOINT_CONTEXT",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_MISMATCH",
    "CHECKPOINT_MISSING",
    "Checkpoint",
    "CheckpointInvalid",
    "GENESIS_HASH",
    "MISSING",
    "OUTCOMES",
    "Outcome",
    "Problem",
    "RECORD_CONTEXT",
    "REORDERED",
    "SCHEMA",
    "SERVER_ACTOR",
    "TRUNCATED",
    "UNREADABLE",
    "VerifyReport",
    "append",
    "append_many",
    "append_checkpoint_file",
    "canonical_json",
    "checkpoint",
    "export_jsonl",
    "head",
    "latest_checkpoint",
    "printable",
    "query",
    "read_checkpoint_file",
    "record_hash",
    "stored_checkpoints",
    "utc_text",
    "verify",
    "verify_export",
]
