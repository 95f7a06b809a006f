"""`bwv retention`, `bwv request`, `bwv audit`, `bwv user`: the evidence lifecycle from the server's shell.

These act on BWV_HOME/server/evidence.db directly (no running server
needed), as the local operator: the audit trail names them
``local:<unix user>``.  The same actions over HTTP, with roles, are in
routes.py.  Every change is audited exactly as its HTTP twin.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from ..cli import EXIT_OK, EXIT_PROBLEMS, UsageError, _Formatter, command, common_options
from ..home import Home
from . import audit, geoindex, lifecycle, sar, users
from .config import load_blobs, load_retention
from .errors import BadRequest, ConfigError, ServerError
from .retention import due_utc_us
from .service import open_metadata, sign_audit_head


def local_actor() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except Exception:
        return "local:unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _server_errors(run):
    """Refusals print their reason: 2 for what the operator typed wrong, 1 for everything else."""
    @functools.wraps(run)
    def wrapped(args, home):
        try:
            return run(args, home)
        except BadRequest as e:
            raise UsageError(e.reason) from None
        except ConfigError as e:
            raise UsageError(str(e)) from None
        except ServerError as e:
            print(f"bwv {args.command}: {e.reason}", file=sys.stderr)
            return EXIT_PROBLEMS
    return wrapped


def _time(name: str, text: str) -> int:
    try:
        return geoindex.to_utc_us(geoindex.parse_utc(name, text))
    except geoindex.QueryInvalid as e:
        raise UsageError(str(e)) from None


def _sub(p: argparse.ArgumentParser, dest: str, names: str):
    return p.add_subparsers(dest=dest, metavar="{" + names + "}", required=True)


def _add(sub, name: str, help: str, description: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description or help, formatter_class=_Formatter,
                          parents=[common_options()])


# =========================================================================== retention
def _configure_retention(p: argparse.ArgumentParser) -> None:
    sub = _sub(p, "what", "due,sweep,show,mark,unmark,category,assign,export")
    d = _add(sub, "due", "clips due for deletion in the next days",
             "List the held clips whose retention ends within --days (default 7), earliest first, so that "
             "misfiled evidence is caught before it goes. Marked and requested clips are left out unless "
             "--include-held.")
    d.add_argument("--days", type=int, default=7, help="look-ahead in days (default: %(default)s)")
    d.add_argument("--include-held", action="store_true", help="list clips kept by a mark or request too")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    s = _add(sub, "sweep", "delete what is due (run hourly by openbwv-retention.timer)",
             "Delete every clip whose retention period is over and that no evidence mark or open subject "
             "access request holds: crypto-shred each segment (its wrapped key overwritten, then the file "
             "removed), leave a tombstone with its hashes, and audit each deletion. Safe to interrupt and "
             "re-run: each clip is deleted exactly once.")
    s.add_argument("--dry-run", action="store_true", help="show what would be deleted; change nothing")
    s.add_argument("--now", metavar="ISO", help=argparse.SUPPRESS)  # tests and drills: sweep as of a time
    s.add_argument("--batch", type=int, default=500, help="clips per transaction (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    sh = _add(sub, "show", "a clip's retention: category, due date, marks, holds, tombstones")
    sh.add_argument("clip_id")
    m = _add(sub, "mark", "mark a clip as evidence (kept until the mark is lifted)")
    m.add_argument("clip_id")
    m.add_argument("--case", required=True, metavar="REF", help="case reference")
    m.add_argument("--reason", required=True)
    u = _add(sub, "unmark", "lift an evidence mark")
    u.add_argument("clip_id")
    u.add_argument("--mark", required=True, type=int, metavar="N", help="the mark's number (see show)")
    u.add_argument("--reason", required=True)
    c = _add(sub, "category", "file a clip under a retention category")
    c.add_argument("clip_id")
    c.add_argument("category")
    c.add_argument("--reason", required=True)
    e = _add(sub, "export", "evidential export: a marked clip verified, decrypted, unredacted, with a signed manifest",
             "Verify and decrypt a clip marked as evidence for --case, remux it to MP4 without re-encoding or "
             "redaction, and write it with a manifest signed by the server key (hashes of the sealed originals, "
             "of the decrypted media and of the MP4; who, when, the case and the reason) into "
             "BWV_HOME/server/exports/evidential/<clip>/<n>/. The key use, decryption and export are audited. "
             "The same as POST /api/v1/clips/{clip_id}/exports.")
    e.add_argument("clip_id")
    e.add_argument("--case", required=True, metavar="REF", help="the case reference the clip is marked for")
    e.add_argument("--reason", required=True, help="why it is exported (e.g. disclosure to the CPS)")
    a = _add(sub, "assign", "record which officer wore a device (for own-footage access and searches)")
    a.add_argument("device_id")
    a.add_argument("officer", help="the officer's user name")
    a.add_argument("--from", dest="start", required=True, metavar="ISO")
    a.add_argument("--to", dest="end", metavar="ISO", help="end (default: open)")


@command(
    "retention",
    "retention: the due list, the deletion sweep, evidence marks, categories, evidential exports",
    """
    Every clip has a retention category ("unmarked" by default: deleted 31
    days after recording; categories and periods in the [retention] table of
    BWV_HOME/config.toml). An evidence mark or an open subject access
    request keeps a clip whatever its category says. Nothing is deleted
    that has not been on the due list for notice_days (7).
    """,
    """
    examples:
      bwv retention due --days 7
      bwv retention sweep --dry-run
      bwv retention mark 0b7e...  --case CR-2026-0042 --reason "assault, Market St"
      bwv retention show 0b7e...
      bwv retention export 0b7e... --case CR-2026-0042 --reason "disclosure to the CPS"

    exit status: 0 done; 1 refused (the reason is printed); 2 bad arguments.
    """,
)(_configure_retention)
@_server_errors
def run_retention(args: argparse.Namespace, home: Home) -> int:
    policy = load_retention(home.root / "config.toml")
    db = open_metadata(home)
    actor = local_actor()
    try:
        if args.what == "due":
            return _print_due(db, policy, args)
        if args.what == "sweep":
            return _sweep(home, db, policy, args)
        if args.what == "show":
            return _show(db, policy, args.clip_id)
        if args.what == "export":
            return _evidential_export(home, db, policy, args, actor)
        with db.transaction() as conn:
            if args.what == "mark":
                n = lifecycle.mark_evidence(conn, args.clip_id, case_ref=args.case, reason=args.reason, actor=actor,
                                            at=_now())
                print(f"clip {args.clip_id}: evidence mark {n} ({args.case}); kept until lifted")
            elif args.what == "unmark":
                lifecycle.lift_mark(conn, args.clip_id, args.mark, reason=args.reason, actor=actor, at=_now())
                print(f"clip {args.clip_id}: mark {args.mark} lifted")
            elif args.what == "category":
                lifecycle.set_category(conn, policy, args.clip_id, args.category, actor=actor, reason=args.reason,
                                       at=_now())
                print(f"clip {args.clip_id}: category {args.category}")
            elif args.what == "assign":
                lifecycle.assign_device(conn, args.device_id, args.officer, _time("--from", args.start),
                                        _time("--to", args.end) if args.end else None, actor=actor, at=_now())
                print(f"{args.device_id} assigned to {args.officer} from {args.start}")
        if args.what in ("mark", "unmark", "category"):
            _settle(home, db, policy, [args.clip_id])
        return EXIT_OK
    finally:
        db.close()


def schedule_lines(db, policy, *, days: int = 7, include_held: bool = True, now: datetime | None = None) -> list[str]:
    """The retention schedule of held clips, as printed by `bwv retention due` and the demo."""
    now = now or datetime.now(timezone.utc)
    until = geoindex.to_utc_us(now + timedelta(days=days))
    rows = lifecycle.due_between(db.reader(), policy, until, include_held=include_held)
    lines = []
    for c in rows:
        held = []
        if c.active_marks:
            held.append(f"marked ({c.active_marks})")
        if c.open_requests:
            held.append(f"requested ({c.open_requests})")
        lines.append(f"  {c.clip_id}  {c.device_id:<12} {c.category:<10} recorded "
                     f"{geoindex.iso_utc(c.camera_start_us)}  due {geoindex.iso_utc(due_utc_us(policy, c.facts()))}"
                     f"{'  KEPT: ' + ', '.join(held) if held else ''}")
    return lines


def _print_due(db, policy, args) -> int:
    if not 0 <= args.days <= 3660:
        raise UsageError("--days must be 0 to 3660")
    now = datetime.now(timezone.utc)
    until = geoindex.to_utc_us(now + timedelta(days=args.days))
    rows = lifecycle.due_between(db.reader(), policy, until, include_held=args.include_held)
    if args.json:
        print(json.dumps([{"clip_id": c.clip_id, "device_id": c.device_id, "category": c.category,
                           "due": geoindex.iso_utc(due_utc_us(policy, c.facts())),
                           "marks": c.active_marks, "requests": c.open_requests} for c in rows], indent=2))
        return EXIT_OK
    print(f"{len(rows)} clip(s) due for deletion by {geoindex.iso_utc(until)} "
          f"(periods: {', '.join(f'{k} {v} d' for k, v in sorted(policy.categories.items()))})")
    for line in schedule_lines(db, policy, days=args.days, include_held=args.include_held, now=now):
        print(line)
    return EXIT_OK


def blob_store(home: Home):
    """The blob store config.toml names ([server] blobs; BWV_HOME/server/store by default)."""
    from .blobstore import open_blob_store

    return open_blob_store(load_blobs(home.root / "config.toml"), home.server_dir / "store")


def _settle(home: Home, db, policy, clip_ids: list[str]) -> None:
    """After a committed change of marks, categories or requests: a store with locks of its own
    (S3 Object Lock) follows it (blob_locks.py); the local store has none, and nothing is opened."""
    if load_blobs(home.root / "config.toml") == "local":
        return
    from . import blob_locks

    blob_locks.settle(db.reader(), blob_store(home), policy or load_retention(home.root / "config.toml"), clip_ids)


def _sweep(home: Home, db, policy, args) -> int:
    from ..sealed.keys import ServerKeyPair
    from .sweep import Sweeper

    now = datetime.fromisoformat(args.now) if args.now else None
    if now is not None and now.tzinfo is None:
        raise UsageError("--now needs a time zone")
    keys = None if args.dry_run else ServerKeyPair.load(home.server_keys_dir)
    checkpoint = (lambda: sign_audit_head(db, keys, home.server_dir / "audit-checkpoints.jsonl")) if keys else None
    sweeper = Sweeper(db, blob_store(home), policy, batch=max(1, args.batch),
                      checkpoint=checkpoint)

    def progress(r) -> None:
        print(f"  ... {len(r.deleted_clips)} clip(s) deleted", file=sys.stderr, flush=True)
    report = sweeper.run(now=now, dry_run=args.dry_run, progress=None if args.json else progress)
    if args.json:
        print(json.dumps(report.to_dict() | {"clips": report.deleted_clips}, indent=2))
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    print(f"sweep {report.sweep_id}: {verb} {len(report.deleted_clips)} clip(s)"
          + ("" if args.dry_run else f", {report.deleted_segments} segment(s), {report.bytes_freed / 1e6:.1f} MB")
          + (f"; finished {report.resumed} left by an interrupted sweep" if report.resumed else ""))
    for clip_id in report.deleted_clips[:50]:
        print(f"  {clip_id}")
    if len(report.deleted_clips) > 50:
        print(f"  ... and {len(report.deleted_clips) - 50} more")
    for category, count in report.unknown_categories:
        print(f"warning: {count} clip(s) in category {category!r}, which is not configured: kept", file=sys.stderr)
    return EXIT_OK


def _evidential_export(home: Home, db, policy, args, actor: str) -> int:
    from .config import ServerConfig
    from .sar_export import export_evidence
    from .service import EvidenceService

    service = EvidenceService(home, ServerConfig(retention=policy, blobs=load_blobs(home.root / "config.toml")), db=db)
    result = export_evidence(service, args.clip_id, case_ref=args.case, reason=args.reason, actor=actor)
    (clip,) = result["manifest"]["clips"]
    print(f"evidential export {result['manifest']['export']} of clip {args.clip_id} for {args.case} written to "
          f"{result['directory']}")
    print(f"  {clip['output']}  sha256 {clip['output_sha256']}  ({len(clip['sealed_segments'])} sealed segment(s))")
    print(f"  manifest.json  sha256 {result['manifest_sha256']} (signed: manifest.sig)")
    return EXIT_OK


def _show(db, policy, clip_id: str) -> int:
    reader = db.reader()
    c = lifecycle.require_clip(reader, clip_id)
    due = due_utc_us(policy, c.facts()) if c.category in policy.categories else None
    print(f"clip {c.clip_id} ({c.device_id}): {c.state}")
    print(f"  recorded {geoindex.iso_utc(c.camera_start_us)} .. {geoindex.iso_utc(c.last_utc_us)}")
    print(f"  category {c.category}; due {geoindex.iso_utc(due) if due else 'never (category not configured)'}")
    for m in lifecycle.marks(reader, clip_id):
        state = f"lifted {m['lifted_utc']} by {m['lifted_by']}" if m["lifted_utc"] else "ACTIVE"
        print(f"  mark {m['id']}: {m['case_ref']} - {m['reason']} (by {m['marked_by']} {m['marked_utc']}) {state}")
    for sar_id, status in reader.execute("SELECT h.sar_id, r.status FROM sar_holds h JOIN subject_requests r "
                                         "ON r.id = h.sar_id WHERE h.clip_id = ?", (clip_id,)):
        print(f"  held for {sar_id} ({status})")
    for t in lifecycle.tombstones_of(reader, clip_id):
        print(f"  deleted #{t['sequence']} {t['segment_hash'][:16]}... {t['deleted_utc']} by {t['sweep_id']} "
              f"(wrapped key {t['wrapped_key_sha256'][:16]}... destroyed)")
    return EXIT_OK


# =========================================================================== subject access requests
def _configure_request(p: argparse.ArgumentParser) -> None:
    sub = _sub(p, "what", "log,list,show,candidates,hold,export,extend,close")
    lg = _add(sub, "log", "log a request: every clip it matches is held at once")
    lg.add_argument("--requester", required=True)
    lg.add_argument("--contact", default="")
    lg.add_argument("--received", metavar="YYYY-MM-DD", help="the day it arrived (default: today)")
    lg.add_argument("--from", dest="start", required=True, metavar="ISO", help="start of the encounter window")
    lg.add_argument("--to", dest="end", required=True, metavar="ISO")
    lg.add_argument("--place", default="", help="the place in words")
    lg.add_argument("--near", metavar="LAT,LON", help="coordinates, if known")
    lg.add_argument("--radius", type=float, default=200.0, metavar="M", help="metres around --near (200)")
    lg.add_argument("--device")
    lg.add_argument("--officer")
    lg.add_argument("--description", required=True)
    ls = _add(sub, "list", "requests, oldest due first")
    ls.add_argument("--overdue", action="store_true", help="only open requests past their due date")
    ls.add_argument("--status", choices=(sar.OPEN, sar.EXTENDED, sar.CLOSED))
    sh = _add(sub, "show", "one request and what it holds")
    sh.add_argument("request_id")
    ca = _add(sub, "candidates", "search clips for a request")
    ca.add_argument("request_id")
    ca.add_argument("--from", dest="start", required=True, metavar="ISO")
    ca.add_argument("--to", dest="end", required=True, metavar="ISO")
    ca.add_argument("--near", metavar="LAT,LON")
    ca.add_argument("--radius", type=float, default=200.0, metavar="M")
    ca.add_argument("--device")
    ca.add_argument("--officer")
    ho = _add(sub, "hold", "hold more clips for a request")
    ho.add_argument("request_id")
    ho.add_argument("clips", nargs="+", metavar="CLIP_ID")
    ex = _add(sub, "export", "decrypt, blur faces (but the requester's), write MP4s and a signed manifest")
    ex.add_argument("request_id")
    ex.add_argument("clips", nargs="+", metavar="CLIP_ID")
    ex.add_argument("--plan", type=Path, metavar="FILE",
                    help="JSON with keep/manual/follow boxes and silence/bleep audio ranges ({clip: [[start_s, end_s]]}): {\"keep\": {clip: [[start_s, end_s, x, y, w, h]]}, "
                         "\"follow\": {clip: [{\"start_s\": s, \"end_s\": s, \"keyframes\": [[t, x, y, w, h]]}]}, ...}")
    et = _add(sub, "extend", "extend a complex request by 1 or 2 months")
    et.add_argument("request_id")
    et.add_argument("--months", type=int, required=True, choices=(1, 2))
    et.add_argument("--reason", required=True)
    cl = _add(sub, "close", "close a request (its holds end)")
    cl.add_argument("request_id")
    cl.add_argument("--outcome", required=True)


def _near(text: str | None) -> tuple[float | None, float | None]:
    if not text:
        return None, None
    lat, sep, lon = text.partition(",")
    try:
        return float(lat), float(lon)
    except ValueError:
        raise UsageError(f"--near {text!r}: expected LAT,LON, e.g. 51.5007,-0.1246") from None


@command(
    "request",
    "subject access requests: log, search, hold, export with redaction, close",
    """
    A member of the public may ask to see footage of themselves. Logging the
    request holds every clip that matches it (DPA 2018 s.173); staff search
    for more by time, device, officer and place, export the clips with every
    face but the requester's blurred, and close (or extend) the request.
    The ICO's one-month limit is tracked: `list --overdue`.
    """,
    """
    examples:
      bwv request log --requester "A. Person" --from 2026-11-20T14:00:00Z --to 2026-11-20T15:00:00Z \\
          --near 51.5007,-0.1246 --radius 150 --description "stopped outside the station"
      bwv request list --overdue
      bwv request export SAR-2026-00001 0b7e... --plan boxes.json
      bwv request close SAR-2026-00001 --outcome "2 clips disclosed, redacted"

    exit status: 0 done; 1 refused (the reason is printed); 2 bad arguments.
    """,
)(_configure_request)
@_server_errors
def run_request(args: argparse.Namespace, home: Home) -> int:
    db = open_metadata(home)
    actor = local_actor()
    try:
        if args.what == "log":
            lat, lon = _near(args.near)
            received = date.fromisoformat(args.received) if args.received else sar.today_utc()
            details = sar.RequestDetails(args.requester, args.description, received, _time("--from", args.start),
                                         _time("--to", args.end), contact=args.contact, place=args.place, lat=lat,
                                         lon=lon, radius_m=args.radius if lat is not None else None,
                                         device_id=args.device, officer=args.officer)
            with db.transaction() as conn:
                request_id, held = sar.log_request(conn, details, actor=actor, at=_now())
            _settle(home, db, None, held)
            print(f"{request_id} logged; due {sar.due_date(received).isoformat()}; {len(held)} clip(s) held")
            for c in held:
                print(f"  {c}")
        elif args.what == "list":
            rows = sar.requests(db.reader(), status=args.status,
                                overdue_on=sar.today_utc() if args.overdue else None)
            for r in rows:
                print(f"  {r['id']}  {r['status']:<8} received {r['received_date']}  due {r['due_date']}"
                      f"{'  OVERDUE' if r['overdue'] else ''}  {r['requester']}")
            print(f"{len(rows)} request(s)")
        elif args.what == "show":
            print(json.dumps(sar.request(db.reader(), args.request_id), indent=2))
        elif args.what == "candidates":
            lat, lon = _near(args.near)
            sar.request(db.reader(), args.request_id)
            t0, t1 = _time("--from", args.start), _time("--to", args.end)
            with db.transaction() as conn:
                found = sar.find_candidates(conn, t0, t1, device_id=args.device, officer=args.officer, lat=lat,
                                            lon=lon, radius_m=args.radius if lat is not None else None)
                audit.append(conn, actor=actor, action="search", target=f"request:{args.request_id}",
                             detail={"from": args.start, "to": args.end, "found": len(found)})
            for c in found:
                d = c.to_dict()
                print(f"  {d['clip_id']}  {d['device_id']}  {d['from']} .. {d['to']}"
                      + (f"  {d['closest_m']} m" if d["closest_m"] is not None else ""))
            print(f"{len(found)} candidate clip(s)")
        elif args.what == "hold":
            with db.transaction() as conn:
                added = sar.add_holds(conn, args.request_id, args.clips, actor=actor, at=_now())
            _settle(home, db, None, args.clips)
            print(f"{len(added)} clip(s) newly held for {args.request_id}")
        elif args.what == "export":
            return _export(home, db, args, actor)
        elif args.what == "extend":
            with db.transaction() as conn:
                due = sar.extend(conn, args.request_id, args.months, reason=args.reason, actor=actor, at=_now())
            print(f"{args.request_id} extended; due {due.isoformat()}")
        elif args.what == "close":
            with db.transaction() as conn:
                released = sar.close(conn, args.request_id, outcome=args.outcome, actor=actor, at=_now())
            _settle(home, db, None, sar.request(db.reader(), args.request_id)["held_clips"])
            print(f"{args.request_id} closed; {released} hold(s) released")
        return EXIT_OK
    finally:
        db.close()


def _export(home: Home, db, args, actor: str) -> int:
    from .config import ServerConfig
    from .sar_export import ExportPlan, export_request
    from .service import EvidenceService

    doc = {"clips": args.clips}
    if args.plan:
        try:
            plan_doc = json.loads(args.plan.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--plan {args.plan}: {e}") from None
        if not isinstance(plan_doc, dict):
            raise UsageError(f"--plan {args.plan}: expected a JSON object with keep/manual/follow/silence/bleep")
        doc.update({k: plan_doc.get(k) for k in ("keep", "manual", "follow", "silence", "bleep")})
    plan = ExportPlan.from_json(doc)
    service = EvidenceService(home, ServerConfig(retention=load_retention(home.root / "config.toml"),
                                                 blobs=load_blobs(home.root / "config.toml")), db=db)
    result = export_request(service, args.request_id, plan, actor=actor)
    print(f"export written to {result['directory']} (manifest sha256 {result['manifest_sha256']})")
    for c in result["manifest"]["clips"]:
        r = c["redaction"]
        print(f"  {c['output']}: {r.get('faces_detected', '?')} face detection(s), "
              f"{r.get('frames_with_blur', '?')} frame(s) blurred")
    return EXIT_OK


# =========================================================================== audit
def _configure_audit(p: argparse.ArgumentParser) -> None:
    sub = _sub(p, "what", "verify,list,export,checkpoint")
    v = _add(sub, "verify", "check the hash chain and every signed checkpoint",
             "Recompute every record's hash and the chain, check that sequence numbers run without a gap, "
             "and check every signed checkpoint (in the database, in BWV_HOME/server/audit-checkpoints.jsonl, "
             "and in any --checkpoints FILE kept elsewhere) against the log. Removed, altered, reordered or "
             "truncated records are reported.")
    v.add_argument("--checkpoints", type=Path, action="append", default=[], metavar="FILE",
                   help="a checkpoint file kept off this server (repeatable)")
    for name, text in (("list", "print records, oldest first"), ("export", "write records as JSON lines")):
        q = _add(sub, name, text)
        q.add_argument("--actor")
        q.add_argument("--action")
        q.add_argument("--target")
        q.add_argument("--outcome", choices=("ok", "denied", "failed"))
        q.add_argument("--since", metavar="ISO")
        q.add_argument("--until", metavar="ISO")
        q.add_argument("--limit", type=int, default=1000 if name == "list" else 10**9)
        if name == "export":
            q.add_argument("--out", type=Path, required=True, metavar="FILE", help="JSON-lines file to write")
    _add(sub, "checkpoint", "sign the log's head now (also done by the server and after every sweep)")


@command(
    "audit",
    "the audit trail: verify, query, export, checkpoint",
    """
    Every action on footage (upload, view, decrypt, export, mark, hold,
    delete, key use, failed access...) appends a hash-chained record; the
    chain head is signed by the server key as a checkpoint. See
    docs/audit.md for the format and how to check it independently.
    """,
    """
    examples:
      bwv audit verify --checkpoints /mnt/offsite/audit-checkpoints.jsonl
      bwv audit list --target clip:0b7e...
      bwv audit export --since 2026-11-01T00:00:00Z --out november.jsonl

    exit status: 0 ok; 1 verification found problems; 2 bad arguments.
    """,
)(_configure_audit)
@_server_errors
def run_audit(args: argparse.Namespace, home: Home) -> int:
    from ..enrol import receipt_verifiers
    from ..sealed.keys import ServerKeyPair

    db = open_metadata(home)
    try:
        if args.what == "verify":
            external = []
            for path in [home.server_dir / "audit-checkpoints.jsonl", *args.checkpoints]:
                if path.exists():
                    external.extend(audit.read_checkpoint_file(path))
                elif path != home.server_dir / "audit-checkpoints.jsonl":
                    raise UsageError(f"--checkpoints {path}: no such file")
            report = audit.verify(db.reader(), receipt_verifiers(home), external=external)
            print(report.summary())
            print("verified: intact" if report.ok else "NOT INTACT")
            return EXIT_OK if report.ok else EXIT_PROBLEMS
        if args.what == "checkpoint":
            keys = ServerKeyPair.load(home.server_keys_dir)
            cp = sign_audit_head(db, keys, home.server_dir / "audit-checkpoints.jsonl")
            print("nothing new since the last checkpoint" if cp is None else f"checkpoint: {cp.to_json()}")
            return EXIT_OK
        filters = {k: getattr(args, k) for k in ("actor", "action", "target", "outcome") if getattr(args, k)}
        for k in ("since", "until"):
            if getattr(args, k):
                filters[k] = geoindex.iso_utc(_time(f"--{k}", getattr(args, k)))
        if args.what == "list":
            for r in audit.query(db.reader(), limit=args.limit, **filters):
                d = r.to_dict()
                print(f"{d['seq']:>8}  {d['at_utc']}  {d['actor']:<24} {d['action']:<16} {d['target']:<48} "
                      f"{d['outcome']}  {d['detail'] if d.get('detail') not in (None, '', '{}') else ''}")
            return EXIT_OK
        with open(args.out, "w") as out:
            n = audit.export_jsonl(db.reader(), out, **filters)
        with db.transaction() as conn:
            audit.append(conn, actor=local_actor(), action="export", target="audit",
                         detail={"records": n, "filters": filters, "file": str(args.out)})
        print(f"{n} record(s) written to {args.out}")
        return EXIT_OK
    finally:
        db.close()


# =========================================================================== users
def _configure_user(p: argparse.ArgumentParser) -> None:
    sub = _sub(p, "what", "add,list,set,token")
    a = _add(sub, "add", "create a staff account (the password is read from stdin or prompted)")
    a.add_argument("username")
    a.add_argument("--role", required=True, choices=users.ROLES)
    a.add_argument("--name", default="", help="full name")
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _add(sub, "list", "staff accounts and their roles")
    s = _add(sub, "set", "change a role, reset a password, disable or enable")
    s.add_argument("username")
    s.add_argument("--role", choices=users.ROLES)
    s.add_argument("--password-stdin", action="store_true")
    s.add_argument("--disable", action="store_true")
    s.add_argument("--enable", action="store_true")
    t = _add(sub, "token", "issue a bearer token for an account (service use); printed once")
    t.add_argument("username")
    t.add_argument("--hours", type=float, default=users.SESSION_HOURS)


def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the passwords differ")
    return first


@command(
    "user",
    "staff accounts and roles",
    """
    Roles: officer (own footage, read only), supervisor, evidence_officer
    (marks, categories, exports), disclosure_officer (subject access),
    auditor (audit trail), admin (users and devices, no footage). What each
    may call over HTTP: docs/access-control.md.
    """,
    """
    examples:
      bwv user add alice --role disclosure_officer --name "Alice Smith"
      echo "$PASSWORD" | bwv user add bob --role auditor --password-stdin
      bwv user set alice --disable

    exit status: 0 done; 1 refused; 2 bad arguments.
    """,
)(_configure_user)
@_server_errors
def run_user(args: argparse.Namespace, home: Home) -> int:
    db = open_metadata(home)
    actor = local_actor()
    try:
        if args.what == "list":
            for u in users.users(db.reader()):
                print(f"  {u['username']:<20} {u['role']:<20} {'DISABLED ' if u['disabled'] else ''}{u['full_name']}")
            return EXIT_OK
        if args.what == "add":
            password = _password(args)
            with db.transaction() as conn:
                users.add_user(conn, args.username, args.role, password, full_name=args.name, actor=actor)
            print(f"user {args.username} ({args.role}) created")
        elif args.what == "set":
            if args.disable and args.enable:
                raise UsageError("--disable and --enable contradict each other")
            password = _password(args) if args.password_stdin else None
            disabled = True if args.disable else False if args.enable else None
            if args.role is None and password is None and disabled is None:
                raise UsageError("nothing to change: give --role, --password-stdin, --disable or --enable")
            with db.transaction() as conn:
                users.change_user(conn, args.username, actor=actor, role=args.role, password=password,
                                  disabled=disabled)
            print(f"user {args.username} changed")
        elif args.what == "token":
            with db.transaction() as conn:
                if conn.execute("SELECT 1 FROM users WHERE username = ?", (args.username,)).fetchone() is None:
                    raise BadRequest(f"no user {args.username!r}")
                token, expires = users.issue_token(conn, args.username, actor=actor, hours=args.hours,
                                                   purpose="service")
            print(token)
            print(f"expires {expires}", file=sys.stderr)
        return EXIT_OK
    finally:
        db.close()


__all__ = ["local_actor", "schedule_lines"]
