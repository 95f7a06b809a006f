"""`bwv`: the one command-line entry point, a subcommand per program and tool.

Each subcommand lives in its own function (or, for the programs, its own
package registers itself); this module only parses and dispatches.  Exit
status: 0 all well, 1 the command ran and found problems, 2 bad usage or
configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import __version__
from .home import ENV, Home, resolve_home
from .sealed.errors import KeyFileError, SegmentError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("bwv")


class UsageError(Exception):
    """Bad arguments or configuration: exit 2 with the message."""


def _fmt(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)


COMMANDS: dict[str, tuple[str, str, str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, summary: str, description: str, epilog: str = ""):
    """Register a subcommand: `configure(parser)` adds its options, the decorated function runs it."""

    def wrap(configure: Callable[[argparse.ArgumentParser], None]):
        def register(run: Callable):
            COMMANDS[name] = (summary, _fmt(description), _fmt(epilog), configure, run)
            return run

        return register

    return wrap


# --------------------------------------------------------------------------- keys
def _configure_keys(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_what", metavar="{server,device,show}", required=True)
    s = sub.add_parser("server", help="create the evidence server's key pair", formatter_class=_Formatter,
                       parents=[common_options()],
                       description="Create the evidence server's HPKE key pair (ML-KEM-768+X25519) and its "
                       "Ed25519 receipt key under BWV_HOME/server/keys. Refuses to replace existing keys: "
                       "footage sealed to the old key could never be opened again.")
    s.add_argument("--force-new", action="store_true",
                   help="create a new key pair even if one exists (the old one is kept as keys.old-<time>)")
    d = sub.add_parser("device", help="enrol a camera", formatter_class=_Formatter, parents=[common_options()],
                       description="Enrol a camera: create its Ed25519 signing key, give it the server's "
                                   "public key, and record its public key in the server's registry.")
    d.add_argument("--id", required=True, dest="device_id", metavar="ID",
                   help="device id: 1-64 letters, digits, '.', '_' or '-' (e.g. the serial number)")
    sub.add_parser("show", help="print the server key id and enrolled devices", parents=[common_options()])


@command(
    "keys",
    "create the server key pair and enrol cameras",
    """
    Manage key material under BWV_HOME.

    The evidence server's private keys never leave BWV_HOME/server/keys. A camera
    receives its own signing key and only the server's public key: it can seal
    footage for the server but can never decrypt it.
    """,
    """
    examples:
      bwv keys server                 create the server's keys (once per force)
      bwv keys device --id cam-0042   enrol camera cam-0042
      bwv keys show                   list the key id and enrolled cameras
    """,
)(_configure_keys)
def run_keys(args: argparse.Namespace, home: Home) -> int:
    from .enrol import create_server_keys, enrol_device, show_keys

    if args.keys_what == "server":
        pub = create_server_keys(home, force_new=args.force_new)
        print(f"server key {pub.key_id.hex()} written to {home.server_keys_dir}")
    elif args.keys_what == "device":
        key_path = enrol_device(home, args.device_id)
        print(f"enrolled {args.device_id}: signing key {key_path}, registry {home.registry_dir / (args.device_id + '.json')}")
    else:
        print(show_keys(home))
    return EXIT_OK


# --------------------------------------------------------------------------- seal
def _configure_seal(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="video files to seal (any container PyAV reads)")
    p.add_argument("--device", required=True, metavar="ID", help="the enrolled device to seal as")
    p.add_argument("--segment-seconds", type=float, default=10.0, metavar="S",
                   help="cut at the first keyframe after S seconds (default: %(default)s)")
    p.add_argument("--start", metavar="UTC",
                   help="UTC time the footage began, ISO 8601 (default: the file's creation_time tag, else its mtime)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write segments here instead of the device's storage in BWV_HOME")


@command(
    "seal",
    "seal existing video files as an enrolled device",
    """
    Seal existing video as the named device would: split at keyframes into
    segments (packets are copied, never re-encoded), remux each to MPEG-TS,
    encrypt it to the server's public key and sign it with the device key. The
    segments join the device's chain after anything it sealed before.

    Used to make footage for tests, and to import video from another source
    into evidence under a device enrolled for that purpose.
    """,
    """
    examples:
      bwv seal --device cam-0042 incident.mp4
      bwv seal --device import-01 --segment-seconds 30 --start 2026-11-25T14:03:00Z old.mkv
    """,
)(_configure_seal)
def run_seal(args: argparse.Namespace, home: Home) -> int:
    from .enrol import device_storage
    from .importer import import_video

    start = None
    if args.start:
        try:
            start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--start {args.start!r} is not an ISO 8601 time (e.g. 2026-11-25T14:03:00Z)") from None
        if start.tzinfo is None:
            raise UsageError("--start needs a time zone (append Z for UTC)")
    if args.segment_seconds <= 0 or args.segment_seconds > 3600:
        raise UsageError("--segment-seconds must be between 0 and 3600")
    storage = device_storage(home, args.device, directory=args.out)
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    status = EXIT_OK
    for path in args.files:
        report = import_video(
            path, storage, segment_seconds=args.segment_seconds, start=start,
            progress=lambda info: print(f"  sealed {info.path.name}  seq {info.sequence}  "
                                        f"{info.path.stat().st_size / 1e6:.1f} MB", flush=True),
        )
        print(f"{path}: clip {report.clip_id}, {len(report.segments)} segment(s), "
              f"{report.media_bytes / 1e6:.1f} MB of media, into {storage.directory}")
        if report.dropped_before_keyframe:
            print(f"  note: {report.dropped_before_keyframe} packet(s) before the first keyframe were left out")
        for s in report.skipped_streams:
            print(f"  note: {s} left out (MPEG-TS cannot carry it without re-encoding)")
    return status


# --------------------------------------------------------------------------- verify
def _configure_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="sealed files, or directories searched recursively")
    p.add_argument("--held", action="store_true",
                   help="verify every segment this home's evidence server holds, from its blob store (local "
                        "or S3) and database (SQLite or PostgreSQL) as config.toml names them, instead of PATHs")
    p.add_argument("-l", "--list", action="store_true", help="also print one line per good segment")
    p.add_argument("--no-tombstones", action="store_true",
                   help="do not read the server's deletion records: every gap is reported as missing")


def _verify_held(home: Home, on_file, deletions):
    """`bwv verify --held`: the server's own database and blob store, opened read-only."""
    from .registry import DeviceRegistry
    from .server.errors import ConfigError, ServerError
    from .server.lifecycle_command import blob_store
    from .server.service import database_url
    from .server.store.held_records import HeldRecords, RecordsUnreadable
    from .verification import verify_held

    try:
        url = database_url(home)
        if url.path is not None and not url.path.is_file():
            raise UsageError(f"--held: this home holds no evidence server database ({url.path})")
        records = HeldRecords(url)
        try:
            return verify_held(records, blob_store(home), DeviceRegistry(home.registry_dir), on_file=on_file,
                               deletions=deletions)
        finally:
            records.close()
    except (ConfigError, RecordsUnreadable) as e:
        raise UsageError(f"--held: {e}") from None
    except ServerError as e:
        raise UsageError(f"--held: {e.reason}") from None


