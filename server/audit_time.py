"""One conversion the lifecycle modules share: their ISO-8601 text times to the datetimes audit.py takes."""

from __future__ import annotations

from datetime import datetime, timezone


def when(at: str | datetime | None) -> datetime | None:
    """An audit record's time from the ISO-8601 text a lifecycle table stores (None: now)."""
    if at is None or isinstance(at, datetime):
        return at
    t = datetime.fromisoformat(at)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


__all__ = ["segments_detail", "when"]


def segments_detail(hashes: list[str], limit: int = 40) -> dict:
    """The segments an action touched, for an audit record: the list itself when short; for a long
    clip (an 8-hour clip has ~2,900) its count, first, last and the SHA-256 of the newline-joined
    list, which the tombstones or the manifest let anyone recompute."""
    import hashlib

    if len(hashes) <= limit:
        return {"segments": list(hashes)}
    return {"segment_count": len(hashes), "first_segment": hashes[0], "last_segment": hashes[-1],
            "segments_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest()}
