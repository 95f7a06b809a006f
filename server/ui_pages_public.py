"""The public request page: a member of the public asks for footage of themselves, with no account.

The page asks what a disclosure officer needs to find the footage and to reach the person: their
name, how to contact them, the day and the hours when they met the police, the place in words and,
if they can, on a map, and what happened.  It answers with a reference number and what happens
next.  It gives access to nothing: no footage, no list, no status of other requests.

The request it creates is *pending* (sar.log_public_request): it holds at once, as DPA 2018 s.173
requires, but only narrowly, because anyone can send the form; a disclosure officer verifies who
is asking before it holds like a request staff logged.  What a pending request may hold and how many
a client may send are the server's ``public_*`` settings (config.py).

Who "a client" is, for the rate limit: the connection's address, or, when the connection comes
from a load balancer listed in ``trusted_proxies``, the address it names in X-Forwarded-For.  The
address is never stored: only a keyed hash of it (HMAC with the web application's secret), enough
to count and useless to anyone reading the database.

Every submission is on the audit trail: an accepted one as ``request_logged`` by ``public:<tag>``,
a refused one as a denial saying why (service.record_denial, throttled against floods).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from aiohttp import web

from . import geoindex, sar
from .errors import BadRequest, ServerError
from .staff_api import now_iso

# The places people are asked to choose between for "how far around the point": a few streets to a
# neighbourhood.  The server's public_max_radius_m caps what is offered.
RADIUS_CHOICES_M = (50, 100, 200, 300, 500, 1000)
MAX_FIELD = {"requester": 200, "contact": 500, "place": 500, "description": 4000}
OLDEST_DAYS = 366  # footage is kept 31 days unless it is evidence; a request about last year is still taken


@dataclass(frozen=True)
class PublicForm:
    """What the member of the public typed, as text, so that a refused form is shown again as they left it."""

    requester: str = ""
    contact: str = ""
    day: str = ""
    time_from: str = ""
    time_to: str = ""
    place: str = ""
    lat: str = ""
    lon: str = ""
    radius_m: str = ""
    description: str = ""

    @classmethod
    def from_post(cls, form) -> "PublicForm":
        def field(name: str, limit: int = 100) -> str:
            return str(form.get(name, ""))[: limit + 1]
        return cls(requester=field("requester", 200), contact=field("contact", 500), day=field("day"),
                   time_from=field("time_from"), time_to=field("time_to"), place=field("place", 500),
                   lat=field("lat"), lon=field("lon"), radius_m=field("radius_m"),
                   description=field("description", 4000))

    def details(self, zone: ZoneInfo, today: date, limits: sar.PublicLimits) -> sar.RequestDetails:
        """The request this form describes, or BadRequest saying, in plain words, what to correct."""
        for name, label in (("requester", "your name"), ("contact", "how we can contact you"),
                            ("place", "where it happened"), ("description", "what happened")):
            value = getattr(self, name).strip()
            if not value:
                raise BadRequest(f"Please give {label}.")
            if len(value) > MAX_FIELD[name]:
                raise BadRequest(f"Please shorten {label} to at most {MAX_FIELD[name]} characters.")
        try:
            day = date.fromisoformat(self.day.strip())
        except ValueError:
            raise BadRequest("Please give the date you met the police, for example 2026-12-01.") from None
        if day > today:
            raise BadRequest("The date you gave is in the future. Please give the date you met the police.")
        if day < today - timedelta(days=OLDEST_DAYS):
            raise BadRequest(f"The date you gave is more than {OLDEST_DAYS} days ago. Please contact the force "
                             "by phone or post about footage that old.")
        try:
            start, end = time.fromisoformat(self.time_from.strip()), time.fromisoformat(self.time_to.strip())
        except ValueError:
            raise BadRequest("Please give the times as hours and minutes, for example 14:30.") from None
        t0 = datetime.combine(day, start, zone)
        t1 = datetime.combine(day if end > start else day + timedelta(days=1), end, zone)  # past midnight
        lat = lon = radius = None
        if self.lat.strip() or self.lon.strip():
            try:
                lat, lon = float(self.lat), float(self.lon)
                radius = float(self.radius_m or limits.max_radius_m)
            except ValueError:
                raise BadRequest("The point on the map could not be read. Please click the map again.") from None
        details = sar.RequestDetails(
            requester=self.requester.strip(), description=self.description.strip(), received=today,
            window_from_us=geoindex.to_utc_us(t0), window_to_us=geoindex.to_utc_us(t1),
            contact=self.contact.strip(), place=self.place.strip(), lat=lat, lon=lon, radius_m=radius)
        details.check()
        limits.check(details)
        return details


def client_address(request: web.Request, trusted: tuple) -> str:
    """The address to count a submission against: the peer, or the client a trusted proxy names."""
    peer = request.remote or "unknown"
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if not any(addr in net for net in trusted):
        return peer
    # The right-most address that is not one of our proxies is the one no client could have forged.
    for hop in reversed([h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]):
        try:
            hop_addr = ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not any(hop_addr in net for net in trusted):
            return str(hop_addr)
    return peer


def client_tag(secret: bytes, address: str) -> str:
    """A keyed hash of the client's address: counts submissions without storing the address."""
    return hmac.new(secret, b"public-request\0" + address.encode(), hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------- pages
def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/public/request", request_form)
    router.add_post("/public/request", submit)


def _kit():
    from .ui import pagekit

    return pagekit


def _zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(_kit().state(request).service.config.local_time_zone)


def _form_page(request: web.Request, form: PublicForm, *, error: str | None = None, status: int = 200) -> web.Response:
    kit = _kit()
    ui = kit.state(request)
    config = ui.service.config
    if not config.public_requests:
        return _closed(request)
    limits = config.public_limits
    radii = [r for r in RADIUS_CHOICES_M if r <= limits.max_radius_m] or [int(limits.max_radius_m)]
    return kit.render(request, "public_request.html", status=status, title="Ask for footage of yourself",
                      form=form, error=error, radii=radii, limits=limits, zone=config.local_time_zone,
                      today=datetime.now(_zone(request)).date().isoformat(),
                      tiles=config.map_tiles or "", attribution=config.map_attribution)


def _closed(request: web.Request) -> web.Response:
    return _kit().render(request, "public_closed.html", status=404, title="Ask for footage of yourself")


async def request_form(request: web.Request) -> web.Response:
    return _form_page(request, PublicForm())


async def submit(request: web.Request) -> web.Response:
    kit = _kit()
    ui = kit.state(request)
    config = ui.service.config
    if not config.public_requests:
        return _closed(request)
    form = PublicForm.from_post(request["form"])
    from .metrics import parse_networks

    tag = client_tag(ui.secret, client_address(request, parse_networks(config.trusted_proxies, "trusted_proxies")))
    actor = f"{sar.PUBLIC_ACTOR}:{tag[:16]}"
    limits = config.public_limits

    def run() -> tuple[str, list[str]]:
        zone = _zone(request)
        details = form.details(zone, datetime.now(zone).date(), limits)
        with ui.service.db.transaction() as db:
            return sar.log_public_request(db, details, client_tag=tag, limits=limits, at=now_iso())
    try:
        request_id, held = await asyncio.to_thread(run)
    except ServerError as e:
        await asyncio.to_thread(ui.service.record_denial, actor, "POST", request.path,
                                f"public request refused: {e.reason}", e.status)
        response = _form_page(request, form, error=e.reason, status=e.status)
        response.headers.update(e.headers)
        return response
    await asyncio.to_thread(ui.service.settle_locks, held)
    due = sar.due_date(datetime.now(timezone.utc).date())
    return kit.render(request, "public_received.html", title="Your request has been received",
                      reference=request_id, due=due.isoformat(), contact=form.contact.strip())


request_form.ui_signed_in = submit.ui_signed_in = False  # type: ignore[attr-defined]

__all__ = ["PublicForm", "RADIUS_CHOICES_M", "add_routes", "client_address", "client_tag"]
