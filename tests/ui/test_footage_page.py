"""Finding footage in Debian's chromium, on a real server with real footage (footage_kit), by keyboard.

* an evidence officer finds the clip recorded near a place (a point and a radius, as the API's
  search takes them) within a time window, and not the clip from the same camera that has no position
  there; its route is drawn on the search map; the result opens the clip page;
* time window, camera and officer narrow the search as GET /api/v1/clips does; every search is a
  ``search`` record naming who searched, for what, and how many clips were found;
* an officer finds only their own footage, whatever the address says, and cannot search by place;
  the admin and the auditor have no footage search;
* every control is reached by the keyboard in the order it is read; axe-core finds no WCAG A/AA
  violation; nothing is asked of another origin.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from kit import wait_for
from openbwv.server import audit
from openbwv.server.service import open_metadata

from ui import footage_kit as fk

LONDON = ZoneInfo("Europe/London")


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    yield from fk.make_world(tmp_path_factory.mktemp("ui-footage"))


@pytest.fixture
def tab(browser, footage):
    context = browser.new_context()
    page = context.new_page()
    page.watch = fk.OffOrigin(footage.origin)
    page.on("request", page.watch)
    try:
        yield page
    finally:
        context.close()


def records(world, **filters) -> list[audit.AuditRecord]:
    db = open_metadata(world.home)
    try:
        return audit.query(db.reader(), limit=10_000, **filters)
    finally:
        db.close()


def local(t) -> str:
    return t.astimezone(LONDON).strftime("%Y-%m-%dT%H:%M")


def window(world) -> dict[str, str]:
    """From a day before the two cam-a clips to a day after them (the cam-b clip is a month old)."""
    return {"from": local(world.recorded - timedelta(days=1)), "to": local(world.recorded + timedelta(days=1))}


def focused(tab) -> str:
    return tab.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")


def found(tab) -> list[str]:
    return [a.inner_text().removeprefix("Open clip ") for a in tab.get_by_role("link", name="Open clip").all()]


def search(tab, world, **fields: str) -> None:
    tab.goto(world.url + "/ui/footage?" + urlencode(fields))


def test_an_evidence_officer_finds_a_clip_by_place_using_only_the_keyboard(footage, tab):
    fk.sign_in(tab, footage, "evan")
    tab.get_by_role("navigation", name="Main menu").get_by_role("link", name="Footage").focus()
    tab.keyboard.press("Enter")
    tab.wait_for_url("**/ui/footage")
    assert tab.get_by_role("heading", level=1).inner_text() == "Find footage"
    assert fk.axe_violations(tab) == []
    when = window(footage)
    tab.get_by_label("From").focus()
    tab.get_by_label("From").fill(when["from"])
    # The controls follow one another as they are read: window, camera, officer, map, point, radius.
    # (A date-and-time field takes a Tab per part of it: day, month, year, hours, minutes.)
    order = ["from"]
    for _ in range(40):
        tab.keyboard.press("Tab")
        if focused(tab) != order[-1]:
            order.append(focused(tab))
        if order[-1] == "radius_m":
            break
    assert order[:4] == ["from", "to", "device", "officer"], order
    assert order.index("footage-map") < order.index("lat") < order.index("lon") < order.index("radius_m"), order
    tab.get_by_label("Until").fill(when["to"])
    lat, lon = fk.TRACK_START[0] + 0.0005, fk.TRACK_START[1] + 0.0005  # on the walk, half way along
    tab.get_by_label("Latitude").focus()
    tab.keyboard.type(f"{lat:.6f}")
    tab.keyboard.press("Tab")
    tab.keyboard.type(f"{lon:.6f}")
    tab.keyboard.press("Tab")
    tab.keyboard.press("Control+A")
    tab.keyboard.type("50")
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert found(tab) == [footage.tracked[:8]]  # the clip with no fix there is not found by place
    wait_for(lambda: tab.locator("#footage-map").get_attribute("data-tracks-drawn") == "1", timeout=30)
    assert tab.locator("path.bwv-result-track").count() == 1  # its route, drawn where the point was chosen
    assert "1 route is drawn on the map" in tab.locator("#tracks-said").inner_text()
    table = tab.get_by_role("table").inner_text()
    assert "cam-a" in table and "1 clip found" in table and " m" in table
    assert fk.axe_violations(tab) == []
    fk.screenshot(tab, "footage-by-place")
    (logged,) = [r for r in records(footage, action="search", target="clips", actor="user:evan")
                 if r.details.get("via") == "web"]
    assert logged.details["found"] == 1 and logged.details["radius_m"] == 50
    assert logged.details["lat"] == pytest.approx(lat)

    tab.get_by_role("link", name=f"Open clip {footage.tracked[:8]}").focus()
    with tab.expect_navigation():
        tab.keyboard.press("Enter")
    assert tab.get_by_role("heading", level=1).inner_text() == f"Clip {footage.tracked[:8]}"
    assert tab.watch.elsewhere() == []


def test_a_click_on_the_map_marks_the_point_and_its_circle(footage, tab):
    fk.sign_in(tab, footage, "evan", next_path="/ui/footage")
    assert tab.get_by_label("Latitude").input_value() == ""
    tab.get_by_role("application").click()
    assert tab.get_by_label("Latitude").input_value() and tab.get_by_label("Longitude").input_value()
    assert "A point is marked on the map, with 200 metres around it." in tab.locator("#place-said").inner_text()
    tab.get_by_role("button", name="Remove the point").click()
    assert tab.get_by_label("Latitude").input_value() == ""


def test_time_camera_and_officer_narrow_the_search(footage, tab):
    fk.sign_in(tab, footage, "sue", next_path="/ui/footage")
    when = window(footage)
    search(tab, footage, **when)
    assert sorted(found(tab)) == sorted([footage.clip[:8], footage.tracked[:8]])
    month = {"from": local(footage.recorded - timedelta(days=29)), "to": when["to"]}
    search(tab, footage, **month, device="cam-b")
    assert found(tab) == [footage.due_clip[:8]]
    assert tab.get_by_label("Camera").input_value() == "cam-b"  # the form keeps what was asked
    search(tab, footage, **month, officer="olive")
    assert sorted(found(tab)) == sorted([footage.clip[:8], footage.tracked[:8]])
    search(tab, footage, **when, device="cam-b")
    assert found(tab) == [] and "No footage matches this search" in tab.get_by_role("status").inner_text()
    assert fk.axe_violations(tab) == []


def test_a_search_that_cannot_be_run_says_what_to_change(footage, tab):
    fk.sign_in(tab, footage, "evan", next_path="/ui/footage")
    when = window(footage)
    search(tab, footage, **{"from": when["to"], "to": when["from"]})
    assert "Until is before From" in tab.get_by_role("alert").inner_text()
    search(tab, footage, **when, lat="51.5", lon="-0.12", radius_m="999999")
    assert tab.get_by_role("alert").inner_text().startswith("Please check the search: Radius")
    year = {"from": local(footage.recorded - timedelta(days=90)), "to": when["to"]}
    search(tab, footage, **year, lat="51.5", lon="-0.12", radius_m="100")
    assert "at most 31 days" in tab.get_by_role("alert").inner_text()
    assert fk.axe_violations(tab) == []


def test_an_officer_finds_only_their_own_footage_and_not_by_place(footage, tab):
    fk.sign_in(tab, footage, "oscar", next_path="/ui/footage")
    assert tab.get_by_label("Officer who wore it").count() == 0 and tab.get_by_role("application").count() == 0
    assert [o.inner_text() for o in tab.locator("#device option").all()] == ["Any camera", "cam-b"]
    month = {"from": local(footage.recorded - timedelta(days=29)), "to": local(footage.recorded + timedelta(days=1))}
    search(tab, footage, **month)
    assert found(tab) == [footage.due_clip[:8]]
    search(tab, footage, **month, officer="olive")  # another officer's name in the address changes nothing
    assert found(tab) == [footage.due_clip[:8]]
    search(tab, footage, **month, device="cam-a")
    assert found(tab) == []
    search(tab, footage, **month, lat=str(fk.TRACK_START[0]), lon=str(fk.TRACK_START[1]), radius_m="100")
    assert "cannot search footage by place" in tab.get_by_role("alert").inner_text()
    logged = [r for r in records(footage, action="search", actor="user:oscar") if r.details.get("via") == "web"]
    assert logged and all(r.details["officer"] == "oscar" for r in logged)
    assert fk.axe_violations(tab) == []


@pytest.mark.parametrize("who", ["ada", "aud"])
def test_roles_without_footage_have_no_search(footage, tab, who):
    fk.sign_in(tab, footage, who)
    assert tab.get_by_role("link", name="Footage").count() == 0
    tab.goto(footage.url + "/ui/footage")
    assert tab.get_by_role("heading", level=1).inner_text() == "Not allowed"
