"""Exports over HTTP, on real footage (a short H.264 clip sealed as a camera would, uploaded by a dock):

* a subject access export's files (the redacted MP4s, the manifest, its signature) are downloaded by
  the disclosure officer, and only files its signed manifest lists are ever served;
* an evidential export, for the evidence officer: a clip marked for a case, verified, decrypted and
  *unredacted*, with a signed manifest; over HTTP and as `bwv retention export`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from lifecycle import http_kit
from lifecycle.lifecycle_kit import UTC
from openbwv.enrol import device_storage
from openbwv.footage import make_synthetic_video
from openbwv.importer import import_video
from openbwv.sealed.keys import ServerPublicKey
from openbwv.server import audit
from openbwv.server.sar_export import SIGNING_CONTEXT
from openbwv.server.service import open_metadata

BWV = str(Path(sys.executable).with_name("bwv"))
CASE = "CR-2026-0042"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 2 s clip recorded two days ago, sealed in two segments and uploaded; a disclosure officer, an
    evidence officer; a subject access request holding the clip."""
    root = tmp_path_factory.mktemp("http-exports")
    home = http_kit.make_home(root / "home")
    dock_token = http_kit.add_dock(home, "dock-x")
    http_kit.enrol(home, "cam-x")
    original = make_synthetic_video(root / "original.mp4", seconds=2, width=160, height=120)
    recorded = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    sealed = import_video(original, device_storage(home, "cam-x"), segment_seconds=1.0, start=recorded)
    assert len(sealed.segments) == 2
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as server:
        dock = http_kit.TusSession(server.url, dock_token)
        for info in sealed.segments:
            seg = http_kit.kit.Segment(info.path, "cam-x", info.sequence, info.segment_hash.hex(),
                                       info.preamble.prev_hash.hex())
            assert dock.upload(seg).status == 204
        staff = {role: http_kit.TusSession(server.url, http_kit.staff_token(home, name, role))
                 for role, name in (("disclosure_officer", "dora"), ("evidence_officer", "evan"))}
        logged = staff["disclosure_officer"].request("POST", "/api/v1/requests", body=json.dumps({
            "requester": "A. Person", "description": "stopped outside the station",
            "from": (recorded - timedelta(minutes=5)).isoformat(),
            "to": (recorded + timedelta(minutes=5)).isoformat()}).encode())
        assert logged.status == 201, logged.body
        yield {"home": home, "server": server, "staff": staff, "original": original,
               "clip": str(sealed.clip_id), "segments": [i.segment_hash.hex() for i in sealed.segments],
               "request": logged.json()["request"], "root": root}


def post(session, path: str, doc: dict):
    return session.request("POST", path, body=json.dumps(doc).encode())


def records(home, **filters) -> list[audit.AuditRecord]:
    db = open_metadata(home)
    try:
        return audit.query(db.reader(), limit=100_000, **filters)
    finally:
        db.close()


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


def signature_verifies(home, manifest: bytes, signature: bytes) -> bool:
    key = ServerPublicKey.load(home.server_public_key).receipt_verifier()
    try:
        key.verify(bytes.fromhex(signature.decode().strip()), SIGNING_CONTEXT + manifest)
        return True
    except Exception:
        return False


# =========================================================================== subject access exports
@pytest.fixture(scope="module")
def sar_export(world):
    reply = post(world["staff"]["disclosure_officer"], f"/api/v1/requests/{world['request']}/exports",
                 {"clips": [world["clip"]]})
    assert reply.status == 201, reply.body
    return reply.json()


def test_an_export_answer_links_its_manifest_signature_and_every_redacted_mp4(world, sar_export):
    n = sar_export["manifest"]["export"]
    base = f"/api/v1/requests/{world['request']}/exports/{n}"
    assert sar_export["files"] == {"manifest.json": f"{base}/manifest.json", "manifest.sig": f"{base}/manifest.sig",
                                   f"{world['clip']}.mp4": f"{base}/{world['clip']}.mp4"}


def test_a_disclosure_officer_downloads_the_redacted_mp4_and_the_signed_manifest(world, sar_export):
    officer = world["staff"]["disclosure_officer"]
    got = {name: officer.get(url) for name, url in sar_export["files"].items()}
    assert {name: r.status for name, r in got.items()} == dict.fromkeys(got, 200)
    manifest = got["manifest.json"].body
    assert hashlib.sha256(manifest).hexdigest() == sar_export["manifest_sha256"]
    assert json.loads(manifest) == sar_export["manifest"]
    assert signature_verifies(world["home"], manifest, got["manifest.sig"].body)
    video = got[f"{world['clip']}.mp4"]
    assert video.headers["Content-Type"] == "video/mp4"
    assert "attachment" in video.headers["Content-Disposition"]
    (entry,) = sar_export["manifest"]["clips"]
    assert hashlib.sha256(video.body).hexdigest() == entry["output_sha256"]
    playable = world["root"] / "downloaded-redacted.mp4"
    playable.write_bytes(video.body)
    assert len(frames(playable)) == len(frames(world["original"]))


