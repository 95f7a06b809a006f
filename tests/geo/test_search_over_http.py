"""End to end: a camera's segment with GNSS fixes, uploaded over tus to a real server, found by place and time
through the HTTP API and `bwv search`, and exported as GPX."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlencode

import pytest

from openbwv.enrol import create_server_keys, enrol_device, load_device
from openbwv.home import Home
from openbwv.sealed.layout import HASH_LEN, RECORD_INFO, RECORD_LOCATION, RECORD_MEDIA
from openbwv.sealed.writer import SegmentWriter
from openbwv.server.auth import DockTokens
from openbwv.server.geoindex import destination
from openbwv.server.service import open_metadata

from .conftest import server_kit

T0 = 1_764_086_400_000_000  # 2025-11-25T16:00:00Z
S = 1_000_000
CENTRE = (51.5007, -0.1246)
GPX = "{http://www.topografix.com/GPX/1/1}"


def location_payload(fixes: list[tuple[int, float, float]]) -> bytes:
    """§7.1 lines as the camera writes them: events, fixes, padding to a multiple of 256 bytes."""
    lines = [json.dumps({"event": "fix_acquired", "device_utc_us": fixes[0][0], "utc_us": fixes[0][0]})] if fixes else []
    lines += [json.dumps({"utc_us": t, "device_utc_us": t + 51_234, "lat": lat, "lon": lon, "quality": 1,
                          "hdop": 0.9}) for t, lat, lon in fixes]
    if not fixes:
        lines.append(json.dumps({"no_fix": True, "reason": "no fix yet", "from_utc_us": T0, "to_utc_us": T0 + 10 * S}))
    text = "\n".join(lines) + "\n"
    pad = -(len(text) + 1) % 256
    return (text + " " * pad + "\n").encode()


class Camera:
    """Seals a device's chain of segments, each with the LOCATION records given."""

    def __init__(self, home: Home, device_id: str, directory: Path):
        enrol_device(home, device_id)
        self.key, self.server = load_device(home, device_id)
        self.directory, self.sequence, self.prev = directory, 0, bytes(HASH_LEN)
        self.clip_id = uuid.uuid4()

    def seal(self, fixes: list[tuple[int, float, float]], *, index: int) -> server_kit.Segment:
        self.sequence += 1
        where = self.directory / f"{self.sequence:03d}"
        where.mkdir(parents=True)
        w = SegmentWriter(where, self.key, self.server, clip_id=self.clip_id, segment_index=index,
                          sequence=self.sequence, prev_hash=self.prev, start_utc_us=T0 + index * 10 * S,
                          chunk_limit=64 * 1024)
        w.append(RECORD_INFO, json.dumps({"codec": "test", "gnss": "synthetic track (emulated)"}).encode())
        w.append(RECORD_MEDIA, os.urandom(20_000))
        w.append(RECORD_LOCATION, location_payload(fixes))
        info = w.seal(end_utc_us=T0 + (index + 1) * 10 * S)
        seg = server_kit.Segment(info.path, self.key.device_id, self.sequence, info.segment_hash.hex(), self.prev.hex())
        self.prev = info.segment_hash
        return seg


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Home:
    home = Home(tmp_path_factory.mktemp("geo-home"))
    create_server_keys(home)
    return home


@pytest.fixture(scope="module")
def token(home: Home) -> str:
    db = open_metadata(home)
    try:
        return DockTokens(db).add_dock("dock-geo")
    finally:
        db.close()


@pytest.fixture(scope="module")
def uploaded(home: Home, token: str, tmp_path_factory):
    """A running server holding: a walk of two segments through CENTRE (one clip), and a clip with no fix."""
    directory = tmp_path_factory.mktemp("cams")
    with server_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        tus = server_kit.TusSession(server.url, token)
        walker = Camera(home, "cam-walk", directory / "walk")
        # 20 fixes, one a second, walking west through the centre: 500 m east of it, 50 m closer each second.
        walk = [(T0 + i * S, *destination(*CENTRE, 90, 500 - i * 50)) for i in range(20)]
        segs = [walker.seal(walk[:10], index=0), walker.seal(walk[10:], index=1)]
        blind = Camera(home, "cam-blind", directory / "blind")
        segs.append(blind.seal([], index=0))
        for seg in segs:
            reply = tus.upload(seg)
            assert reply.status == 204 and reply.receipt, (reply.status, reply.body)
        # Searching and tracks are staff work: an evidence officer asks (docks may not).
        staff = server_kit.TusSession(server.url, server_kit.staff_token(home, "eve", "evidence_officer"))
        yield server, staff, walker, blind, segs


def api_search(tus, **params) -> server_kit.Reply:
    return tus.get("/api/v1/search?" + urlencode(params))


WINDOW = {"from": "2025-11-25T16:00:00Z", "to": "2025-11-25T16:00:19Z"}


def test_the_api_finds_the_clip_that_passed_by(uploaded):
    _server, tus, walker, _blind, segs = uploaded
    reply = api_search(tus, lat=CENTRE[0], lon=CENTRE[1], radius_m=125, **WINDOW)
    assert reply.status == 200, reply.body
    (clip,) = reply.json()["clips"]
    assert clip["clip_id"] == str(walker.clip_id) and clip["device_id"] == "cam-walk"
    # Within 125 m: 100, 50, 0 m east (seconds 8-10), 50, 100 m west (11, 12): both segments.
    assert clip["segment_hashes"] == [segs[0].segment_hash, segs[1].segment_hash]
    assert (clip["first_utc"], clip["last_utc"]) == ("2025-11-25T16:00:08Z", "2025-11-25T16:00:12Z")
    assert clip["closest_m"] == pytest.approx(0, abs=0.01) and clip["matching_fixes"] == 5


