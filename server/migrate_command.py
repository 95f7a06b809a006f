"""`bwv server migrate`: move an embedded installation onto the fleet engines, and show that it arrived.

The work is server/migrator.py's; this module turns the command line into a
`Source`, a destination database and a blob store, prints the progress on
stderr and the reconciliation on stdout, and says in words what to do when
something stops it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import EXIT_OK, EXIT_PROBLEMS, UsageError, common_options
from ..home import Home
from .errors import ConfigError, ServerError

DESCRIPTION = """\
Copy an embedded installation (SQLite and the local blob store under
BWV_HOME/server) to the fleet engines: PostgreSQL for the records and an S3
bucket with Object Lock for the footage, as `bwv server --db ... --blobs ...`
nodes then use them. Nothing is deleted or written at the source.

What it does, in order:
  1. every held segment's blob is copied to the bucket, read back and its
     SHA-256 compared with the source file's, then locked (COMPLIANCE, until
     its clip's retention date) and legally held where a mark or an open
     request holds its clip, as ingest would;
  2. every record (segments and their receipts, tombstones, clips, marks,
     requests and holds, users, docks, the track index, the audit trail and
     its checkpoints) is copied table by table;
  3. a reconciliation is printed: per table, rows and a digest of their
     contents on both sides; the blobs' digests at the source against those
     read back from the bucket; the audit chain's head. On the destination
     every receipt is verified with the server's public key and the whole
     audit trail with its checkpoints;
  4. when everything matches, one `migrate` record is appended to the
     destination's audit trail (after the source's own records, unchanged).

Stop every `bwv server` on the source first: it must not change while it is
copied (a database with commits still in its write-ahead log is refused).
The destination database must be empty (createdb) and the bucket created
with Object Lock and no default retention.

It can be killed at any moment and run again with the same arguments: it
goes on from the last blob or page recorded on the destination, never
copies a row or a blob twice, and once finished only reconciles again.
Uploads still in progress at the source are not moved: their docks start
them again, and no camera is freed without a receipt.

