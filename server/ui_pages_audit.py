"""The web application's audit page, for auditors: find records, and see whether the log is intact.

The search is audit.query with the filters `GET /api/v1/audit` takes (staff_api.audit_filters
reads and checks them), and it is itself on the record as that endpoint's is (a `view` of
``audit``).  The chain state is audit.verify over the stored and external checkpoints, as
`GET /api/v1/audit/verify` reports it, with the latest signed checkpoint.  All under
audit.read (auditors only), the API's permission.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Mapping

from aiohttp import web

from ..enrol import receipt_verifiers
from . import audit
from .errors import BadRequest
from .staff_api import audit_filters

PAGE = 200  # records shown at once; "Next" continues after the last one
FILTERS = ("actor", "action", "target", "outcome", "since", "until")


@dataclass(frozen=True)
class ChainState:
    """Whether the hash chain and every checkpoint check out, and how much of the log is signed."""

    ok: bool
    records: int
    head_seq: int
    signed_through: int
    unsigned: int
    problems: list[str]
    problems_total: int
    latest_checkpoint: dict | None  # its signed fields (size, head_hash, at_utc, key_id)


@dataclass(frozen=True)
class AuditPage:
    records: list[audit.AuditRecord]
    filters: dict[str, Any]  # as checked, for the record
    asked: dict[str, str]  # as typed, for the form
    after: int
    next_after: int | None  # where the next page starts, when this one is full


def asked_filters(q: Mapping[str, str]) -> dict[str, str]:
    """What the form was given (empty fields left out), so the page shows it back."""
    return {k: str(q.get(k, "")).strip() for k in FILTERS if str(q.get(k, "")).strip()}


_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?\Z")


def as_utc(text: str) -> str:
    """A browser's date-and-time field has no zone; the form says its times are UTC, so say so."""
    return text + "Z" if _LOCAL_TIME.match(text) else text


def search(db: sqlite3.Connection, q: Mapping[str, str], *, actor: str) -> AuditPage:
    """One page of matching records, oldest first, and the `view` record of the search itself."""
    asked = asked_filters(q)
    filters = audit_filters({k: as_utc(v) if k in ("since", "until") else v for k, v in asked.items()})
    after_text = str(q.get("after", "") or "0")
    if not after_text.isdigit() or len(after_text) > 18:
        raise BadRequest(f"'after' must be a record number, not {after_text[:20]!r}")
    after = int(after_text)
    try:
        rows = audit.query(db, limit=PAGE, after_seq=after, **filters)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    audit.append(db, actor=actor, action="view", target="audit",
                 detail={"filters": filters, "after": after, "returned": len(rows), "via": "web"})
    return AuditPage(records=rows, filters=filters, asked=asked, after=after,
                     next_after=rows[-1].seq if len(rows) == PAGE else None)


def chain_state(db: sqlite3.Connection, service) -> ChainState:
    """audit.verify as the API runs it, with the newest stored checkpoint."""
    external = (audit.read_checkpoint_file(service.checkpoint_file) if service.checkpoint_file.exists() else ())
    report = audit.verify(db, receipt_verifiers(service.home), external=external)
    stored = audit.stored_checkpoints(db)
    return ChainState(ok=report.ok, records=report.records, head_seq=report.head_seq,
                      signed_through=report.signed_through, unsigned=report.unsigned,
                      problems=[f"record {p.seq}: {p.message}" if p.seq is not None else p.message
                                for p in report.problems[:20]],
                      problems_total=report.problems_total,
                      latest_checkpoint=stored[-1].signed_fields() if stored else None)


# --------------------------------------------------------------------------- page
def add_routes(router: web.UrlDispatcher) -> None:
    from .ui import pagekit as kit

    item = kit.NavItem("Audit trail", "/ui/audit", "audit.read")
    if item not in kit.NAV:
        kit.NAV.append(item)
    router.add_get("/audit", audit_page)
    router.add_get("/audit/export", audit_export)


def export_query(asked: Mapping[str, str]) -> str:
    """The download link's query: the filters the page searched with, times marked UTC as the API wants."""
    from urllib.parse import urlencode

    return urlencode({k: as_utc(v) if k in ("since", "until") else v for k, v in asked.items()})


async def audit_export(request: web.Request) -> web.StreamResponse:
    """The matching records as JSON lines, exactly as `GET /api/v1/audit/export` streams them (the same
    handler: page by page up to the head, then one `export` record saying what was taken)."""
    from .staff_api import StaffEndpoint
    from .ui import pagekit as kit

    return await StaffEndpoint(kit.state(request).service).audit_export(request)


async def audit_page(request: web.Request) -> web.Response:
    from .ui import pagekit as kit

    ui, p = kit.state(request), kit.who(request)
    service = ui.service

    def run() -> tuple[AuditPage, ChainState]:
        with service.db.transaction() as db:
            found = search(db, request.query, actor=p.actor)
        return found, chain_state(service.db.reader(), service)
    found, chain = await asyncio.to_thread(run)
    return kit.render(request, "audit_search.html", title="Audit trail", found=found, chain=chain,
                      outcomes=("ok", "denied", "failed"), export_query=export_query(found.asked))


audit_page.ui_permission = audit_export.ui_permission = "audit.read"  # type: ignore[attr-defined]

__all__ = ["AuditPage", "ChainState", "add_routes", "asked_filters", "chain_state", "export_query", "search"]