@command(
    "verify",
    "check sealed segments: signatures, hashes, chain continuity",
    """
    Check sealed segments against the devices enrolled in BWV_HOME, with public
    keys only: the file layout and every bound, the SHA-256 of the ciphertext
    against the signed trailer, the device's Ed25519 signature, and each
    device's chain (a missing segment between two present ones, a replayed or
    duplicated segment, a segment that does not link to its predecessor).

    A gap the evidence server's retention sweep left is not missing evidence.
    When BWV_HOME holds a server database (server/evidence.db), its tombstones
    are read, read-only: a gap they fill whose hashes link (each tombstone
    names the hash of the segment before it; the segment after the gap names
    the hash of the last tombstone) is noted as "deleted by policy" and is not
    a problem. Tombstones that do not link are a problem (the hash expected and
    the hash found); a gap without tombstones is missing. --no-tombstones
    judges the files alone.

    --held verifies what the server holds rather than files named: every
    segment its database lists, read from its blob store (the local store or
    an S3 bucket, as config.toml's [server] blobs says; on PostgreSQL as db
    says), each checked with public keys only and against the hash the
    database recorded for it, then the chains as above. A segment held in S3
    is copied to a temporary directory, checked and removed.

    Prints one line per problem (file, kind, what is wrong), a note per run of
    segments deleted by policy, then a summary. Exits 0 only when everything
    holds, 1 when anything does not.
    """,
    """
    examples:
      bwv verify /srv/bwv/server/store
      bwv verify --no-tombstones /srv/bwv/server/store
      bwv verify --list cam-0042-0000000017.bwv cam-0042-0000000018.bwv
      bwv verify --held                     everything the server holds, on S3 and PostgreSQL too
    """,
)(_configure_verify)
def run_verify(args: argparse.Namespace, home: Home) -> int:
    from .registry import DeviceRegistry
    from .verification import DeletionRecords, verify_paths

    def on_file(path, seg):
        if seg is not None and args.list:
            note = "  (recovered after power loss)" if seg.trailer.recovered else ""
            print(f"ok  {path}  {seg.device_id} #{seg.sequence} clip {str(seg.preamble.clip_id)[:8]} "
                  f"part {seg.preamble.segment_index}  {seg.segment_hash.hex()[:16]}{note}")

    if bool(args.paths) == bool(args.held):
        raise UsageError("give the sealed files or directories to verify, or --held for what the server holds "
                         "(not both)")
    deletions = None if args.no_tombstones else DeletionRecords.of_home(home)
    try:
        if args.held:
            report = _verify_held(home, on_file, deletions)
        else:
            report = verify_paths(args.paths, DeviceRegistry(home.registry_dir), on_file=on_file,
                                  deletions=deletions)
    finally:
        if deletions is not None:
            deletions.close()
    for problem in report.problems:
        print(problem.line())
    for deleted in report.deleted:
        print(deleted.line())
    for path in report.unsealed:
        print(f"{path}: note: unsealed segment (the camera seals it at its next start)")
    devices = report.devices()
    recovered = sum(1 for s in report.segments if s.trailer.recovered)
    by_policy = sum(d.count for d in report.deleted)
    summary = (f"{len(report.segments)} segment(s) from {len(devices)} device(s) verified"
               + (f", {recovered} recovered after power loss" if recovered else "")
               + (f", {by_policy} deleted by policy" if by_policy else "")
               + f"; {len(report.problems)} problem(s)")
    print(summary)
    return EXIT_OK if report.ok else EXIT_PROBLEMS