def test_every_download_is_an_export_record_against_the_request(world, sar_export):
    officer = world["staff"]["disclosure_officer"]
    url = sar_export["files"]["manifest.sig"]
    before = len(records(world["home"], action="export", target=f"request:{world['request']}"))
    assert officer.get(url).status == 200
    mine = records(world["home"], action="export", target=f"request:{world['request']}")
    assert len(mine) == before + 1
    last = mine[-1]
    assert last.actor == "user:dora" and last.outcome == "ok"
    assert last.details == {"export": sar_export["manifest"]["export"], "file": "manifest.sig", "what": "download",
                            "bytes": (Path(sar_export["directory"]) / "manifest.sig").stat().st_size}


@pytest.mark.parametrize("name", [
    "..", ".", "%2e%2e", "..%2F..%2F..%2Fevidence.db", "..%2fmanifest.json", "evidence.db", "MANIFEST.JSON",
    ".manifest.json.tmp-1", "manifest.json%00.mp4", "manifest.json%2F..%2F..%2F1%2Fmanifest.json",
    f"{uuid.UUID(int=7)}.mp4",  # the shape of an output, but not one this export lists
])
def test_only_files_the_signed_manifest_lists_are_served(world, sar_export, name):
    base = f"/api/v1/requests/{world['request']}/exports/{sar_export['manifest']['export']}"
    reply = world["staff"]["disclosure_officer"].get(f"{base}/{name}")
    assert reply.status in (400, 404), (name, reply.status, reply.body[:200])
    assert set(reply.json()) == {"error"}


def test_a_path_climbing_out_of_the_export_reaches_no_file(world, sar_export):
    officer = world["staff"]["disclosure_officer"]
    for path in (f"/api/v1/requests/{world['request']}/exports/1/../../../../../server/evidence.db",
                 f"/api/v1/requests/{world['request']}/exports/1/%2E%2E/%2E%2E/%2E%2E/evidence.db",
                 f"/api/v1/requests/{world['request']}/exports/..%2F..%2F..%2F/manifest.json"):
        reply = officer.get(path)
        assert reply.status in (400, 404), (path, reply.status, reply.body[:200])
        assert b"SQLite" not in reply.body


def test_a_refused_name_is_on_the_record_as_a_denied_export(world, sar_export):
    stray = f"{uuid.UUID(int=8)}.mp4"
    reply = world["staff"]["disclosure_officer"].get(
        f"/api/v1/requests/{world['request']}/exports/{sar_export['manifest']['export']}/{stray}")
    assert reply.status == 404 and "lists no file" in reply.json()["error"]
    denied = [r for r in records(world["home"], action="export", target=f"request:{world['request']}",
                                 outcome="denied") if r.details["file"] == stray]
    assert len(denied) == 1 and denied[0].actor == "user:dora"


def test_an_export_of_another_request_or_one_never_made_is_not_found(world, sar_export):
    officer = world["staff"]["disclosure_officer"]
    assert officer.get("/api/v1/requests/SAR-1999-00001/exports/1/manifest.json").status == 404
    assert officer.get(f"/api/v1/requests/{world['request']}/exports/99/manifest.json").status == 404
    assert officer.get(f"/api/v1/requests/{world['request']}/exports/0/manifest.json").status == 400


