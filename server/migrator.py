"""`bwv server migrate`'s work: an embedded installation copied to PostgreSQL and S3, checked on arrival.

The order of the steps is what makes a kill at any moment harmless:

1. **Blobs first**, in hash order, a few at a time (``jobs``).  Each is copied from the
   source store to a temporary file (S3BlobStore.put_file consumes the file
   it is given: the source's own file is never handed over), stored, read
   back from the destination store and its SHA-256 compared with the
   source file's, then given its Object Lock retention and legal hold as
   ingest would (blob_locks.settle, from the source's own records), and only
   then recorded as arrived, with the progress, in one transaction, in hash
   order (a blob done ahead of one still in flight waits to be recorded).  A
   blob stored but not recorded (killed between) is found held on the resume
   and checked, not stored again.
2. **Rows**, table by table in foreign-key order, a page per transaction
   with the progress (server/store/migration.py).  So a row never stands on
   the destination before the blob it describes.
3. **Reconciliation** (server/migration.py): every table's count and digest
   on both sides, every blob's digest at the source (read again) against the
   one re-read from the destination on arrival, the audit chain's head; and
   on the destination every receipt (held segments and tombstones) verified
   with the server's public key, and the whole audit trail verified with its
   stored and external checkpoints.
4. **The record of the move.**  Once everything matches, one `migrate` audit
   record is appended on the destination, naming the source, its chain head
   and the reconciliation's digest, together with the progress row that
   says the migration finished.  The chain is not re-based: the destination's
   record N is the source's head, bit for bit, so the checkpoints the source
   signed verify on the destination, and the move itself is in the chain of
   custody after them.  A run after that only reconciles again.

Nothing is written to the source: its database is opened read-only and its
blobs are only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

from ..sealed.errors import KeyFileError
from ..sealed.keys import ServerPublicKey
from ..sealed.receipt import ReceiptInvalid, ReceiptVerifier
from . import audit, blob_locks
from .blobstore import BlobStore, LocalBlobStore
from .db import SCHEMA_VERSION, MetadataStore
from .migration import (FINISHED, FRESH, MigrationError, Reconciliation, Side, SourceIdentity, Tally, blob_line,
                        key_after, progress_copied, progress_done, progress_value, resume_decision)
from .retention import RetentionPolicy
from .store import DatabaseUrl
from .store import migration as store

PIECE = 1024 * 1024
MAX_PROBLEMS = 50  # problems listed in the reconciliation; the count says how many more


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _sha256(f: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while piece := f.read(PIECE):
        h.update(piece)
        size += len(piece)
    return h.hexdigest(), size


@dataclass(frozen=True)
class Source:
    """An embedded installation: BWV_HOME/server's database, blob store and key and registry folders."""

    database: Path
    store: Path
    server_dir: Path  # keys/, devices/, audit-checkpoints.jsonl
    policy: RetentionPolicy

    @property
    def checkpoint_file(self) -> Path:
        return self.server_dir / "audit-checkpoints.jsonl"


