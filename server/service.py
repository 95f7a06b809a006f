"""The evidence server's state: its stores, its keys, and the uploads in flight.

`EvidenceService` is what the HTTP layer (app.py, tus.py) talks to, and owns
everything that must outlive a request: the metadata store, the blob store,
the ingestor, the partial-upload files, admission control (how many uploads
may stream at once) and the per-upload locks.  It also puts things right at
start-up after a crash: an upload's partial file is cut back to the offset
the database recorded (the bytes past it were never acknowledged), and an
upload whose last byte arrived but was never ingested is ingested now.

The bytes of uploads in progress go where the held segments go (partials.py):
files on this node's disk with the local blob store, pieces in the bucket with
an S3 one, so that any node of a fleet can continue an upload another began.

State lives under BWV_HOME/server/::

    evidence.db        metadata (SQLite, WAL)
    store/             held segments, content-addressed (LocalBlobStore; or an S3 bucket
                       with Object Lock, --blobs s3://..., s3store.py)
    uploads/           partial uploads, <upload-id>.part (with --blobs s3://: pieces in the bucket,
                       partial/<upload-id>/<offset>, and only assembly for ingest here)
    views/             decrypted clips being watched, by clip and view (media.py)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import weakref
from collections import OrderedDict
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator, Callable

from ..home import Home
from ..registry import DeviceRegistry
from ..sealed.errors import KeyFileError
from ..sealed.keys import ServerKeyPair
from ..sealed.reader import StreamVerifier, VerifiedSegment
from ..verification import verify_paths
from ..opener import OpenedClip, open_paths
from . import audit, blob_locks, lifecycle, users
from .auth import USER_TOKEN_PREFIX, DockTokens, bearer_token
from .blobstore import BlobStore, open_blob_store, readable_path
from .config import ServerConfig, load_db
from .db import MetadataStore, UploadRecord
from .store import DatabaseUrl, parse_database_url, sqlite_url
from .denials import DenialThrottle
from .errors import (
    Busy,
    ConfigError,
    ForkRejected,
    InsufficientStorage,
    NotFound,
    ServerError,
    StoreError,
    UploadLocked,
    VerificationFailed,
)
from .ingest import Ingested, Ingestor, SegmentClaim, utc_now
from .partials import UPLOAD_ID_RE, LocalPartialStore, PartialGap, PartialStore, partial_store_for
from .media import ViewCache, views_root
from .metrics import ServerMetrics
from .users import DOCK, Principal

ANONYMOUS = "anonymous"  # how the audit trail names a caller with no valid token

log = logging.getLogger("bwv.server")

LOCK_WAIT_S = 5.0
# A finished upload answers HEAD with its receipt for this long; after that the
# receipt is still at /api/v1/receipts/ and a new POST gets it (dedupe).
COMPLETED_UPLOADS_KEPT = timedelta(days=30)
STREAMS_KEPT = 4096  # verification states of uploads in progress kept in memory (a few KiB each)


def database_path(home: Home) -> Path:
    return home.server_dir / "evidence.db"


def database_url(home: Home, setting: str | None = None) -> DatabaseUrl:
    """Which database holds the metadata: `setting` (``--db``), else ``db`` in config.toml's [server]
    table, else the embedded default BWV_HOME/server/evidence.db.  A relative sqlite: path is taken
    from BWV_HOME."""
    if setting is None:
        setting = load_db(home.config_file)
    if setting is None:
        return sqlite_url(database_path(home))
    return parse_database_url(setting, base=home.root)


def open_metadata(home: Home, setting: str | None = None) -> MetadataStore:
    """The server's database, for the commands that need only it (add-dock, status)."""
    return MetadataStore(database_url(home, setting), local_dir=home.server_dir)


