"""`bwv dock`: run the docking station daemon, or show what each bay is doing."""

from __future__ import annotations

import argparse
import os
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from ..cli import EXIT_OK, EXIT_PROBLEMS, UsageError, command
from ..home import Home

log = logging.getLogger("bwv.dock")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("run", "status"), default="run",
                   help="run the daemon (default) or show each bay's status")
    p.add_argument("--bays-config", type=Path, metavar="FILE",
                   help="bays file (TOML, [[bay]] name, serial, mount; default: BWV_HOME/dock/bays.toml)")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where bay status files and camera records live (default: BWV_HOME/dock/state)")
    p.add_argument("--server", metavar="URL", action="append", dest="servers",
                   help="evidence server (ingest node) to upload to; give it again for each node of a fleet: "
                        "bay i uses server i mod n and fails over to the others (default: [dock] servers "
                        "in the bays file; an empty URL counts as not given, so a unit's --server "
                        "${BWV_SERVER} may leave it unset)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding this dock's upload token (default: $BWV_DOCK_TOKEN)")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA certificate that signed the server's TLS certificate")
    p.add_argument("--tls-client-cert", type=Path, metavar="FILE",
                   help="this dock's client certificate, for a server that requires mutual TLS")
    p.add_argument("--tls-client-key", type=Path, metavar="FILE", help="the key of --tls-client-cert")
    p.add_argument("--upload-dir", type=Path, metavar="DIR",
                   help="emulation: upload into DIR and sign receipts with the server keys in BWV_HOME/server/keys")
    p.add_argument("--once", action="store_true",
                   help="serve the cameras present now, one session each, then exit (0 if every one is clear)")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="S",
                   help="with --once: give up after S seconds (default: %(default)s)")
    p.add_argument("--retry-max", type=float, default=300.0, metavar="S",
                   help="longest wait between attempts to reach the server (default: %(default)s)")
    p.add_argument("--read-timeout", type=float, default=120.0, metavar="S",
                   help="longest wait for a server's answer to one request before it counts as unreachable "
                        "(with several servers: the bay fails over); keep it above the time a server takes to "
                        "verify a segment's last chunk (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="status: print the bays' status as JSON")


@command(
    "dock",
    "run the docking station: upload cradled cameras, free them against receipts",
    """
    Serve every bay of a docking station at once. When a camera's storage
    appears in a bay, the dock greets it over the bay's serial port, sets its
    clock from the dock's (NTP-synced) clock, lists its sealed segments,
    uploads each one, and hands the server's receipts to the camera, which
    frees a segment only after checking the receipt against the server key it
    was enrolled with. A bay is reported CLEAR when its camera holds no sealed
    segment. While the server is unreachable the dock retries with backoff and
    the camera's files stay untouched.

    Several evidence servers (--server given more than once, or [dock]
    servers): the bays spread over them, bay number i (0-based, in the bays
    file's order) uploading to server i mod n, its home. When an upload to a
    server fails for a reason that may pass (connection refused or reset, a
    timeout, HTTP 5xx, 507 full, 423 busy) that server is passed over by every
    bay for a backoff of 2 s doubling to 60 s, and the bay goes straight on to
    the next server; after that it must answer GET /api/v1/health within 5 s
    before it gets an upload again. The upload begun on the dead node is first asked for on
    the next one by the same upload path (HEAD): nodes that share their upload
    store continue from the durable offset; a node that does not know it
    (404/410) takes the segment again from byte 0. A refusal (400, 401, 403,
    409 fork, 413, 422) is never failed over. Each new segment starts at the
    bay's home again once the home is no longer passed over. Only when every
    server has failed does the bay wait with --retry-max backoff. Whichever
    node signs the receipt, the camera checks it against the server key it was
    enrolled with before it frees anything: all nodes of a fleet share the
    server keys.

    Progress (bytes, rate, ETA, and the server when there are several) is
    shown per bay on the terminal and logged as key=value lines
    (event=upload_progress, upload_retry, segment_freed, camera_clear, ...).
    Each change of server is logged as event=upload_server bay=B server=S
    reason=home|failover|home_back previous=S error=WHY, each failed server
    as event=server_unavailable, its return as event=server_back.
    `bwv dock status` prints each bay's state and the server it uses.

    Bays file (TOML):
      [dock]
      id = "dock-station-3"
      bays_root = "/media/bwv"       # optional: a bay's mount defaults to bays_root/NAME
      servers = ["https://ingest-1.example", "https://ingest-2.example"]   # optional
      [[bay]]
      name = "bay-1"
      serial = "/dev/bwv-bay-1"      # or "pty:bays/bay-1.tty" in emulation
      mount = "/media/bwv/bay-1"     # or a directory under a bays root in emulation
    """,
    """
    examples:
      bwv dock --bays-config /etc/openbwv/bays.toml --server https://evidence.example
      bwv dock --server https://ingest-1.example --server https://ingest-2.example
      bwv dock --server https://evidence-lb.example     (one URL: a load balancer in front of the nodes)
      bwv dock --bays-config bays.toml --upload-dir /tmp/evidence     (emulation)
      bwv dock status

    exit status: 0 on a clean stop (with --once: every camera clear); 1 if a camera was not cleared.
    """,
)(_configure)
def run_dock(args: argparse.Namespace, home: Home) -> int:
    from .state import StateStore, format_status

    state_dir = args.state_dir or home.root / "dock" / "state"
    if args.action == "status":
        bays = StateStore(state_dir).read_bays()
        if args.json:
            print(json.dumps([asdict(b) for b in bays], indent=2))
        else:
            print(format_status(bays))
        return EXIT_OK
    return _run(args, home, state_dir)


def _run(args: argparse.Namespace, home: Home, state_dir: Path) -> int:
    from .backoff import Backoff
    from .config import load_config
    from .daemon import DockDaemon
    from .errors import DockConfigError
    from .ports import PTY_PREFIX
    from .progress import DisplayLogHandler, TerminalDisplay

    try:
        config = load_config(args.bays_config or home.root / "dock" / "bays.toml")
        backoff = Backoff(maximum_s=max(2.0, args.retry_max))
    except (DockConfigError, ValueError) as e:
        raise UsageError(str(e)) from None
    given = [url for url in args.servers or [] if url.strip()]
    uploader = _uploader(args, home, given or ([] if args.upload_dir else list(config.servers)))
    display = TerminalDisplay(sys.stdout)
    dock_log = logging.getLogger("bwv.dock")
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        dock_log.setLevel(logging.INFO)  # the structured lines are the dock's log
    if display.live and sys.stderr.isatty():  # one terminal: keep the log above the live progress lines
        handler = DisplayLogHandler(display)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        dock_log.addHandler(handler)
        dock_log.propagate = False

    daemon = DockDaemon(config.bays, uploader, state_dir=state_dir, dock_id=config.dock_id,
                        display=display, upload_backoff=backoff)

    def on_signal(signum, _frame):
        log.warning("signal %d: stopping (cameras keep their files)", signum)
        daemon.stop_event.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    for bay in config.bays:
        where = f"camera port {bay.serial[len(PTY_PREFIX):]} (emulated)" if bay.serial.startswith(PTY_PREFIX) \
            else f"serial {bay.serial}"
        print(f"{bay.name}: {where}, storage {bay.mount}", flush=True)
    daemon.start()
    try:
        if args.once:
            present = daemon.present_bays()
            if not present:
                print("no camera in any bay", flush=True)
                return EXIT_OK
            finished = daemon.wait_for_sessions({b: 1 for b in present}, timeout=args.timeout)
            reports = [r for b in present for r in daemon.reports[b][:1]]
            if not finished:
                print(f"not every camera was served within {args.timeout:g} s", flush=True)
            return EXIT_OK if finished and all(r.clear for r in reports) else EXIT_PROBLEMS
        daemon.stop_event.wait()
        return EXIT_OK
    finally:
        daemon.stop()


def _uploader(args: argparse.Namespace, home: Home, servers: list[str]):
    if servers:
        from .failover import FleetUploader
        from .tus_upload import TusUploader

        token = os.environ.get("BWV_DOCK_TOKEN", "")
        if args.token_file:
            try:
                token = args.token_file.read_text().strip()
            except OSError as e:
                raise UsageError(f"cannot read the dock token {args.token_file}: {e.strerror}") from None
        if not token:
            raise UsageError("the evidence server needs this dock's token: --token-file FILE or BWV_DOCK_TOKEN "
                             "(the server's operator creates it with `bwv server add-dock --id DOCK`)")
        try:
            if bool(args.tls_client_cert) != bool(args.tls_client_key):
                raise UsageError("--tls-client-cert and --tls-client-key go together")
            cert = (str(args.tls_client_cert), str(args.tls_client_key)) if args.tls_client_cert else None
            if not args.read_timeout > 0:
                raise UsageError(f"--read-timeout must be a positive number of seconds, not {args.read_timeout:g}")
            options = dict(state_path=home.root / "dock" / "uploads.json", read_timeout=args.read_timeout,
                           verify=str(args.tls_ca) if args.tls_ca else True, client_cert=cert)
            if len(servers) == 1:
                return TusUploader(servers[0], token, **options)
            return FleetUploader(servers, token, **options)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.upload_dir is None:
        raise UsageError("say where segments go: --server URL (or [dock] servers in the bays file), "
                         "or --upload-dir DIR in emulation")
    from ..registry import DeviceRegistry
    from ..sealed.keys import ServerKeyPair
    from .upload import DirectoryUploader

    keys = ServerKeyPair.load(home.server_keys_dir)  # emulation: the dock machine stands in for the server
    return DirectoryUploader(args.upload_dir, keys, registry=DeviceRegistry(home.registry_dir))


__all__ = ["run_dock"]