class Migrator:
    """One migration of `source` into the database at `destination` and the blob store `blobs`."""

    def __init__(self, source: Source, destination: DatabaseUrl, blobs: BlobStore, *, batch: int = 200,
                 jobs: int = 4, actor: str = "local:unknown", say: Callable[[str], None] = lambda line: None):
        self.source = source
        self.destination_url = destination
        self.blobs = blobs
        self.batch = max(1, batch)
        self.jobs = max(1, jobs)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._worker_conns: list = []
        self.actor = actor
        self.say = say
        self.src = store.open_source(source.database)
        try:
            self._check_source()
            self.public = self._public_key()
            self.dest = MetadataStore(destination)
        except BaseException:
            self.src.close()
            raise

    def close(self) -> None:
        for conn in self._worker_conns:
            conn.close()
        self.src.close()
        self.dest.close()

    # ------------------------------------------------------------------ checks before anything is written
    def _check_source(self) -> None:
        version = store.schema_version(self.src)
        where = self.source.database
        if version is None:
            raise MigrationError(f"{where} is not an OpenBWV evidence database (it has no schema_version table)")
        if version < SCHEMA_VERSION:
            raise MigrationError(
                f"{where} is at schema version {version}, this OpenBWV at {SCHEMA_VERSION}: bring the source up "
                "to date first (start this version's `bwv server` on it once, or run `bwv server status`, which "
                "upgrades it the same way), then migrate. The migration itself never writes to its source")
        if version > SCHEMA_VERSION:
            raise MigrationError(f"{where} is at schema version {version}, written by a newer OpenBWV than this "
                                 f"one ({SCHEMA_VERSION}): migrate with that version")

    def _public_key(self) -> ServerPublicKey:
        path = self.source.server_dir / "keys" / "server.pub"
        try:
            return ServerPublicKey.load(path)
        except KeyFileError as e:
            raise MigrationError(f"the source's server public key is needed to verify its receipts and audit "
                                 f"checkpoints on arrival: {e}") from None

    def _earlier_keys(self) -> list[ServerPublicKey]:
        """The public halves of the keys `bwv keys server --force-new` set aside (keys.old-<time>): receipts
        and checkpoints signed before a rotation verify with those."""
        found = []
        for folder in sorted(self.source.server_dir.glob("keys.old-*")):
            try:
                found.append(ServerPublicKey.load(folder / "server.pub"))
            except KeyFileError:
                continue  # a folder without a readable public key vouches for nothing
        return found

    def _receipt_keys(self) -> dict[str, ServerPublicKey]:
        """Every server key the source ever used, by key id."""
        return {k.key_id.hex(): k for k in (*self._earlier_keys(), self.public)}

    def identity(self) -> SourceIdentity:
        return SourceIdentity(store.audit_hash_at(self.src, 1) or "", self.public.key_id.hex(),
                              str(self.source.database))

    # ------------------------------------------------------------------ the run
    def run(self) -> Reconciliation:
        """Copy what is not yet copied, reconcile, and on a match record the move; return the reconciliation."""
        identity = self.identity()
        reader = self.dest.reader()
        decision = resume_decision(identity, store.progress(reader), store.occupied_tables(reader),
                                   self.dest.engine.shown)
        if decision == FRESH:
            with self.dest.transaction() as db:
                store.ensure_progress_tables(db)
                store.set_progress(db, "source", identity.to_json(), _now())
            self.say(f"migrating {self.source.database} into {self.dest.engine.shown}")
        elif decision == FINISHED:
            self.say(f"{self.dest.engine.shown}: this migration finished earlier; reconciling again")
        else:
            self.say(f"{self.dest.engine.shown}: resuming the migration a previous run began")
        if decision != FINISHED:
            receiving = store.receiving_uploads(self.src)
            if receiving:
                self.say(f"note: {receiving} upload(s) still in progress at the source are not migrated; their "
                         "docks start them again (no camera is freed without a receipt)")
            self.copy_blobs()
            self.copy_rows()
        result = self.reconcile()
        if result.matches and decision != FINISHED:
            self._record_move(result)
        return result

    def copy_blobs(self) -> None:
        """Every held blob, `jobs` at a time (each is a handful of object-store round trips, so the time
        is in waiting); recorded strictly in hash order, so the progress never passes a blob not done."""
        recorded = store.progress(self.dest.reader()).get("blobs")
        if progress_done(recorded):
            return
        after = (key_after(recorded) or ("",))[0]
        copied = progress_copied(recorded)
        total = store.count(self.src, store.SEGMENTS)
        with tempfile.TemporaryDirectory(prefix="bwv-migrate-") as work, \
                ThreadPoolExecutor(self.jobs, thread_name_prefix="bwv-migrate") as pool:
            while page := store.held_blobs(self.src, after, self.batch):
                arrivals = pool.map(lambda row: self._arrive(row, Path(work)), page)
                for (segment_hash, _, _), (source_sha, arrived_sha, size) in zip(page, arrivals):
                    copied += 1
                    with self.dest.transaction() as db:
                        store.record_blob(db, segment_hash, source_sha, arrived_sha, size, _now())
                        store.set_progress(db, "blobs", progress_value((segment_hash,), copied, False), _now())
                    self.say(f"  blob {copied}/{total} {segment_hash[:16]}... stored, read back, locked")
                    after = segment_hash
        with self.dest.transaction() as db:
            store.set_progress(db, "blobs", progress_value((after,), copied, True), _now())

    def _arrive(self, row: tuple[str, str, str], work: Path) -> tuple[str, str, int]:
        """One blob stored, read back and compared, then locked as ingest would: (SHA-256 at the source,
        SHA-256 read back, size).  Runs in a worker thread, with a source connection of its own."""
        segment_hash, key, clip_id = row
        source_sha, arrived_sha, size = self._copy_blob(LocalBlobStore(self.source.store), key, work)
        if arrived_sha != source_sha:
            raise MigrationError(
                f"blob {key} arrived altered: SHA-256 {source_sha} at the source, {arrived_sha} as read back from "
                "the destination store; nothing after it was recorded. Check the store, then run the migration "
                "again")
        blob_locks.settle(self._worker_source(), self.blobs, self.source.policy, [clip_id], keys=[key])
        return source_sha, arrived_sha, size

    def _worker_source(self):
        conn = getattr(self._local, "src", None)
        if conn is None:
            conn = self._local.src = store.open_source(self.source.database)
            with self._lock:
                self._worker_conns.append(conn)
        return conn

    def _copy_blob(self, local: LocalBlobStore, key: str, work: Path) -> tuple[str, str, int]:
        """(SHA-256 at the source, SHA-256 read back from the destination, size) of one blob, stored there."""
        path = local.path(key)
        try:
            with open(path, "rb") as f:
                source_sha, size = _sha256(f)
        except FileNotFoundError:
            raise MigrationError(
                f"the source records segment {key} as held but its blob {path} is absent: the migration stops "
                "here rather than carry the loss across unnoticed. `bwv verify --held` on the source lists every "
                "such segment; restore it from backup and run the migration again") from None
        if not self.blobs.exists(key):
            tmp = work / f"{key}.bwv"
            shutil.copyfile(path, tmp)  # put_file consumes its file: give it a copy, never the source's
            try:
                self.blobs.put_file(tmp, key)
            finally:
                tmp.unlink(missing_ok=True)
        with self.blobs.open(key) as f:
            arrived_sha, _ = _sha256(f)
        return source_sha, arrived_sha, size

    def copy_rows(self) -> None:
        recorded = store.progress(self.dest.reader())
        for t in store.TABLES:
            step = f"rows:{t.name}"
            if progress_done(recorded.get(step)):
                continue
            cols = store.columns(self.src, t.name)
            at_key = [cols.index(k) for k in t.key]
            after = key_after(recorded.get(step))
            copied = progress_copied(recorded.get(step))
            total = store.count(self.src, t)
            while batch := store.page(self.src, t, cols, after, self.batch):
                after = tuple(batch[-1][i] for i in at_key)
                copied += len(batch)
                with self.dest.transaction() as db:
                    store.insert_rows(db, t, cols, batch)
                    store.set_progress(db, step, progress_value(after, copied, False), _now())
                self.say(f"  rows {t.name}: {copied}/{total}")
            with self.dest.transaction() as db:
                store.advance_identity(db, t)
                store.set_progress(db, step, progress_value(after, copied, True), _now())

    # ------------------------------------------------------------------ reconciliation
    def reconcile(self) -> Reconciliation:
        result = Reconciliation()
        reader = self.dest.reader()
        head = store.audit_head(self.src)
        upto = head[0] if head else 0
        for t in store.TABLES:
            cols = store.columns(self.src, t.name)
            result.add(t.name, Tally().add_rows(t.name, store.rows(self.src, t, cols)),
                       Tally().add_rows(t.name, store.rows(reader, t, cols, upto_seq=upto)))
        result.add("blobs", self._source_blobs(), self._arrived_blobs(reader))
        arrived_head = store.audit_hash_at(reader, upto) if upto else ""
        result.add("audit head", Side(upto, head[1] if head else ""), Side(upto if arrived_head else 0,
                                                                              arrived_head or ""))
        self._check_receipts(reader, result)
        self._check_audit(reader, result)
        return result

    def _source_blobs(self) -> Tally:
        tally = Tally()
        local = LocalBlobStore(self.source.store)
        after = ""
        while page := store.held_blobs(self.src, after, 1000):
            for segment_hash, key, _ in page:
                try:
                    with open(local.path(key), "rb") as f:
                        sha, _ = _sha256(f)
                except FileNotFoundError:
                    sha = "absent"
                tally.add(blob_line(segment_hash, sha))
            after = page[-1][0]
        return tally

    @staticmethod
    def _arrived_blobs(reader) -> Tally:
        tally = Tally()
        for segment_hash, sha in store.arrived_blobs(reader):
            tally.add(blob_line(segment_hash, sha))
        return tally

    def _check_receipts(self, reader, result: Reconciliation) -> None:
        verifiers = {kid: ReceiptVerifier(k.receipt_verifier(), k.key_id) for kid, k in self._receipt_keys().items()}
        current = verifiers[self.public.key_id.hex()]
        bad = 0
        for kind, device_id, sequence, segment_hash, receipt in store.receipts(reader):
            try:
                signer = json.loads(receipt).get("receipt", {}).get("server_key_id")
                verifier = verifiers.get(signer, current) if isinstance(signer, str) else current
                verifier.check_for(str(receipt).encode(), device_id=device_id, sequence=int(sequence),
                                   segment_hash=bytes.fromhex(segment_hash))
            except (ReceiptInvalid, ValueError, AttributeError) as e:
                bad += 1
                if bad <= MAX_PROBLEMS:
                    result.problems.append(f"{kind} segment {device_id} #{sequence} ({segment_hash[:16]}...): {e}")
        if bad > MAX_PROBLEMS:
            result.problems.append(f"... and {bad - MAX_PROBLEMS} more receipt(s) that do not verify")

    def _check_audit(self, reader, result: Reconciliation) -> None:
        external = audit.read_checkpoint_file(self.source.checkpoint_file) if self.source.checkpoint_file.exists() \
            else []
        keys = {kid: k.receipt_verifier() for kid, k in self._receipt_keys().items()}
        report = audit.verify(reader, keys, external=external)
        if not report.ok:
            result.problems.append("the audit trail does not verify on the destination:")
            result.problems += [f"  {p.message}" for p in report.problems[:MAX_PROBLEMS]]

    def _record_move(self, result: Reconciliation) -> None:
        head = store.audit_head(self.src)
        with self.dest.transaction() as db:
            audit.append(db, actor=self.actor, action="migrate", target="installation", detail={
                "from": str(self.source.database), "blobs": str(getattr(self.blobs, "location", "")),
                "source_head": {"seq": head[0], "hash": head[1]} if head else None,
                "segments": store.count(self.src, store.SEGMENTS), "reconciliation": result.digest})
            store.set_progress(db, "finished", json.dumps({"reconciliation": result.digest}), _now())
        self.say("migration recorded in the destination's audit trail")