class EvidenceService:
    """Everything the server holds and does, behind the HTTP routes."""

    def __init__(
        self,
        home: Home,
        config: ServerConfig,
        *,
        db: MetadataStore | None = None,
        blobs: BlobStore | None = None,
    ):
        self.home = home
        self.config = config
        try:
            self.server_keys = ServerKeyPair.load(home.server_keys_dir)
        except KeyFileError as e:
            raise ConfigError(str(e)) from None
        self.uploads_dir = home.server_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.db = db or open_metadata(home, config.db)
        self.blobs = blobs or open_blob_store(config.blobs, home.server_dir / "store")
        self.partials: PartialStore = partial_store_for(self.blobs, self.uploads_dir)
        self.registry = DeviceRegistry(home.registry_dir)
        # Decrypted views being watched (media.py): beside the database, where the sweep finds them.
        self.views = ViewCache(views_root(self.db.local_dir))
        self.ingestor = Ingestor(self.db, self.blobs, self.registry, self.server_keys)
        self.tokens = DockTokens(self.db)
        self.active_uploads = 0
        self.metrics = ServerMetrics(lambda: self.active_uploads)
        self.denials = DenialThrottle()  # refusals of callers with no valid token
        self.login_failures = DenialThrottle()  # failed logins: anyone can send them, with any name
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Each upload's verification so far, fed by its PATCH bodies (tus.py): this node's memory only.
        self._streams: OrderedDict[str, StreamVerifier] = OrderedDict()

    # ------------------------------------------------------------------ who is calling
    def authenticate(self, header: str | None) -> Principal:
        """The dock or staff member behind an Authorization header; Unauthorized otherwise."""
        token = bearer_token(header)
        if token.startswith(USER_TOKEN_PREFIX):
            return users.principal_for_token(self.db.reader(), token)
        return Principal(self.tokens.authenticate(header), DOCK)

    def record_denial(self, actor: str, method: str, path: str, reason: str, status: int) -> None:
        """Audit a refused request (401 or 403): failed access is an action on footage too.  Refusals
        of callers with no valid token are written one by one up to a rate, then summarised
        (denials.py), so that nobody can grow the log without limit by knocking."""
        write, suppressed = True, 0
        if actor == ANONYMOUS:
            admission = self.denials.admit(time.monotonic())
            write, suppressed = admission.write, admission.suppressed_before
        if not (write or suppressed):
            return  # counted: no write lock taken for it, which a flood would otherwise hold
        with self.db.transaction() as db:
            if suppressed:
                self._summarise_denials(db, suppressed)
            if write:
                audit.append(db, actor=audit.printable(actor, audit.MAX_ACTOR_CHARS), action="access_denied",
                             target=audit.printable(f"{method} {path}", audit.MAX_TARGET_CHARS), outcome="denied",
                             detail={"status": status, "why": audit.printable(reason, 1000)})

    def login_failure_gate(self, db) -> "Callable[[], bool]":
        """For users.login: whether a failed login's own record is written (in `db`, the login's
        transaction), a summary of those counted in a window that has ended written first."""
        def gate() -> bool:
            admission = self.login_failures.admit(time.monotonic())
            if admission.suppressed_before:
                self._summarise_login_failures(db, admission.suppressed_before)
            return admission.write
        return gate

    def _summarise_login_failures(self, db, suppressed: int) -> None:
        audit.append(db, actor=ANONYMOUS, action="login_failed", target="session", outcome="denied",
                     detail={"suppressed": suppressed, "why": (
                         f"{suppressed} more failed login(s) in the last {self.login_failures.window_s:g} s, beyond "
                         f"the {self.login_failures.per_window} written one by one")})

    def _summarise_denials(self, db, suppressed: int) -> None:
        audit.append(db, actor=ANONYMOUS, action="access_denied", target="requests without a valid token",
                     outcome="denied", detail={"status": 401, "suppressed": suppressed, "why": (
                         f"{suppressed} more refusal(s) of callers without a valid token in the last "
                         f"{self.denials.window_s:g} s, beyond the {self.denials.per_window} written one by one")})

    def audit(self, actor: str, action: str, target: str, detail: dict | None = None, outcome: str = "ok") -> None:
        """Append one audit record in a transaction of its own (for reads, which change nothing else)."""
        with self.db.transaction() as db:
            audit.append(db, actor=actor, action=action, target=target, outcome=outcome, detail=detail)

    def officer_may_see(self, officer: str, clip_id: str) -> bool:
        return lifecycle.officer_owns(self.db.reader(), officer, clip_id)

    # ------------------------------------------------------------------ footage
    def _segment_files(self, clip_id: str, workdir: Path) -> list[Path]:
        """A held clip's segment files: the blobs themselves in a local store, else copies in
        `workdir`/segments; NotFound when the clip holds none."""
        reader = self.db.reader()
        record = lifecycle.require_clip(reader, clip_id)
        keys = lifecycle.segment_hashes(reader, clip_id)
        if not keys:
            raise NotFound(f"clip {clip_id} holds no segments ({record.state})")
        copies = Path(workdir) / "segments"
        copies.mkdir(parents=True, exist_ok=True)
        return [readable_path(self.blobs, k, copies) for k in keys]

    def open_clip(self, clip_id: str, workdir: Path) -> OpenedClip:
        """Verify and decrypt a held clip's segments into `workdir` (TS, MP4, manifest)."""
        report = open_paths(self._segment_files(clip_id, workdir), self.registry, self.server_keys, workdir)
        if report.problems or not report.clips:
            why = "; ".join(p.message for p in report.problems[:3]) or "nothing could be opened"
            raise StoreError(f"clip {clip_id} could not be opened: {why}")
        return report.clips[0]

    def verified_segments(self, clip_id: str, workdir: Path) -> list[VerifiedSegment]:
        """A held clip's segments, every one verified (layout, hash, signature, chain) and none decrypted,
        in the order they play: for a view decrypted as it is watched (media.py).  Segment copies, when
        the blob store is not local, go into `workdir`."""
        report = verify_paths(self._segment_files(clip_id, workdir), self.registry)
        if report.problems or not report.segments:
            why = "; ".join(p.message for p in report.problems[:3]) or "nothing could be verified"
            raise StoreError(f"clip {clip_id} could not be opened: {why}")
        return sorted(report.segments, key=lambda s: (s.preamble.segment_index, s.sequence))

    @property
    def checkpoint_file(self) -> Path:
        """Signed audit checkpoints, also kept outside the database (audit.py)."""
        return self.home.server_dir / "audit-checkpoints.jsonl"

    def checkpoint(self, final: bool = False) -> "audit.Checkpoint | None":
        """Sign the audit log's head, in the database, then (once committed) in the checkpoint file;
        first summarise any refusals suppressed in a window that has ended, so they are signed too."""
        now = time.monotonic()
        suppressed = self.denials.flush(now, final=final)
        failed_logins = self.login_failures.flush(now, final=final)
        if suppressed or failed_logins:
            with self.db.transaction() as db:
                if suppressed:
                    self._summarise_denials(db, suppressed)
                if failed_logins:
                    self._summarise_login_failures(db, failed_logins)
        return sign_audit_head(self.db, self.server_keys, self.checkpoint_file)

    # ------------------------------------------------------------------ files
    def part_path(self, upload_id: str) -> Path:
        """The partial file of an upload on the local partial store (the embedded default)."""
        if not isinstance(self.partials, LocalPartialStore):
            raise StoreError(f"internal: upload {upload_id} has no local partial file (its bytes are in the bucket)")
        return self.partials.path(upload_id)

    def new_upload_file(self) -> str:
        """A fresh upload id with an empty partial, durably (partials.py); return the id."""
        return self.partials.new_upload()

    def stream_state(self, upload_id: str, offset: int) -> StreamVerifier:
        """The upload's verification state after its first `offset` bytes (blocking: run in a thread).

        Normally the one kept from the last PATCH.  After a restart, or when another node took the
        upload's earlier bytes, this node has none for that offset and derives it once by reading the
        partial bytes up to `offset` (bytes below a committed offset never change).  PartialGap if the
        partial store holds fewer (pieces lost from the bucket)."""
        state = self._streams.get(upload_id)
        if state is not None and state.offset == offset:
            self._streams.move_to_end(upload_id)
            return state.copy()
        state = StreamVerifier(self.registry)
        for piece in self.partials.read(upload_id, offset):
            state.feed(piece)
        return state

    def fall_back(self, gap: PartialGap) -> None:
        """Move an upload's offset back to where its partial bytes really reach (only if nobody moved it since)."""
        self._streams.pop(gap.upload_id, None)
        self.db.set_upload_offset(gap.upload_id, gap.held, utc_now(), expected=gap.wanted)

    def keep_stream_state(self, upload_id: str, state: StreamVerifier) -> None:
        """Remember the state at the offset just committed (the least recently used go past the cap)."""
        self._streams[upload_id] = state
        self._streams.move_to_end(upload_id)
        while len(self._streams) > STREAMS_KEPT:
            self._streams.popitem(last=False)

    def discard(self, upload_id: str) -> None:
        """Forget an upload: its row, then its partial bytes (pieces left by a failure between the two
        are strays the next start-up removes).  Never touches held evidence."""
        self._streams.pop(upload_id, None)
        self.db.delete_upload(upload_id)
        self.partials.remove(upload_id)

    def upload_expires(self, updated_utc: str) -> datetime:
        """When an unfinished upload last touched at `updated_utc` is discarded if nothing more of it
        arrives (tus Upload-Expires)."""
        return datetime.fromisoformat(updated_utc) + timedelta(hours=self.config.upload_expiry_hours)

    def expire_uploads(self, now: datetime | None = None) -> list[str]:
        """Discard every unfinished upload untouched for `upload_expiry_hours`; return what was done.

        Nothing is lost: a camera frees a segment only against its receipt, so the dock that comes back
        (HEAD answers 404) sends it again from byte 0.  Safe on a fleet: any node may do it, and an
        upload already discarded by another node is simply gone."""
        now = now or datetime.now(timezone.utc)
        cutoff = (now - timedelta(hours=self.config.upload_expiry_hours)).isoformat(timespec="seconds")
        notes = []
        for upload in self.db.stale_uploads(cutoff):
            self.discard(upload.id)
            notes.append(f"upload {upload.id} ({upload.device_id} #{upload.sequence}, {upload.offset} of "
                         f"{upload.length} bytes) untouched since {upload.updated_utc}: expired and discarded; "
                         "the dock will send the segment again")
        return notes

    def check_space(self, length: int) -> None:
        """507 unless `length` more bytes fit while keeping the configured reserve free."""
        reserve = self.config.reserve_bytes
        for where, free in (("evidence store", self.blobs.free_bytes()), ("upload area", _free(self.uploads_dir))):
            if free - length < reserve:
                raise InsufficientStorage(
                    f"{where} has {free / 1e6:.0f} MB free; an upload of {length / 1e6:.1f} MB would leave less "
                    f"than the reserve of {reserve / 1e6:.0f} MB (--reserve-mb)"
                )

    # ------------------------------------------------------------------ admission
    @asynccontextmanager
    async def streaming_slot(self) -> AsyncIterator[None]:
        """One of the announced `max_concurrent` upload slots, or Busy (503 + Retry-After)."""
        if self.active_uploads >= self.config.max_concurrent:
            raise Busy(
                f"{self.active_uploads} uploads in progress, the most this server takes at once "
                f"(Bwv-Max-Concurrent-Uploads: {self.config.max_concurrent}); retry after 2 s"
            )
        self.active_uploads += 1
        try:
            yield
        finally:
            self.active_uploads -= 1

    @asynccontextmanager
    async def upload_lock(self, upload_id: str, *, wait_s: float = LOCK_WAIT_S) -> AsyncIterator[None]:
        """Exclusive use of one upload: one PATCH or DELETE at a time."""
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        try:
            await asyncio.wait_for(lock.acquire(), wait_s)
        except TimeoutError:
            raise UploadLocked(
                f"upload {upload_id} is busy with another request (a PATCH still streaming?); "
                "HEAD it for the offset and try again"
            ) from None
        try:
            yield
        finally:
            lock.release()

    async def settled(self, upload_id: str, wait_s: float = 1.0) -> None:
        """Give a PATCH that is just finishing (a client that cut its connection) a moment to
        record its offset, so that HEAD answers with it; never waits longer than `wait_s`."""
        lock = self._locks.get(upload_id)
        if lock is not None and lock.locked():
            try:
                async with self.upload_lock(upload_id, wait_s=wait_s):
                    pass
            except UploadLocked:
                pass

    # ------------------------------------------------------------------ completion
    def complete(self, upload: UploadRecord) -> Ingested:
        """Ingest an upload whose last byte is durably written (blocking: run in a thread).

        A file that fails verification, or a fork, is discarded with its
        upload; a store failure leaves the upload as it is, to be completed
        again (by an empty PATCH at the end, or at the next start).
        """
        claim = SegmentClaim(upload.device_id, upload.sequence, upload.segment_hash)
        state = self._streams.get(upload.id)
        streamed = state.result() if state is not None and state.offset == upload.length else None
        try:
            with self.partials.assembled(upload.id, upload.length) as path:
                done = self.ingestor.ingest(path, claim, dock=upload.dock, upload_id=upload.id, verified=streamed)
        except (VerificationFailed, ForkRejected):
            self.discard(upload.id)
            raise
        except PartialGap as gap:
            self.fall_back(gap)
            raise
        self._streams.pop(upload.id, None)
        self.partials.finished(upload.id)
        # Before the receipt: the store's lock reaches the retention date (a retry, a duplicate, settles again).
        blob_locks.settle(self.db.reader(), self.blobs, self.config.retention, [done.segment.clip_id],
                          keys=[done.segment.segment_hash])
        return done

    def settle_locks(self, clip_ids: list[str]) -> int:
        """After a committed change of holds or categories: the store's locks follow (blob_locks.py)."""
        return blob_locks.settle(self.db.reader(), self.blobs, self.config.retention, clip_ids)

    # ------------------------------------------------------------------ start-up
    def recover(self) -> list[str]:
        """Make the partial files agree with the database after a crash; return what was done."""
        notes: list[str] = []
        self.views.clear_unfinished()
        if removed := self.views.prune():
            notes.append(f"removed {removed} expired view(s) of decrypted footage")
        cutoff = (datetime.now(timezone.utc) - COMPLETED_UPLOADS_KEPT).isoformat(timespec="seconds")
        self.db.forget_completed_uploads(cutoff)
        notes += self.expire_uploads()
        for upload in self.db.uploads():
            if upload.complete:
                continue
            held = self.partials.held(upload.id, upload.offset)
            if held is None:
                self.db.delete_upload(upload.id)
                notes.append(f"upload {upload.id} ({upload.device_id} #{upload.sequence}): partial file lost; "
                             "the upload is forgotten and will be sent again")
            elif held > upload.offset:
                self.partials.trim(upload.id, upload.offset)
                notes.append(f"upload {upload.id}: cut back from {held} to the recorded {upload.offset} bytes")
            elif held < upload.offset:
                try:
                    self.db.set_upload_offset(upload.id, held, utc_now(), expected=upload.offset)
                except ServerError:
                    continue  # moved on meanwhile (another node took it): that node's to settle
                notes.append(f"upload {upload.id}: file holds {held} bytes, fewer than the recorded "
                             f"{upload.offset}; offset moved back")

        def wanted(upload_id: str) -> bool:  # asked afresh: another node may have created it since
            row = self.db.upload(upload_id)
            return row is not None and not row.complete

        notes += self.partials.strays(wanted)
        for upload in self.db.uploads():
            if not upload.complete and upload.offset == upload.length:
                try:
                    done = self.complete(upload)
                    notes.append(f"upload {upload.id}: ingested {upload.device_id} #{upload.sequence} "
                                 f"(its last byte arrived before the restart)")
                    del done
                except ServerError as e:
                    notes.append(f"upload {upload.id} ({upload.device_id} #{upload.sequence}): {e.reason}")
        return notes

    def close(self) -> None:
        self.db.close()


def sign_audit_head(db: MetadataStore, keys: ServerKeyPair, checkpoint_file: Path) -> "audit.Checkpoint | None":
    """A signed checkpoint of the audit log's head in its own transaction; kept in the file only
    after the commit, so the file never vouches for records that were rolled back."""
    with db.transaction() as conn:
        cp = audit.checkpoint(conn, keys.sign, keys.public.key_id)
    if cp is not None:
        audit.append_checkpoint_file(checkpoint_file, cp)
    return cp


def _free(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def is_space_error(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


__all__ = ["EvidenceService", "UPLOAD_ID_RE", "database_path", "open_metadata"]
