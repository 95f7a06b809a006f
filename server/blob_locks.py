"""The blob store's own locks follow the lifecycle: retention dates and legal holds from the database.

The metadata database decides what is held and until when (retention.py,
lifecycle.py, sar.py); a store with Object Lock (s3store.py) also enforces
it beneath the server, so that neither a bug nor stolen credentials can
delete held footage early.  `settle` brings a clip's segments in line with
what the database now says: a COMPLIANCE lock until the clip's due date
(lengthened only: a lock is never shortened), and a legal hold while an
evidence mark or an open subject access request holds the clip.

It is called after the transaction that changed the facts has committed
(ingest, marks, categories, requests: service.py, staff_api.py,
lifecycle_command.py): a hold is in the database first, where the sweep
reads it, and the store's hold follows; lifting clears the store's hold only
once no other mark or request stands.  A process killed between the commit
and `settle` leaves the database right and the store's guarantee behind it;
the next change to the clip settles it again, and the sweep asks the
database, never the store, what is due.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone
from typing import Iterable

from . import lifecycle
from .blobstore import BlobStore
from .errors import ConfigError
from .retention import RetentionPolicy, due_utc_us

log = logging.getLogger("bwv.server.locks")


def enforces_locks(blobs: BlobStore) -> bool:
    """Whether the store keeps locks of its own (S3 Object Lock); for the others settling is skipped."""
    return bool(getattr(blobs, "enforces_locks", False))


def settle(db: sqlite3.Connection, blobs: BlobStore, policy: RetentionPolicy, clip_ids: Iterable[str], *,
           keys: Iterable[str] | None = None) -> int:
    """Set each held segment's retention and legal hold from the database; return how many segments
    were settled.  `keys` narrows it to some segments of a single clip (a segment just ingested)."""
    if not enforces_locks(blobs):
        return 0
    done = 0
    for clip_id in dict.fromkeys(clip_ids):
        record = lifecycle.clip(db, clip_id)
        if record is None or record.state != lifecycle.CLIP_HELD:
            continue
        held = lifecycle.is_held(db, clip_id)
        try:
            until: datetime | None = datetime.fromtimestamp(due_utc_us(policy, record.facts()) / 1e6, timezone.utc)
        except ConfigError:
            until = None  # a category no longer configured: kept, never due; the hold below still applies
            log.warning("clip %s is filed under a category not configured: its lock is not lengthened", clip_id)
        fresh = keys is not None  # just stored: no hold to clear yet
        for key in (list(keys) if fresh else lifecycle.segment_hashes(db, clip_id)):
            if until is not None:
                blobs.set_retention(key, until)
            if held or not fresh:
                blobs.set_legal_hold(key, held)
            done += 1
    return done


__all__ = ["enforces_locks", "settle"]
