"""`bwv server`: run the evidence server, give docks their tokens, and say what it holds."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ..cli import EXIT_OK, UsageError, command, common_options
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
    sub = p.add_subparsers(dest="server_what", metavar="{add-dock,status,api-docs}")
    a = sub.add_parser("add-dock", help="create a dock's upload token (shown once)",
                       formatter_class=p.formatter_class, parents=[common_options()],
                       description="Create a random bearer token for a dock and print it once.\n"
                                   "The server keeps only its SHA-256; a lost token is replaced with --rotate.")
    a.add_argument("--id", required=True, dest="dock_id", metavar="DOCK",
                   help="dock id: 1-64 letters, digits, '.', '_' or '-' (e.g. station-3-bay-rack)")
    a.add_argument("--rotate", action="store_true", help="replace the dock's existing token (the old one stops working)")
    sub.add_parser("status", help="segments held per device, flagged chain gaps, uploads in progress",
                   formatter_class=p.formatter_class, parents=[common_options()],
                   description="Summarise the evidence held under BWV_HOME/server without starting the server.")
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
    idle_timeout_s, tls_cert, tls_key, tls_client_ca); options override it.

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
      bwv server status                            what is held, per device, and any gaps

    exit status: 0 after a clean stop (SIGTERM/SIGINT); 2 on bad settings or missing keys.
    """,
)(_configure)
def run_server(args: argparse.Namespace, home: Home) -> int:
    what = getattr(args, "server_what", None)
    if what == "add-dock":
        return _add_dock(args, home)
    if what == "status":
        return _status(home)
    if what == "api-docs":
        return _api_docs(args)
    return _serve(args, home)


def _add_dock(args: argparse.Namespace, home: Home) -> int:
    from .auth import DockTokens

    db = _open_db(home)
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


def _status(home: Home) -> int:
    db = _open_db(home)
    try:
        summaries = db.device_summaries()
        uploads = db.uploads()
        docks = db.docks()
        from . import lifecycle
        clips = lifecycle.counts_by_state(db.reader())
        deleted = db.reader().execute("SELECT COUNT(*) FROM tombstones").fetchone()[0]
    finally:
        db.close()
    print(f"evidence server at {home.server_dir}: {sum(s.segments for s in summaries)} segment(s) "
          f"from {len(summaries)} device(s); {len(docks)} dock(s)")
    for s in summaries:
        print(f"  {s.device_id}: {s.segments} segment(s), sequence {s.lowest}..{s.highest}"
              + (f", {len(s.flagged)} flagged" if s.flagged else ""))
        for sequence, status in s.flagged:
            print(f"    #{sequence}: {status}")
    receiving = [u for u in uploads if not u.complete]
    if receiving:
        print(f"{len(receiving)} upload(s) in progress:")
        for u in receiving:
            print(f"  {u.id}  {u.device_id} #{u.sequence}  {u.offset}/{u.length} bytes  dock {u.dock}  "
                  f"since {u.created_utc}")
    flagged = sum(len(s.flagged) for s in summaries)
    print(f"{flagged} flagged chain gap(s)")
    print(f"clips: {clips.get('held', 0)} held, {clips.get('deleted', 0)} deleted by policy "
          f"({deleted} segment tombstone(s)), {clips.get('deleting', 0)} being deleted")
    return EXIT_OK


def _open_db(home: Home):
    from .service import open_metadata

    try:
        return open_metadata(home)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _serve(args: argparse.Namespace, home: Home) -> int:
    from .app import serve
    from .service import EvidenceService

    try:
        config = load_config(home.config_file, settings(
            listen=args.listen, max_concurrent=args.max_concurrent, reserve_mb=args.reserve_mb,
            max_upload_mb=args.max_upload_mb, idle_timeout_s=args.idle_timeout_s, tls_cert=args.tls_cert,
            tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
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