def test_an_output_altered_on_disk_is_not_served(world):
    officer = world["staff"]["disclosure_officer"]
    second = post(officer, f"/api/v1/requests/{world['request']}/exports", {"clips": [world["clip"]]}).json()
    mp4 = Path(second["directory"]) / f"{world['clip']}.mp4"
    with open(mp4, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    reply = officer.get(second["files"][mp4.name])
    assert reply.status == 500 and "SHA-256" in reply.json()["error"]
    assert officer.get(second["files"]["manifest.json"]).status == 200
    failed = records(world["home"], action="export", target=f"request:{world['request']}", outcome="failed")
    assert failed and failed[-1].details["file"] == mp4.name


def test_a_box_outside_the_frame_is_a_400_that_names_the_frame_and_exports_nothing(world, sar_export):
    before = sorted(p.name for p in (world["home"].server_dir / "exports" / world["request"]).iterdir())
    reply = post(world["staff"]["disclosure_officer"], f"/api/v1/requests/{world['request']}/exports",
                 {"clips": [world["clip"]], "manual": {world["clip"]: [[0, 1, 150, 100, 40, 40]]}})
    assert reply.status == 400, reply.body
    assert "reaches outside the 160x120 frame" in reply.json()["error"] and "nothing was exported" in reply.json()["error"]
    after = sorted(p.name for p in (world["home"].server_dir / "exports" / world["request"]).iterdir())
    assert after == before


def test_a_followed_box_is_exported_and_its_use_is_in_the_signed_manifest(world, sar_export):
    follow = {"start_s": 0, "end_s": 1, "keyframes": [[0.5, 20, 20, 40, 40]]}
    reply = post(world["staff"]["disclosure_officer"], f"/api/v1/requests/{world['request']}/exports",
                 {"clips": [world["clip"]], "follow": {world["clip"]: [follow]}})
    assert reply.status == 201, reply.body
    (clip,) = reply.json()["manifest"]["clips"]
    assert clip["follow_boxes"] == [{"start_s": 0.0, "end_s": 1.0, "keyframes": [[0.5, 20, 20, 40, 40]]}]
    (use,) = clip["redaction"]["follow_boxes"]
    assert use["frames_active"] > 0


def test_audio_ranges_are_listed_in_the_signed_manifest(world, sar_export):
    reply = post(world["staff"]["disclosure_officer"], f"/api/v1/requests/{world['request']}/exports",
                 {"clips": [world["clip"]], "silence": {world["clip"]: [[0.2, 0.4]]},
                  "bleep": {world["clip"]: [[0.5, 0.6]]}})
    assert reply.status == 201, reply.body
    (clip,) = reply.json()["manifest"]["clips"]
    assert clip["audio_ranges"] == [{"start_s": 0.2, "end_s": 0.4, "mode": "silence"},
                                    {"start_s": 0.5, "end_s": 0.6, "mode": "bleep"}]
    # This test camera's clip has no sound (tests/redact/test_audio.py exports a clip that has): the ranges
    # are on the record, and the notes say they had nothing to act on.
    assert clip["redaction"]["audio"] is None
    assert "2 audio range(s) were marked, but the source has no sound" in clip["redaction"]["notes"]


def test_an_empty_audio_range_is_a_400(world, sar_export):
    reply = post(world["staff"]["disclosure_officer"], f"/api/v1/requests/{world['request']}/exports",
                 {"clips": [world["clip"]], "silence": {world["clip"]: [[0.4, 0.4]]}})
    assert reply.status == 400 and "is empty" in reply.json()["error"], reply.body


def test_a_followed_box_without_keyframes_is_a_400(world, sar_export):
    reply = post(world["staff"]["disclosure_officer"], f"/api/v1/requests/{world['request']}/exports",
                 {"clips": [world["clip"]], "follow": {world["clip"]: [{"start_s": 0, "end_s": 1, "keyframes": []}]}})
    assert reply.status == 400, reply.body


def test_reading_a_request_shows_its_exports(world, sar_export):
    doc = world["staff"]["disclosure_officer"].get(f"/api/v1/requests/{world['request']}").json()
    first = doc["exports"][0]
    assert first["export"] == 1 and first["manifest_sha256"] == sar_export["manifest_sha256"]
    assert first["manifest_url"] == sar_export["files"]["manifest.json"]


def test_an_evidence_officer_may_not_download_a_subject_access_export(world, sar_export):
    reply = world["staff"]["evidence_officer"].get(sar_export["files"]["manifest.json"])
    assert reply.status == 403 and "request.export" in reply.json()["error"]


# =========================================================================== evidential exports
@pytest.fixture(scope="module")
def evidential(world):
    officer = world["staff"]["evidence_officer"]
    marked = post(officer, f"/api/v1/clips/{world['clip']}/marks", {"case_ref": CASE, "reason": "assault, Market St"})
    assert marked.status == 201, marked.body
    reply = post(officer, f"/api/v1/clips/{world['clip']}/exports", {"case_ref": CASE, "reason": "disclosure to the CPS"})
    assert reply.status == 201, reply.body
    return reply.json()


def test_an_evidential_export_is_the_clip_as_recorded_unredacted_and_not_re_encoded(world, evidential):
    officer = world["staff"]["evidence_officer"]
    video = officer.get(evidential["files"][f"{world['clip']}.mp4"])
    assert video.status == 200 and video.headers["Content-Type"] == "video/mp4"
    downloaded = world["root"] / "downloaded-evidential.mp4"
    downloaded.write_bytes(video.body)
    ours, theirs = frames(downloaded), frames(world["original"])
    assert len(ours) == len(theirs) == 60
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))  # every pixel: nothing blurred, no re-encode