def test_the_api_finds_nothing_before_or_elsewhere(uploaded):
    _server, tus, *_ = uploaded
    before = api_search(tus, lat=CENTRE[0], lon=CENTRE[1], radius_m=100, **{"from": "2025-11-25T15:00:00Z",
                                                                           "to": "2025-11-25T16:00:07Z"})
    assert before.status == 200 and before.json()["clips"] == []
    elsewhere = api_search(tus, lat=48.8584, lon=2.2945, radius_m=50_000, **WINDOW)
    assert elsewhere.json()["clips"] == []


def test_the_segment_without_a_fix_was_held_and_is_simply_not_found(uploaded, home):
    _server, tus, _walker, blind, segs = uploaded
    held = tus.get(f"/api/v1/segments/{segs[2].segment_hash}")
    assert held.status == 200
    reply = api_search(tus, lat=0, lon=0, radius_m=50_000, **WINDOW)
    assert reply.json()["clips"] == []


@pytest.mark.parametrize("params,words", [
    ({"lat": "95", "lon": "0", "radius_m": "10", **WINDOW}, "lat 95 is out of range"),
    ({"lat": "0", "lon": "0", "radius_m": "60000", **WINDOW}, "radius_m 60000 is out of range"),
    ({"lat": "0", "lon": "0", "radius_m": "10", "from": "2025-11-25T16:00:00Z"}, "to is missing"),
])
def test_bad_search_parameters_are_400_with_the_reason(uploaded, params, words):
    _server, tus, *_ = uploaded
    reply = api_search(tus, **params)
    assert reply.status == 400 and words in reply.error


def test_search_needs_a_token(uploaded):
    server, *_ = uploaded
    reply = server_kit.TusSession(server.url, None).get("/api/v1/search?" + urlencode({"lat": 0, "lon": 0,
                                                                                       "radius_m": 1, **WINDOW}))
    assert reply.status == 401


def test_the_gpx_has_one_trkseg_per_segment_and_every_fix(uploaded):
    _server, tus, walker, _blind, _segs = uploaded
    reply = tus.get(f"/api/v1/clips/{walker.clip_id}/track.gpx")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/gpx+xml")
    root = ET.fromstring(reply.body)
    assert root.tag == f"{GPX}gpx" and root.get("version") == "1.1"
    (trk,) = root.findall(f"{GPX}trk")
    trksegs = trk.findall(f"{GPX}trkseg")
    assert [len(s.findall(f"{GPX}trkpt")) for s in trksegs] == [10, 10]
    first = trksegs[0].find(f"{GPX}trkpt")
    assert first.find(f"{GPX}time").text == "2025-11-25T16:00:00Z"
    assert float(first.get("lat")) == pytest.approx(CENTRE[0], abs=1e-6)


def test_gpx_of_an_unknown_or_malformed_clip(uploaded):
    _server, tus, *_ = uploaded
    assert tus.get(f"/api/v1/clips/{uuid.uuid4()}/track.gpx").status == 404
    assert tus.get("/api/v1/clips/not-a-uuid/track.gpx").status == 400


def bwv(home: Home, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BWV_HOME=str(home.root))
    return subprocess.run([server_kit.BWV, *args], env=env, capture_output=True, text=True, timeout=60)


def test_bwv_search_and_bwv_track_read_the_same_index(uploaded, home, tmp_path):
    _server, _tus, walker, _blind, segs = uploaded
    found = bwv(home, "search", "--near", f"{CENTRE[0]},{CENTRE[1]}", "--radius", "125",
                "--from", WINDOW["from"], "--to", WINDOW["to"])
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("1 clip(s) within 125 m")
    assert str(walker.clip_id) in found.stdout and segs[1].segment_hash in found.stdout
    none = bwv(home, "search", "--near", "0,0", "--radius", "100", "--from", WINDOW["from"], "--to", WINDOW["to"])
    assert none.returncode == 1 and none.stdout.startswith("0 clip(s)")
    bad = bwv(home, "search", "--near", "0,0", "--radius", "100000", "--from", WINDOW["from"], "--to", WINDOW["to"])
    assert bad.returncode == 2 and "--radius" in bad.stderr
    out = tmp_path / "walk.gpx"
    written = bwv(home, "track", str(walker.clip_id), "--gpx", str(out))
    assert written.returncode == 0, written.stderr
    assert len(ET.parse(out).getroot().findall(f".//{GPX}trkpt")) == 20
    assert out.stat().st_mode & 0o077 == 0  # movements are personal data: the operator's file alone


def test_searches_and_track_exports_from_the_console_are_audited_like_the_api(uploaded, home, tmp_path):
    from openbwv.server import audit
    from openbwv.server.service import open_metadata

    _server, _tus, walker, _blind, _segs = uploaded

    def local(action: str, target: str | None = None) -> list:
        db = open_metadata(home)
        try:
            return [r for r in audit.query(db.reader(), action=action, target=target, limit=10_000)
                    if r.actor.startswith("local:")]
        finally:
            db.close()

    searches, exports = len(local("search")), len(local("export", f"clip:{walker.clip_id}"))
    assert bwv(home, "search", "--near", f"{CENTRE[0]},{CENTRE[1]}", "--radius", "125",
               "--from", WINDOW["from"], "--to", WINDOW["to"]).returncode == 0
    assert bwv(home, "track", str(walker.clip_id), "--gpx", str(tmp_path / "t.gpx")).returncode == 0
    after = local("search")
    assert len(after) == searches + 1
    assert after[-1].details["found"] == 1 and after[-1].details["radius_m"] == 125
    written = local("export", f"clip:{walker.clip_id}")
    assert len(written) == exports + 1 and "GPX" in written[-1].details["what"]