# --------------------------------------------------------------------------- open
def _configure_open(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="sealed files or directories")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the playable video")
    p.add_argument("--no-mp4", action="store_true", help="write only the joined MPEG-TS, not the MP4 remux")


@command(
    "open",
    "decrypt sealed segments into playable video (server side)",
    """
    Verify, then decrypt sealed segments with the evidence server's private key
    (BWV_HOME/server/keys) into playable video: the segments of each clip are
    joined in order into CLIP.ts and remuxed without re-encoding into CLIP.mp4,
    with CLIP.json listing the segments, their hashes, times and sealed metadata.
    Files that fail verification are not decrypted. Where BWV_HOME holds an
    evidence server's database, each clip decrypted is written to its audit
    trail (decrypt and key use, by the local account that ran the command).
    """,
    """
    examples:
      bwv open --out /tmp/review cam-0042-0000000017.bwv
      bwv open --out case-1234/ /srv/evidence/cam-0042/
    """,
)(_configure_open)
def run_open(args: argparse.Namespace, home: Home) -> int:
    from .opener import open_paths
    from .registry import DeviceRegistry
    from .sealed.keys import ServerKeyPair

    server = ServerKeyPair.load(home.server_keys_dir)
    report = open_paths(args.paths, DeviceRegistry(home.registry_dir), server, args.out, mp4=not args.no_mp4)
    audit_local_decrypts(home, report, via="bwv open")
    for problem in report.verify.problems + report.problems:
        print(problem.line())
    for clip in report.clips:
        out = clip.mp4_path or clip.ts_path
        dur = f"{clip.duration_s:.1f} s" if clip.duration_s else "?"
        print(f"opened {clip.device_id} clip {clip.clip_id}: {len(clip.segments)} segment(s), {dur} -> {out}")
    problems = len(report.verify.problems) + len(report.problems)
    print(f"{len(report.clips)} clip(s) opened into {args.out}; {problems} problem(s)")
    return EXIT_OK if problems == 0 else EXIT_PROBLEMS