def test_its_manifest_says_what_went_in_and_came_out_who_made_it_when_and_for_which_case(world, evidential):
    officer = world["staff"]["evidence_officer"]
    manifest_bytes = officer.get(evidential["files"]["manifest.json"]).body
    signature = officer.get(evidential["files"]["manifest.sig"]).body
    assert signature_verifies(world["home"], manifest_bytes, signature)
    assert hashlib.sha256(manifest_bytes).hexdigest() == evidential["manifest_sha256"]
    manifest = json.loads(manifest_bytes)
    assert manifest["kind"] == "evidential" and manifest["case_ref"] == CASE
    assert manifest["reason"] == "disclosure to the CPS" and manifest["created_by"] == "user:evan"
    assert datetime.fromisoformat(manifest["created_utc"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert manifest["redaction"].startswith("none")
    (clip,) = manifest["clips"]
    assert clip["clip_id"] == world["clip"] and clip["device_id"] == "cam-x"
    assert clip["sealed_segments"] == world["segments"]  # the originals, by the hashes their receipts sign
    assert [s["segment_hash"] for s in clip["segments"]] == world["segments"]
    assert clip["missing_segment_indices"] == []
    video = officer.get(evidential["files"][clip["output"]]).body
    assert hashlib.sha256(video).hexdigest() == clip["output_sha256"]


def test_the_decryption_key_use_and_export_are_on_the_record(world, evidential):
    target = f"clip:{world['clip']}"
    n = evidential["manifest"]["export"]
    mine = [r for r in records(world["home"], actor="user:evan", target=target)
            if r.details.get("evidential_export") == n]
    assert [r.action for r in mine][:3] == ["key_use", "decrypt", "export"]
    key_use, decrypt, export = mine[:3]
    assert decrypt.details["purpose"] == "evidential export" and decrypt.details["case_ref"] == CASE
    assert export.details["manifest_sha256"] == evidential["manifest_sha256"]
    downloads = [r for r in records(world["home"], action="export", target=target) if r.details.get("what") == "download"]
    assert downloads and all(r.details["case_ref"] == CASE for r in downloads)


def test_only_a_clip_marked_for_that_case_is_exported_unredacted(world, evidential):
    officer = world["staff"]["evidence_officer"]
    reply = post(officer, f"/api/v1/clips/{world['clip']}/exports", {"case_ref": "CR-1999-0001", "reason": "curiosity"})
    assert reply.status == 409
    assert "no active evidence mark for case 'CR-1999-0001'" in reply.json()["error"] and CASE in reply.json()["error"]
    missing = post(officer, f"/api/v1/clips/{world['clip']}/exports", {"case_ref": CASE})
    assert missing.status == 400 and "reason" in missing.json()["error"]


def test_a_disclosure_officer_may_neither_make_nor_download_an_evidential_export(world, evidential):
    officer = world["staff"]["disclosure_officer"]
    made = post(officer, f"/api/v1/clips/{world['clip']}/exports", {"case_ref": CASE, "reason": "x"})
    assert made.status == 403 and "clip.export" in made.json()["error"]
    assert officer.get(evidential["files"]["manifest.json"]).status == 403


def test_bwv_retention_export_makes_the_same_export_from_the_shell(world, evidential):
    home = world["home"]
    done = subprocess.run([BWV, "retention", "export", world["clip"], "--case", CASE, "--reason", "second copy"],
                          env=dict(os.environ, BWV_HOME=str(home.root)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"for {CASE}" in done.stdout
    n = evidential["manifest"]["export"] + 1
    reply = world["staff"]["evidence_officer"].get(f"/api/v1/clips/{world['clip']}/exports/{n}/manifest.json")
    manifest = reply.json()
    assert manifest["created_by"].startswith("local:") and manifest["reason"] == "second copy"
    assert manifest["clips"][0]["output_sha256"] == evidential["manifest"]["clips"][0]["output_sha256"]
    refused = subprocess.run([BWV, "retention", "export", world["clip"], "--case", "CR-NONE", "--reason", "r"],
                             env=dict(os.environ, BWV_HOME=str(home.root)), capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and "no active evidence mark" in refused.stderr
