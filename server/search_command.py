"""`bwv search` and `bwv track`: where footage was recorded, asked of the server's database directly.

Server-side tools, like `bwv server status`: they read BWV_HOME/server/evidence.db
and need no running server (nor a token).  Where someone was is personal data,
so each search and each track written out leaves an audit record, as over
HTTP, naming the local account that ran it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import EXIT_OK, EXIT_PROBLEMS, UsageError, command
from ..home import Home
from ..sealed.durable import atomic_write
from . import audit
from .geoindex import MAX_RADIUS_M, QueryInvalid, SearchQuery, iso_utc


def _configure_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("--near", required=True, metavar="LAT,LON", help="centre, WGS 84 degrees (north, east positive)")
    p.add_argument("--radius", required=True, metavar="M", help=f"metres, at most {MAX_RADIUS_M:.0f}")
    p.add_argument("--from", required=True, dest="start", metavar="ISO", help="window start, e.g. 2025-11-25T14:00:00Z")
    p.add_argument("--to", required=True, dest="end", metavar="ISO", help="window end (inclusive; at most 31 days on)")


@command(
    "search",
    "find clips recorded near a place at a time (server database)",
    """
    List the clips with a GNSS fix within --radius metres of --near between
    --from and --to (all inclusive), from the track index the evidence
    server builds at ingest. Reads BWV_HOME/server/evidence.db directly.
    """,
    """
    examples:
      bwv search --near 51.5007,-0.1246 --radius 200 --from 2025-11-25T14:00:00Z --to 2025-11-25T16:00:00Z

    exit status: 0 clips found; 1 none found; 2 bad arguments.
    """,
)(_configure_search)
def run_search(args: argparse.Namespace, home: Home) -> int:
    lat, sep, lon = args.near.partition(",")
    if not sep:
        raise UsageError(f"--near {args.near!r}: expected LAT,LON, e.g. 51.5007,-0.1246")
    try:
        query = SearchQuery.parse(lat, lon, args.radius, args.start, args.end)
    except QueryInvalid as e:
        raise UsageError(str(e).replace("radius_m", "--radius").replace("'from'", "--from").replace("'to'", "--to"))
    db = _open_db(home)
    try:
        matches = db.search_tracks(query.lat, query.lon, query.radius_m, query.from_utc_us, query.to_utc_us)
        with db.transaction() as conn:
            audit.append(conn, actor=_actor(), action="search", target="clips", detail={
                "lat": query.lat, "lon": query.lon, "radius_m": query.radius_m, "from": iso_utc(query.from_utc_us),
                "to": iso_utc(query.to_utc_us), "found": len(matches), "via": "bwv search"})
    finally:
        db.close()
    print(f"{len(matches)} clip(s) within {query.radius_m:g} m of {query.lat:.6f},{query.lon:.6f} "
          f"from {iso_utc(query.from_utc_us)} to {iso_utc(query.to_utc_us)}")
    for m in matches:
        print(f"  {m.clip_id}  {m.device_id}  {iso_utc(m.first_utc_us)} .. {iso_utc(m.last_utc_us)}  "
              f"closest {m.closest_m:.1f} m  {m.fixes} fix(es) in {len(m.segment_hashes)} segment(s)")
        for h in m.segment_hashes:
            print(f"    segment {h}")
    return EXIT_OK if matches else EXIT_PROBLEMS


def _configure_track(p: argparse.ArgumentParser) -> None:
    p.add_argument("clip_id", metavar="CLIP_ID", help="the clip's UUID (as `bwv search` prints it)")
    p.add_argument("--gpx", required=True, type=Path, metavar="FILE", help="write the track here as GPX 1.1")


@command(
    "track",
    "export a clip's GNSS track as GPX (server database)",
    """
    Write the GNSS track of a held clip as GPX 1.1: one track, one track
    segment per held segment of the clip. Reads BWV_HOME/server/evidence.db.
    """,
    """
    examples:
      bwv track 0b7e...-...  --gpx clip.gpx

    exit status: 0 written; 1 no segment of that clip is held; 2 bad arguments.
    """,
)(_configure_track)
def run_track(args: argparse.Namespace, home: Home) -> int:
    from .app import CLIP_ID_RE
    from .gpx import clip_gpx

    clip_id = args.clip_id.lower()
    if not CLIP_ID_RE.match(clip_id):
        raise UsageError(f"clip id {args.clip_id!r} is not a UUID (8-4-4-4-12 hexadecimal)")
    db = _open_db(home)
    try:
        segments = db.clip_track(clip_id)
        if not segments:
            print(f"no segment of clip {clip_id} is held under {home.server_dir}")
            return EXIT_PROBLEMS
        out: Path = args.gpx
        fixes = sum(len(s.fixes) for s in segments)
        # Movements are as personal as the picture: the file is the operator's alone, written whole or not at all.
        atomic_write(out, clip_gpx(clip_id, segments), mode=0o600)
        with db.transaction() as conn:
            audit.append(conn, actor=_actor(), action="export", target=f"clip:{clip_id}", detail={
                "what": "track (GPX)", "fixes": fixes, "to": str(out.resolve())[:500], "via": "bwv track"})
    finally:
        db.close()
    print(f"clip {clip_id}: {fixes} fix(es) in {len(segments)} segment(s) written to {out}")
    return EXIT_OK


def _actor() -> str:
    from .lifecycle_command import local_actor

    return local_actor()


def _open_db(home: Home):
    from .command import _open_db as open_db

    return open_db(home)


__all__ = ["run_search", "run_track"]