With --to-home DIR it also prepares a node's BWV_HOME: it copies the server's
keys (server/keys, and any keys.old-* a rotation set aside), the enrolled
cameras (server/devices), the exports already made (server/exports, which
that node's sweep removes when their clips fall due) and the signed audit
checkpoints (server/audit-checkpoints.jsonl), and writes config.toml naming
the two engines and the source's retention periods. Without it, copy those
yourself (docs/deployment.md, "Migrating an embedded installation")."""

EPILOG = """\
examples:
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... bwv server migrate \\
      --from sqlite:///srv/bwv/server/evidence.db \\
      --to postgresql://bwv@db.force.example:5432/evidence \\
      --blobs 's3://evidence?endpoint=https://rgw.force.example:7480' \\
      --to-home /srv/bwv-node1
  bwv --home /srv/bwv server migrate --to postgresql://bwv@db/evidence --blobs 's3://evidence?endpoint=...'
      (the source is this home's own evidence.db)

exit status: 0 the reconciliation matches; 1 it does not, or the run stopped (run it again);
2 bad arguments, a source or destination that cannot be migrated (the message says why)."""


def add_parser(sub, formatter_class) -> None:
    """The `migrate` subcommand of `bwv server`."""
    m = sub.add_parser("migrate", help="copy this embedded installation to PostgreSQL and S3, and reconcile",
                       formatter_class=formatter_class, parents=[common_options()],
                       description=DESCRIPTION, epilog=EPILOG)
    m.add_argument("--from", dest="migrate_from", metavar="URL",
                   help="the embedded database, sqlite:///PATH/server/evidence.db (default: this home's); its "
                        "blobs are the store/ folder beside it, its keys and cameras keys/ and devices/")
    m.add_argument("--to", dest="migrate_to", metavar="URL", required=True,
                   help="the destination, postgresql://USER@HOST:PORT/DBNAME: empty, or the one a stopped run "
                        "of this migration left; the password from ~/.pgpass or PGPASSFILE")
    m.add_argument("--blobs", dest="migrate_blobs", metavar="STORE", required=True,
                   help="the destination bucket, s3://BUCKET[/PREFIX]?endpoint=URL (Object Lock enabled, no "
                        "default retention); credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    m.add_argument("--from-store", type=Path, metavar="DIR",
                   help="the source's blob store, if not the store/ folder beside its database")
    m.add_argument("--to-home", type=Path, metavar="DIR",
                   help="a node's BWV_HOME to give the server keys, the enrolled cameras, the audit "
                        "checkpoints and a config.toml naming the engines (existing files are never replaced)")
    m.add_argument("--batch", type=int, default=500, metavar="N",
                   help="rows per destination transaction, and so per progress line (default: %(default)s)")
    m.add_argument("--jobs", type=int, default=4, metavar="N",
                   help="blobs in flight at once: each waits on a few object-store round trips "
                        "(default: %(default)s)")


def run(args: argparse.Namespace, home: Home) -> int:
    from . import migration
    from .config import check_blobs, load_blobs, load_retention
    from .lifecycle_command import local_actor
    from .migrator import Migrator, Source, install_files
    from .store import POSTGRESQL, SQLITE, parse_database_url, sqlite_url
    from .store.migration import SourceUnreadable

    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    if not 1 <= args.jobs <= 64:
        raise UsageError("--jobs must be from 1 to 64")
    try:
        source_url = (parse_database_url(args.migrate_from) if args.migrate_from
                      else sqlite_url(home.server_dir / "evidence.db"))
        if source_url.engine != SQLITE:
            raise UsageError(f"--from {source_url.shown}: the source is an embedded installation, "
                             "sqlite:///PATH/server/evidence.db")
        dest_url = parse_database_url(args.migrate_to)
        if dest_url.engine != POSTGRESQL:
            raise UsageError(f"--to {dest_url.shown}: the destination is the fleet's database, "
                             "postgresql://USER@HOST:PORT/DBNAME")
        if not args.migrate_blobs.startswith("s3://"):
            raise UsageError(f"--blobs {args.migrate_blobs!r}: the destination is an S3 bucket with Object Lock, "
                             "s3://BUCKET?endpoint=URL")
        check_blobs(args.migrate_blobs)
        server_dir = source_url.path.parent
        config = server_dir.parent / "config.toml"
        if load_blobs(config) != "local" and args.from_store is None:
            raise UsageError(f"{config} keeps this installation's blobs in {load_blobs(config)}, not on local disk: "
                             "it is not an embedded installation (give --from-store DIR if its blobs are there)")
        source = Source(source_url.path, args.from_store or server_dir / "store", server_dir, load_retention(config))
        from .s3store import S3BlobStore

        blobs = S3BlobStore.from_url(args.migrate_blobs)
        migrator = Migrator(source, dest_url, blobs, batch=args.batch, jobs=args.jobs, actor=local_actor(),
                            say=lambda line: print(line, file=sys.stderr, flush=True))
    except (ConfigError, SourceUnreadable, migration.MigrationError) as e:
        raise UsageError(str(e)) from None
    except ServerError as e:  # the bucket could not be reached
        raise UsageError(e.reason) from None
    try:
        try:
            result = migrator.run()
        except migration.DestinationRefused as e:
            raise UsageError(str(e)) from None
        except migration.MigrationError as e:
            print(f"bwv server migrate: {e}", file=sys.stderr)
            return EXIT_PROBLEMS
        except ServerError as e:
            print(f"bwv server migrate: {e.reason}; what was copied and checked is recorded on the destination: "
                  "run the same command again to go on", file=sys.stderr)
            return EXIT_PROBLEMS
    finally:
        migrator.close()
    for line in result.table():
        print(line)
    if not result.matches:
        print("NOT MIGRATED: the two sides differ (above); nothing was deleted anywhere. Find why, then run "
              "the same command again")
        return EXIT_PROBLEMS
    if args.to_home is not None:
        try:
            for line in install_files(source, args.to_home, args.migrate_to, args.migrate_blobs):
                print(line)
        except migration.MigrationError as e:
            print(f"bwv server migrate: {e}", file=sys.stderr)
            return EXIT_PROBLEMS
    print(f"migrated: {source.database} -> {dest_url.shown} and {blobs.location}; the source is unchanged")
    return EXIT_OK


__all__ = ["add_parser", "run"]
