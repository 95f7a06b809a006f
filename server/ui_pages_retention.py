"""The web application's retention pages: what is due for deletion soon, and marking a clip from there.

The due list is the one `GET /api/v1/retention/due` answers (lifecycle.due_between under the
server's policy), read under the same permission (retention.due: supervisors and evidence
officers) and put on the record the same way (a `view` of ``retention:due``).  Marking from the
list is lifecycle.mark_evidence, as `POST /api/v1/clips/{id}/marks` does, under clip.mark, and
the blob store's locks follow once it has committed (service.settle_locks).  So the page can
refuse nothing the API allows and allow nothing it refuses.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from aiohttp import web

from . import api_models as models
from . import audit, geoindex, lifecycle
from .api_models import CLIP_ID_RE
from .errors import BadRequest
from .retention import RetentionPolicy, due_utc_us
from .staff_api import now_iso

DEFAULT_DAYS = 7
MAX_DAYS = 366
MAX_LISTED = 10_000  # as the API lists
PAGE = 100  # clips on one page of the list: a week at force scale is thousands, and a page must stay quick


@dataclass(frozen=True)
class DueClip:
    """One row of the due list, in the words the page shows."""

    clip_id: str
    device_id: str
    category: str
    recorded: str  # ISO 8601 UTC
    due: str  # ISO 8601 UTC
    days_left: int  # whole days from now until due (0: today)
    held_by_marks: int
    held_by_requests: int

    @property
    def held(self) -> bool:
        return bool(self.held_by_marks or self.held_by_requests)


@dataclass(frozen=True)
class DueList:
    now: str
    until: str
    days: int
    clips: list[DueClip]
    start: int = 0  # how many earlier-due clips come before this page
    more: bool = False  # whether more clips are due after this page


def due_days(text: str | None) -> int:
    """The look-ahead the page was asked for: a whole number of days, 0..366 (default 7)."""
    if text is None or text.strip() == "":
        return DEFAULT_DAYS
    if not text.strip().isdigit() or int(text) > MAX_DAYS:
        raise BadRequest(f"the number of days must be a whole number from 0 to {MAX_DAYS}, not {text[:20]!r}")
    return int(text)


def due_list(db: sqlite3.Connection, policy: RetentionPolicy, *, days: int, actor: str,
             now: datetime | None = None, start: int = 0) -> DueList:
    """One page of the clips due for deletion within `days`, earliest first (from the `start`-th), and
    the `view` record saying who looked (inside the caller's transaction, as the API writes it)."""
    now = now or datetime.now(timezone.utc)
    now_us = geoindex.to_utc_us(now)
    until = geoindex.to_utc_us(now + timedelta(days=days))
    start = max(0, min(start, MAX_LISTED - PAGE))
    found = lifecycle.due_between(db, policy, until, include_held=False, limit=start + PAGE + 1)
    rows, more = found[start:start + PAGE], len(found) > start + PAGE
    audit.append(db, actor=actor, action="view", target="retention:due", detail={
        "days": days, "listed": len(rows), "from": start, "via": "web"})
    clips = []
    for c in rows:
        due = due_utc_us(policy, c.facts())
        clips.append(DueClip(clip_id=c.clip_id, device_id=c.device_id, category=c.category,
                             recorded=geoindex.iso_utc(c.camera_start_us), due=geoindex.iso_utc(due),
                             days_left=max(0, (due - now_us) // 86_400_000_000),
                             held_by_marks=c.active_marks, held_by_requests=c.open_requests))
    return DueList(now=geoindex.iso_utc(now_us), until=geoindex.iso_utc(until), days=days, clips=clips, start=start,
                   more=more)


RECENT_SWEEPS = 10


@dataclass(frozen=True)
class SweepSummary:
    """One finished sweep as the page shows it: when, what it found, and the clips it deleted."""

    sweep_id: str
    finished: str
    actor: str
    report: dict
    deleted: list[dict]


def recent_sweeps(db: sqlite3.Connection, *, limit: int = RECENT_SWEEPS) -> list[SweepSummary]:
    """The latest finished sweeps (newest first) from the audit trail, each with what its tombstones say it
    deleted.  A dry run deleted nothing and is left out."""
    import json

    finished = [r for r in audit.query(db, action="sweep_finished", limit=10_000)]
    out = []
    for r in reversed(finished):
        report = json.loads(r.detail) if r.detail else {}
        if report.get("dry_run"):
            continue
        sweep_id = r.target.removeprefix("sweep:")
        out.append(SweepSummary(sweep_id=sweep_id, finished=r.at_utc, actor=r.actor, report=report,
                                deleted=lifecycle.deleted_by_sweep(db, sweep_id)))
        if len(out) == limit:
            break
    return out


def mark_clip(db: sqlite3.Connection, clip_id: str, *, case_ref: str, reason: str, actor: str) -> int:
    """Mark a clip as evidence from a web form: the form is read as the API's MarkBody (the same limits,
    the same messages), then lifecycle.mark_evidence writes the mark and its audit record."""
    if not CLIP_ID_RE.match(clip_id):
        raise BadRequest(f"clip id {clip_id[:80]!r} is not a clip id")
    given = models.parse(models.MarkBody, {"case_ref": case_ref, "reason": reason})
    return lifecycle.mark_evidence(db, clip_id, case_ref=given.case_ref, reason=given.reason, actor=actor,
                                   at=now_iso())


# --------------------------------------------------------------------------- pages
def add_routes(router: web.UrlDispatcher) -> None:
    """The retention pages on the /ui/ sub-application, and their place in its menu."""
    from .ui import pagekit as kit

    item = kit.NavItem("Due for deletion", "/ui/retention/due", "retention.due")
    if item not in kit.NAV:
        kit.NAV.append(item)
    router.add_get("/retention/due", due_page)
    router.add_post("/retention/due/mark", mark_from_due)


def _kit():
    from .ui import pagekit

    return pagekit


async def due_page(request: web.Request) -> web.Response:
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    days = due_days(request.query.get("days"))
    start_text = request.query.get("start", "0").strip() or "0"
    if not start_text.isdigit() or len(start_text) > 6:
        raise BadRequest(f"'start' must be a number of clips, not {start_text[:20]!r}")

    def run() -> tuple[DueList, list[SweepSummary]]:
        with ui.service.db.transaction() as db:
            return (due_list(db, ui.service.config.retention, days=days, actor=p.actor, start=int(start_text)),
                    recent_sweeps(db))
    listing, sweeps = await asyncio.to_thread(run)
    return kit.render(request, "retention_due.html", title="Due for deletion", listing=listing, sweeps=sweeps,
                      may_mark=p.may("clip.mark"), marked=request.query.get("marked", ""),
                      marked_case=request.query.get("case", ""))


async def mark_from_due(request: web.Request) -> web.StreamResponse:
    kit = _kit()
    ui, p = kit.state(request), kit.who(request)
    form = request["form"]
    clip_id = str(form.get("clip_id", ""))
    case_ref, reason = str(form.get("case_ref", "")), str(form.get("reason", ""))

    def run() -> int:
        with ui.service.db.transaction() as db:
            return mark_clip(db, clip_id, case_ref=case_ref, reason=reason, actor=p.actor)
    await asyncio.to_thread(run)
    await asyncio.to_thread(ui.service.settle_locks, [clip_id])
    raise web.HTTPSeeOther(f"/ui/retention/due?marked={clip_id}&case={web_quote(case_ref.strip())}")


def web_quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:200], safe="")


due_page.ui_permission = "retention.due"  # type: ignore[attr-defined]
mark_from_due.ui_permission = "clip.mark"  # type: ignore[attr-defined]

__all__ = ["DueClip", "DueList", "SweepSummary", "add_routes", "due_days", "due_list", "mark_clip", "recent_sweeps"]
