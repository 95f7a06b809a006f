"""The `bwv` commands of the foundation, run as a user would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import av
import pytest

from openbwv.cli import main

from .conftest import run


def storage(home: Path, device: str = "cam-1") -> Path:
    return home / "devices" / device / "storage"


def sealed(home: Path, device: str = "cam-1") -> list[Path]:
    return sorted(storage(home, device).glob("*.bwv"))


def test_seal_splits_at_keyframes_into_chained_segments(home, clip, capsys):
    code, out = run(capsys, "seal", "--device", "cam-1", "--segment-seconds", "3", str(clip))
    assert code == 0, out
    files = sealed(home)
    assert [f.name for f in files] == [f"cam-1-{i:010d}.bwv" for i in (1, 2, 3)]
    assert "3 segment(s)" in out


def test_sealing_again_continues_the_same_chain(home, clip, capsys):
    run(capsys, "seal", "--device", "cam-1", "--segment-seconds", "3", str(clip))
    run(capsys, "seal", "--device", "cam-1", "--segment-seconds", "3", str(clip))
    assert len(sealed(home)) == 6
    code, out = run(capsys, "verify", str(storage(home)))
    assert code == 0, out
    assert "6 segment(s) from 1 device(s) verified; 0 problem(s)" in out


def test_verify_reports_every_kind_of_tampering_and_exits_1(home, clip, capsys, tmp_path):
    run(capsys, "seal", "--device", "cam-1", "--segment-seconds", "1", str(clip))
    files = sealed(home)
    assert len(files) >= 8
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    for f in files:
        shutil.copy(f, evidence / f.name)
    e = sorted(evidence.glob("*.bwv"))
    (e[1]).unlink()  # missing between two present ones
    shutil.copy(e[2], evidence / "replayed-copy.bwv")  # duplicate
    data = bytearray(e[3].read_bytes())
    data[len(data) // 2] ^= 0x10  # a flipped bit in the ciphertext
    e[3].write_bytes(bytes(data))
    e[4].write_bytes(e[4].read_bytes()[:-1])  # truncated
    e[5].write_bytes(e[5].read_bytes() + b"\0")  # extended

    code, out = run(capsys, "verify", str(evidence))
    assert code == 1
    lines = out.splitlines()
    assert any(e[3].name in l and "altered" in l for l in lines), out
    assert any(e[4].name in l and "malformed" in l for l in lines), out
    assert any(e[5].name in l and "data after the trailer" in l for l in lines), out
    assert any("duplicate" in l for l in lines), out
    assert any("gap" in l and "segment 2 is missing" in l for l in lines), out
    assert lines[-1].endswith("problem(s)") and " 0 problem" not in lines[-1]


def test_segments_from_an_unknown_device_or_another_key_are_rejected(home, clip, capsys, tmp_path, monkeypatch):
    run(capsys, "seal", "--device", "cam-1", "--segment-seconds", "3", str(clip))
    # A second force (another BWV_HOME) enrols its own cam-1 and cam-2.
    other = tmp_path / "other-home"
    monkeypatch.setenv("BWV_HOME", str(other))
    main(["keys", "server"])
    main(["keys", "device", "--id", "cam-1"])
    main(["keys", "device", "--id", "cam-2"])
    main(["seal", "--device", "cam-1", "--segment-seconds", "3", str(clip)])
    main(["seal", "--device", "cam-2", "--segment-seconds", "3", str(clip)])
    monkeypatch.setenv("BWV_HOME", str(home))
    code, out = run(capsys, "verify", str(other / "devices"))
    assert code == 1
    assert "bad signature" in out and "cam-1" in out
    assert "unknown device" in out and "'cam-2' is not enrolled" in out


def test_open_gives_playable_video_of_the_whole_clip(home, clip, capsys, tmp_path):
    run(capsys, "seal", "--device", "cam-1", "--segment-seconds", "3", str(clip))
    out_dir = tmp_path / "opened"
    code, out = run(capsys, "open", "--out", str(out_dir), str(storage(home)))
    assert code == 0, out
    mp4s = list(out_dir.glob("*.mp4"))
    assert len(mp4s) == 1
    with av.open(str(mp4s[0])) as c, av.open(str(clip)) as orig:
        frames = sum(1 for _ in c.decode(video=0))
        orig_frames = sum(1 for _ in orig.decode(video=0))
    assert frames == orig_frames == 9 * 30
    manifest = json.loads(mp4s[0].with_suffix(".json").read_text())
    assert [s["segment_index"] for s in manifest["segments"]] == [0, 1, 2]
    assert manifest["missing_segment_indices"] == []


def test_open_refuses_to_decrypt_an_altered_file(home, clip, capsys, tmp_path):
    run(capsys, "seal", "--device", "cam-1", "--segment-seconds", "3", str(clip))
    f = sealed(home)[1]
    data = bytearray(f.read_bytes())
    data[-10] ^= 1  # inside the signature
    f.write_bytes(bytes(data))
    code, out = run(capsys, "open", "--out", str(tmp_path / "o"), str(storage(home)))
    assert code == 1
    assert "bad signature" in out
    manifest = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert manifest["missing_segment_indices"] == [1]


def test_a_second_server_key_is_refused_without_force(home, capsys):
    code, out = run(capsys, "keys", "server")
    assert code == 2
    assert "already exist" in out


def test_seal_rejects_a_file_that_is_not_video(home, capsys, tmp_path):
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    code, out = run(capsys, "seal", "--device", "cam-1", str(junk))
    assert code == 1
    assert "cannot read video" in out
    assert sealed(home) == []


def test_seal_as_a_device_that_is_not_enrolled_says_how_to_enrol(home, clip, capsys):
    code, out = run(capsys, "seal", "--device", "cam-9", str(clip))
    assert code == 2
    assert "bwv keys device --id cam-9" in out


def test_home_option_overrides_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BWV_HOME", str(tmp_path / "env-home"))
    code, _ = run(capsys, "keys", "server", "--home", str(tmp_path / "flag-home"))
    assert code == 0
    assert (tmp_path / "flag-home" / "server" / "keys" / "server.pub").exists()
    assert not (tmp_path / "env-home").exists()


def test_every_command_has_help_with_examples(capsys):
    for cmd in ("keys", "seal", "verify", "open", "demo"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "usage: bwv " + cmd in text
        assert "example" in text


def test_demo_records_docks_uploads_frees_and_opens(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("BWV_HOME", str(tmp_path / "demo"))
    code = main(["demo", "--seconds", "9"])
    out = capfd.readouterr().out
    assert code == 0, out
    assert "demo succeeded" in out
    sealed = int(re.search(r"\[seal\] (\d+) segments sealed on the camera", out).group(1))
    assert sealed >= 2  # 9 s in segments of 4 s, cut at keyframes
    assert f"camera freed {sealed} against the server's signed receipts" in out
    assert "camera storage now holds 0 sealed segment(s): clear" in out
    assert f"server holds {sealed} segment(s) of demo-cam-01 (#1..#{sealed}), all verified" in out
    assert "clip(s) found, ours among them" in out  # found again by a point on the route and a time window
    # It ends with what happens next to the clip and a check of the trail its handling left.
    clip = re.search(r"\[camera\] .* clip ([0-9a-f-]{36})", out).group(1)
    due = re.search(rf"\[retention\] {clip}\s+demo-cam-01\s+unmarked\s+recorded (\S+)\s+due (\S+)", out)
    assert due, out
    recorded, deleted = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in due.groups())
    assert deleted - recorded == timedelta(days=31)
    assert re.search(r"\[audit\] \d+ audit record\(s\) \(.*search.*upload.*\); hash chain intact", out), out
    # Its last lines say how to see the same footage in the web application.
    assert out.rstrip().splitlines()[-1].strip().endswith("demo --serve"), out[-400:]


def test_demo_serve_keeps_the_server_up_with_an_account_per_role_until_interrupted(tmp_path):
    import signal
    import subprocess
    import sys

    import requests

    env = dict(os.environ, BWV_HOME=str(tmp_path / "demo"), PYTHONUNBUFFERED="1")
    bwv = Path(sys.executable).with_name("bwv")
    proc = subprocess.Popen([str(bwv), "demo", "--serve", "--seconds", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("serving until interrupted"):
                break
        out = "\n".join(lines)
        assert "demo succeeded" in out, out[-2000:]
        web = [l.removeprefix("web: ") for l in lines if l.startswith("web: ")]
        users = [l.split()[1:] for l in lines if l.startswith("user: ")]
        assert len(web) == 1 and web[0].endswith("/ui/")
        assert sorted(role for role, _, _ in users) == sorted(
            ["officer", "supervisor", "evidence_officer", "disclosure_officer", "auditor", "admin"])
        for role, username, password in users:
            session = requests.Session()
            form = session.get(web[0] + "signin", timeout=30)
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            start = session.post(web[0] + "signin", timeout=30,
                                 data={"csrf": csrf, "username": username, "password": password, "next": "/ui/"})
            assert start.status_code == 200 and f"Signed in as <strong>{username}</strong>" in start.text, role
        public = [l.removeprefix("public: ") for l in lines if l.startswith("public: ")]
        assert requests.get(public[0], timeout=30).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert "[serve] stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