def audit_local_decrypts(home: Home, report, *, via: str) -> int:
    """Append decrypt and key-use records for each clip opened with the server's key, when this
    home is an evidence server's (its database exists): footage is never viewed without a trace,
    whether through the HTTP API or on the server's own console.  Returns the records written."""
    from .server import audit
    from .server.lifecycle_command import local_actor
    from .server.service import database_path, open_metadata

    if not report.clips or not database_path(home).is_file():
        return 0
    actor = local_actor()
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            for clip in report.clips:
                hashes = [seg.segment_hash.hex() for seg in clip.segments]
                out = str(clip.mp4_path or clip.ts_path)[:500]
                audit.append(conn, actor=actor, action="decrypt", target=f"clip:{clip.clip_id}",
                             detail={"segments": len(hashes), "to": out, "via": via})
                audit.append(conn, actor=actor, action="key_use", target=f"clip:{clip.clip_id}",
                             detail={"key": "server footage key", "unwrapped": len(hashes), "via": via})
    finally:
        db.close()
    return 2 * len(report.clips)


# --------------------------------------------------------------------------- demo
def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=12.0, help="length of the demo footage (default: %(default)s)")
    p.add_argument("--serve", action="store_true",
                   help="after the demo, keep the evidence server running with one account per staff role and "
                        "print 'web: URL' and 'user: ROLE USERNAME PASSWORD' lines, until interrupted")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="with --serve: where the server listens (default: a free port on loopback)")


@command(
    "demo",
    "run the whole job on embedded defaults and say what happened",
    """
    Run the main job end to end on embedded defaults, under BWV_HOME: create the
    server's keys and enrol a demo camera (first run only), start the evidence
    server in the background (SQLite, local disk), record a clip with the
    emulated camera, dock it (serial link on a pty), upload its segments over
    tus, free the camera against the server's signed receipts, verify what the
    server holds, log in a disclosure officer who finds the clip again by a
    point on its GNSS route and a time window, open it as the server would,
    and end with the retention schedule of what was uploaded (when it is due
    for deletion) and a check of the audit trail the run left. Everything is
    left under BWV_HOME for inspection.

    With --serve the evidence server is then started again and kept running:
    one demo account per staff role is made (or its password reset), and the
    web application's address and each account are printed, one per line
    ("web: URL", "user: ROLE USERNAME PASSWORD"), until Ctrl-C or SIGTERM.
    """,
    """
    examples:
      BWV_HOME=/tmp/bwv-demo bwv demo
      BWV_HOME=/tmp/bwv-demo bwv demo --serve --listen 127.0.0.1:8443
    """,
)(_configure_demo)
def run_demo(args: argparse.Namespace, home: Home) -> int:
    from .demo import run

    return run(home, seconds=args.seconds, serve_on=args.listen if args.serve else None)


# --------------------------------------------------------------------------- main
def common_options() -> argparse.ArgumentParser:
    """Options every command and sub-subcommand accepts, wherever they are written."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"state directory (default: ${ENV}, else ~/.local/share/openbwv)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (-vv: debug)")
    return common


PROGRAM_COMMANDS = ("openbwv.firmware.command", "openbwv.server.command", "openbwv.server.search_command",
                    "openbwv.server.lifecycle_command",
                    "openbwv.dock.command")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for module in PROGRAM_COMMANDS:  # each program's package registers its own subcommand
        importlib.import_module(module)
    common = common_options()

    parser = argparse.ArgumentParser(
        prog="bwv",
        formatter_class=_Formatter,
        description=_fmt(
            """
            OpenBWV: open-source body-worn video.

            One command for the camera firmware, the dock daemon, the evidence
            server and their tools. State lives under BWV_HOME (--home overrides).
            """
        ),
        epilog=_fmt(
            """
            Run `bwv COMMAND --help` for a command's options and examples.
            Exit status: 0 all well; 1 problems found; 2 bad usage or configuration.
            """
        ),
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"bwv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, description, epilog, configure, _run) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=description, epilog=epilog,
                           formatter_class=_Formatter, parents=[common])
        configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    home = resolve_home(getattr(args, "home", None))
    _summary, _d, _e, _c, run = COMMANDS[args.command]
    try:
        return run(args, home)
    except UsageError as e:
        print(f"bwv {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyFileError as e:
        print(f"bwv {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SegmentError as e:
        print(f"bwv {args.command}: {e}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print(f"bwv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
