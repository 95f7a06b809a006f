"""`bwv server`: run the evidence server, give docks their tokens, and say what it holds."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cli import EXIT_OK, EXIT_PROBLEMS, UsageError, command, common_options
from ..home import Home
from .config import DEFAULT_PORT, load_config, settings
from .errors import ConfigError, ServerError

log = logging.getLogger("bwv.server")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", metavar="HOST:PORT",
                   help=f"address to listen on (default 127.0.0.1:{DEFAULT_PORT}; port 0 picks a free one; "
                        "[::]:PORT for IPv6)")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    p.add_argument("--tls-client-ca", type=Path, metavar="PEM",
                   help="mutual TLS: accept only clients with a certificate signed by this CA "
                        "(docks still need their bearer token)")
    p.add_argument("--max-concurrent", type=int, metavar="N",
                   help="uploads streaming at once; more are told 503 + Retry-After (default 16)")
    p.add_argument("--reserve-mb", type=float, metavar="MB",
                   help="free space the store keeps back; new uploads past it get 507 (default 1024)")
    p.add_argument("--max-upload-mb", type=float, metavar="MB",
                   help="largest upload accepted, announced as Tus-Max-Size (default 4096)")
    p.add_argument("--idle-timeout", type=float, metavar="S", dest="idle_timeout_s",
                   help="a PATCH body that stalls S seconds counts as a cut connection (default 60)")
    p.add_argument("--db", metavar="URL",
                   help="where the metadata lives: sqlite:///PATH (default: SQLite in BWV_HOME/server/evidence.db) "
                        "or postgresql://USER@HOST:PORT/DBNAME, one database several nodes share; the password "
                        "from ~/.pgpass or PGPASSFILE, never the URL")
    p.add_argument("--blobs", metavar="STORE",
                   help="where held segments live: 'local' (BWV_HOME/server/store, the default) or "
                        "s3://BUCKET[/PREFIX]?endpoint=URL[&region=R][&initial_lock_s=S][&profile=P], a bucket "
                        "created with Object Lock and no default retention; credentials from "
                        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS credentials file, never the URL")
    sub = p.add_subparsers(dest="server_what", metavar="{add-dock,status,reindex,migrate,api-docs}")
    a = sub.add_parser("add-dock", help="create a dock's upload token (shown once)",
                       formatter_class=p.formatter_class, parents=[common_options()],
                       description="Create a random bearer token for a dock and print it once.\n"
                                   "The server keeps only its SHA-256; a lost token is replaced with --rotate.")
    a.add_argument("--id", required=True, dest="dock_id", metavar="DOCK",
                   help="dock id: 1-64 letters, digits, '.', '_' or '-' (e.g. station-3-bay-rack)")
    a.add_argument("--rotate", action="store_true", help="replace the dock's existing token (the old one stops working)")
    sub.add_parser("status", help="segments held per device, gaps (deleted by policy or missing), uploads",
                   formatter_class=p.formatter_class, parents=[common_options()],
                   description="Summarise the evidence held under BWV_HOME/server without starting the server.\n"
                               "Per device: the sequence numbers held, the gaps the retention sweep left\n"
                               "(deleted by policy: tombstones keep their hashes) and the ranges genuinely\n"
                               "missing (neither held nor deleted by policy); then uploads in progress.")
    r = sub.add_parser("reindex", help="index the GNSS tracks of held segments the search does not cover",
                       formatter_class=p.formatter_class, parents=[common_options()],
                       description="Decrypt and index the sealed GNSS track of every held segment that the\n"
                                   "track index lacks: segments held before the index existed, and with\n"
                                   "--retry-unreadable those whose track could not be read at ingest (a\n"
                                   "server key restored since). Without it a search by place silently misses\n"
                                   "them. Each key use is audited; safe beside a running server; a second\n"
                                   "run continues where the first stopped.")
    r.add_argument("--retry-unreadable", action="store_true",
                   help="read again the segments whose track was unreadable")
    r.add_argument("--dry-run", action="store_true", help="count the segments it would read; change nothing")
    r.add_argument("--batch", type=int, default=50, metavar="N",
                   help="segments per write transaction (default: %(default)s)")
    from .migrate_command import add_parser as add_migrate

    add_migrate(sub, p.formatter_class)
    d = sub.add_parser("api-docs", help="write the OpenAPI description and the endpoint x role table",
                       formatter_class=p.formatter_class, parents=[common_options()],
                       description="Write docs/openapi.json (OpenAPI 3.1) and docs/access-control.md (every "
                                   "endpoint x every role), generated from the server's route table.")
    d.add_argument("--out", type=Path, default=Path("docs"), metavar="DIR", help="where (default: %(default)s)")


@command(
    "server",
    "run the evidence server (tus uploads, verification, receipts)",
    """
    Run the evidence server: docks upload sealed segments over tus 1.0
    (resumable, with per-chunk checksums) to /tus/; every finished upload is
    verified as `bwv verify` would (layout, hash, device signature, the
    device's chain against what is held), stored durably and recorded, and
    answered with a receipt signed by the server's key. A gap in a device's
    chain is accepted and flagged; a fork, an unknown device, a bad signature
    or a damaged file is refused and nothing of it kept.
    The protocol is described in docs/upload-protocol.md.

    State lives under BWV_HOME/server/: evidence.db (SQLite), store/ (held
    segments), uploads/ (partial uploads); keys from BWV_HOME/server/keys
    (`bwv keys server`), enrolled cameras from BWV_HOME/server/devices
    (`bwv keys device`). Settings may also go in the [server] table of
    BWV_HOME/config.toml (listen, max_concurrent, reserve_mb, max_upload_mb,
    idle_timeout_s, tls_cert, tls_key, tls_client_ca, db, blobs); options override it.

    With --db postgresql://... the metadata lives in PostgreSQL 15 instead
    of evidence.db, so several server nodes can share it (docs/deployment.md,
    "Choosing the metadata engine"); the schema is created or brought up to
    date at start, whichever node starts first.

    With --blobs s3://... held segments live in an S3 bucket with Object
    Lock instead of store/: each is locked in COMPLIANCE mode until its
    retention date, an evidence mark or open subject access request sets a
    legal hold, and its wrapped key is kept in an unlocked object of its own
    so that the retention sweep can crypto-shred it at the due time even
    while the segment itself stays locked (docs/deployment.md). `bwv
    retention` and `bwv request` read the same setting from config.toml.

    The first line on stdout is "listening on URL"; one log line per request
    and per ingest follows on stderr.
    """,
    """
    examples:
      bwv server add-dock --id dock-station-3      print a token for that dock (once)
      bwv server                                   listen on 127.0.0.1:8443 (plain HTTP)
      bwv server --listen 0.0.0.0:8443 --tls-cert server.pem --tls-key server.key
      bwv server --listen [::]:8443 --tls-cert s.pem --tls-key s.key --tls-client-ca docks-ca.pem
      bwv server --max-concurrent 32 --reserve-mb 20000
      AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
        bwv server --blobs 's3://evidence?endpoint=https://rgw.force.example:7480'
      bwv server --db postgresql://bwv@db.force.example:5432/evidence
      bwv server status                            what is held, per device, and any gaps
      bwv server reindex --dry-run                 held segments a search by place would miss
      bwv server migrate --to postgresql://bwv@db/evidence --blobs 's3://evidence?endpoint=...'
                                                   move this embedded installation to the fleet engines

    exit status: 0 after a clean stop (SIGTERM/SIGINT); 2 on bad settings or missing keys.
    """,
)(_configure)
def run_server(args: argparse.Namespace, home: Home) -> int:
    what = getattr(args, "server_what", None)
    if what == "add-dock":
        return _add_dock(args, home)
    if what == "status":
        return _status(home, args)
    if what == "api-docs":
        return _api_docs(args)
    if what == "reindex":
        return _reindex(args, home)
    if what == "migrate":
        from .migrate_command import run as migrate

        return migrate(args, home)
    return _serve(args, home)


def _reindex(args: argparse.Namespace, home: Home) -> int:
    from ..registry import DeviceRegistry
    from ..sealed.errors import KeyFileError
    from ..sealed.keys import ServerKeyPair
    from .lifecycle_command import blob_store, local_actor
    from .reindex import reindex

    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    try:
        keys = ServerKeyPair.load(home.server_keys_dir)
    except (KeyFileError, OSError) as e:
        raise UsageError(f"the server's keys are needed to read sealed tracks: {e}") from None
    db = _open_db(home, args)
    try:
        report = reindex(db, blob_store(home), DeviceRegistry(home.registry_dir), keys,
                         actor=local_actor(), retry_unreadable=args.retry_unreadable, dry_run=args.dry_run,
                         batch=args.batch, progress=lambda r: print(
                             f"  ... {r.indexed + r.no_fix + r.unreadable + r.skipped} of {r.candidates}",
                             file=sys.stderr, flush=True))
    except ServerError as e:  # the blob store could not be opened or reached: nothing recorded for what is unread
        print(f"bwv server reindex: {e.reason}; what was read so far is indexed, run it again to continue",
              file=sys.stderr)
        return EXIT_PROBLEMS
    finally:
        db.close()
    if args.dry_run:
        print(f"{report.candidates} held segment(s) have no indexed track; run without --dry-run to read them")
        return EXIT_OK
    print(f"{report.candidates} segment(s) read: {report.indexed} indexed ({report.fixes} fixes), "
          f"{report.no_fix} sealed without a fix, {report.unreadable} unreadable, {report.skipped} skipped")
    for note in report.notes:
        print(f"  unreadable: {note}")
    return EXIT_OK if report.unreadable == 0 else EXIT_PROBLEMS


def _add_dock(args: argparse.Namespace, home: Home) -> int:
    from .auth import DockTokens

    db = _open_db(home, args)
    try:
        token = DockTokens(db).add_dock(args.dock_id, rotate=args.rotate)
    except ServerError as e:
        raise UsageError(e.reason) from None
    finally:
        db.close()
    verb = "new token for" if args.rotate else "added"
    print(f"dock {args.dock_id} {verb}; its bearer token, shown only now (put it in the dock's settings):")
    print(token)
    return EXIT_OK


def _api_docs(args: argparse.Namespace) -> int:
    from .api_docs import access_matrix, openapi_text

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openapi.json").write_text(openapi_text())
    (args.out / "access-control.md").write_text(access_matrix())
    print(f"wrote {args.out / 'openapi.json'} and {args.out / 'access-control.md'}")
    return EXIT_OK


def _status(home: Home, args: argparse.Namespace) -> int:
    db = _open_db(home, args)
    try:
        summaries = db.device_summaries()
        uploads = db.uploads()
        docks = db.docks()
        from . import lifecycle
        reader = db.reader()
        clips = lifecycle.counts_by_state(reader)
        deleted = reader.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]
        chains = _device_chains(reader)
    finally:
        db.close()
    by_device = {s.device_id: s for s in summaries}
    print(f"evidence server at {home.server_dir}: {sum(s.segments for s in summaries)} segment(s) "
          f"from {len(summaries)} device(s); {len(docks)} dock(s)")
    missing_total = 0
    for device_id, chain in chains.items():
        s = by_device.get(device_id)
        held = sum(r.count for r in chain if r.kind == _HELD)
        print(f"  {device_id}: {held} segment(s), sequence {chain[0].first}..{chain[-1].last}"
              + (f", {len(s.flagged)} flagged" if s and s.flagged else ""))
        held_runs = [r for r in chain if r.kind == _HELD]
        if held_runs:
            shown = ", ".join(r.label() for r in held_runs[:_LISTED_RUNS])
            more = len(held_runs) - _LISTED_RUNS
            print(f"    held {shown}" + (f" and {more} more range(s)" if more > 0 else ""))
        deleted_runs = 0
        for r in chain:
            if r.kind == _MISSING:
                missing_total += r.count
                print(f"    {r.label()}: {r.count} missing (no segment, no tombstone)")
            elif r.kind == _DELETED:
                deleted_runs += 1
                if deleted_runs <= _LISTED_RUNS:
                    print(f"    {r.label()}: {r.count} deleted by policy (tombstones)")
        if deleted_runs > _LISTED_RUNS:
            print(f"    and {deleted_runs - _LISTED_RUNS} more range(s) deleted by policy (tombstones)")
        for sequence, status in s.flagged if s else ():
            print(f"    #{sequence}: {status}")
    receiving = [u for u in uploads if not u.complete]
    if receiving:
        print(f"{len(receiving)} upload(s) in progress:")
        for u in receiving:
            print(f"  {u.id}  {u.device_id} #{u.sequence}  {u.offset}/{u.length} bytes  dock {u.dock}  "
                  f"since {u.created_utc}")
    flagged = sum(len(s.flagged) for s in summaries)
    print(f"{flagged} flagged chain gap(s); {missing_total} segment(s) missing, {deleted} deleted by policy "
          "(tombstones)")
    print(f"clips: {clips.get('held', 0)} held, {clips.get('deleted', 0)} deleted by policy "
          f"({deleted} segment tombstone(s)), {clips.get('deleting', 0)} being deleted")
    return EXIT_OK


_HELD, _DELETED, _MISSING = "held", "deleted by policy", "missing"
_LISTED_RUNS = 10  # held and deleted ranges listed per device; missing ones are always all listed


@dataclass(frozen=True)
class _Run:
    """Consecutive sequence numbers of one device that are all held, all tombstones, or all missing."""

    kind: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def label(self) -> str:
        return f"#{self.first}" if self.first == self.last else f"#{self.first}..{self.last}"


def _device_chains(db: sqlite3.Connection) -> dict[str, list[_Run]]:
    """Per device, its chain from sequence 1 to the highest known, as runs: held segments, tombstones
    of segments deleted by policy, and what is neither (missing: never received, or lost).

    The runs come from SQL (gaps and islands), so a device with years of footage costs one row per
    run, not one per segment."""
    islands = ("SELECT device_id, MIN(sequence), MAX(sequence) FROM (SELECT device_id, sequence, "
               "sequence - ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY sequence) AS island FROM {table}) AS runs "
               "GROUP BY device_id, island")
    known: dict[str, list[_Run]] = {}
    for kind, table in ((_HELD, "segments"), (_DELETED, "tombstones")):
        for device_id, first, last in db.execute(islands.format(table=table)):
            known.setdefault(device_id, []).append(_Run(kind, first, last))
    chains: dict[str, list[_Run]] = {}
    for device_id in sorted(known):
        runs: list[_Run] = []
        upto = 0  # highest sequence accounted for so far
        # A sequence is counted once: the ingest refuses a deleted segment sent again, so held and
        # tombstoned do not overlap; if they ever did, the run that starts first claims it.
        for run in sorted(known[device_id], key=lambda r: (r.first, r.kind != _HELD)):
            if run.last <= upto:
                continue
            first = max(run.first, upto + 1)
            if first > upto + 1:
                runs.append(_Run(_MISSING, upto + 1, first - 1))
            if runs and runs[-1].kind == run.kind and runs[-1].last == first - 1:
                runs[-1] = _Run(run.kind, runs[-1].first, run.last)
            else:
                runs.append(_Run(run.kind, first, run.last))
            upto = run.last
        chains[device_id] = runs
    return chains


def _open_db(home: Home, args: argparse.Namespace | None = None):
    """The metadata database: `bwv server --db URL ...`, else config.toml's, else the embedded default."""
    from .service import open_metadata

    try:
        return open_metadata(home, getattr(args, "db", None))
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _serve(args: argparse.Namespace, home: Home) -> int:
    from .app import serve
    from .service import EvidenceService

    try:
        config = load_config(home.config_file, settings(
            listen=args.listen, max_concurrent=args.max_concurrent, reserve_mb=args.reserve_mb,
            max_upload_mb=args.max_upload_mb, idle_timeout_s=args.idle_timeout_s, tls_cert=args.tls_cert,
            tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, blobs=args.blobs, db=args.db,
        ))
        config.ssl_context()  # fail now, not at the first connection
        service = EvidenceService(home, config)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    server_log = logging.getLogger("bwv.server")
    server_log.setLevel(min(logging.INFO, logging.getLogger().level))
    try:
        for note in service.recover():
            log.warning("recovery: %s", note)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)

            def announce(url: str) -> None:
                print(f"listening on {url}", flush=True)
                summaries = service.db.device_summaries()
                log.info("evidence server %s: server key %s, %d segment(s) held from %d device(s), "
                         "up to %d concurrent uploads, reserve %.0f MB, max upload %.0f MB",
                         home.server_dir, service.server_keys.public.key_id.hex(),
                         sum(s.segments for s in summaries), len(summaries), config.max_concurrent,
                         config.reserve_bytes / 2**20, config.max_upload_bytes / 2**20)

            await serve(service, announce, stop)

        try:
            asyncio.run(main())
        except OSError as e:
            raise UsageError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    finally:
        service.close()
    print("server stopped", flush=True)
    sys.stdout.flush()
    return EXIT_OK


__all__ = ["run_server"]