# ---------------------------------------------------------------------- the files beside the database
def install_files(source: Source, to_home: Path, db_url: str, blobs_url: str) -> list[str]:
    """Copy the server's keys, device registry, exports and external audit checkpoints into a node's BWV_HOME, and
    write its config.toml naming the fleet engines if it has none; return what was done, line by line.

    A file already there with other contents is never replaced (MigrationError): it may be another
    installation's key."""
    done: list[str] = []
    target = Path(to_home) / "server"
    pairs: list[tuple[Path, Path]] = []
    # exports/: the subject access and evidential exports already made, which the node's sweep removes
    # when their clip is deleted (sweep.py finds them in the node's own folder) and staff list there.
    # keys.old-*: the keys a rotation set aside, the only means to open footage sealed to them.
    folders = ["keys", *sorted(p.name for p in source.server_dir.glob("keys.old-*")), "devices", "exports"]
    for folder in folders:
        src_dir = source.server_dir / folder
        if src_dir.is_dir():
            pairs += [(p, target / p.relative_to(source.server_dir)) for p in sorted(src_dir.rglob("*"))
                      if p.is_file()]
    if source.checkpoint_file.is_file():
        pairs.append((source.checkpoint_file, target / source.checkpoint_file.name))
    for src, dst in pairs:
        if dst.exists():
            if dst.read_bytes() != src.read_bytes():
                raise MigrationError(f"{dst} exists and differs from {src}: not replaced (another installation's "
                                     "file?); move it away and run again")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        done.append(f"copied {src} -> {dst}")
    config = Path(to_home) / "config.toml"
    if config.exists():
        done.append(f"{config} exists: left as it is (it must name db = {db_url!r} and blobs = the bucket)")
    else:
        config.write_text(_config_text(db_url, blobs_url, source.policy))
        done.append(f"wrote {config} (db, blobs and the source's retention periods)")
    return done


def _config_text(db_url: str, blobs_url: str, policy: RetentionPolicy) -> str:
    from .retention import DEFAULT_CATEGORY

    lines = ["# Written by bwv server migrate: this node's engines, and the retention of the installation moved.",
             "[server]", f"db = {json.dumps(db_url)}", f"blobs = {json.dumps(blobs_url)}", "",
             "[retention]", f"unmarked_days = {policy.categories[DEFAULT_CATEGORY]}",
             f"notice_days = {policy.notice_days}", "", "[retention.categories]"]
    lines += [f"{name} = {days}" for name, days in sorted(policy.categories.items()) if name != DEFAULT_CATEGORY]
    return "\n".join(lines) + "\n"


__all__ = ["Migrator", "Source", "install_files"]
