"""`bwv demo`: the main job end to end on embedded defaults, narrated.

The evidence server runs in the background (SQLite, local disk) as its own
process; the emulated camera records a clip (synthetic picture, mock GPIO
pins, hardware trace) with sound (a synthetic microphone clicking as the
picture flashes white, every two seconds); the camera is docked: it serves the dock link on a pty
while the dock uploads its segments over tus and hands back the server's
receipts, against which the camera frees its storage; finally everything the
server holds is verified and the clip opened as the server would; a
disclosure officer logs in and finds the clip again by a place on its route
and a time window, as a subject access request would; the demo ends with the
retention schedule of what it uploaded and a check of the audit trail.
Everything is left under BWV_HOME for inspection.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from .enrol import device_storage, enrol_device, ensure_server_keys, load_device
from .home import Home
from .hw.trace_analysis import beeps, flash_stats, read_trace
from .opener import open_paths
from .registry import DeviceRegistry
from .sealed.keys import ServerKeyPair
from .verification import verify_paths

DEMO_DEVICE = "demo-cam-01"
DEMO_DOCK = "demo-dock"
DEMO_DISCLOSURE = "demo-disclosure"


def say(step: str, text: str) -> None:
    print(f"[{step}] {text}", flush=True)


class BackgroundServer:
    """`bwv server` as its own process on an ephemeral loopback port."""

    def __init__(self, home: Home, listen: str = "127.0.0.1:0"):
        self.home = home
        self.listen = listen
        self.log_path = home.root / "demo" / "server.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> "BackgroundServer":
        exe = Path(sys.executable).with_name("bwv")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "openbwv.cli"]
        env = dict(os.environ, BWV_HOME=str(self.home.root), PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*cmd, "server", "--listen", self.listen, "--reserve-mb", "64"],
                                     stdout=subprocess.PIPE, stderr=self._log, env=env, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"the evidence server did not start; see {self.log_path}")
        self.url = line.removeprefix("listening on ")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def dock_token(home: Home) -> str:
    from .server.auth import DockTokens
    from .server.service import open_metadata

    db = open_metadata(home)
    try:
        return DockTokens(db).add_dock(DEMO_DOCK, rotate=True)
    finally:
        db.close()


def demo_account(home: Home, username: str, role: str, full_name: str) -> str:
    """A staff account for the demo (created, or its password reset and re-enabled, each run); its password."""
    import secrets

    from .server import users
    from .server.service import open_metadata

    password = secrets.token_urlsafe(18)
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                users.change_user(conn, username, actor="local:bwv-demo", password=password, disabled=False)
            else:
                users.add_user(conn, username, role, password, full_name=full_name, actor="local:bwv-demo")
    finally:
        db.close()
    return password


def disclosure_password(home: Home) -> str:
    """The disclosure officer who finds the demo's clip again."""
    from .server import users

    return demo_account(home, DEMO_DISCLOSURE, users.DISCLOSURE_OFFICER, "Demo disclosure officer")


def role_accounts(home: Home) -> list[tuple[str, str, str]]:
    """One account per staff role for `bwv demo --serve`: (role, username, password).  The demo officer
    wears the demo camera (assigned from the start of time), so their own footage is the demo's clip."""
    from datetime import datetime, timezone

    from .server import lifecycle, users
    from .server.service import open_metadata

    names = {users.OFFICER: "demo-officer", users.SUPERVISOR: "demo-supervisor",
             users.EVIDENCE_OFFICER: "demo-evidence", users.DISCLOSURE_OFFICER: DEMO_DISCLOSURE,
             users.AUDITOR: "demo-auditor", users.ADMIN: "demo-admin"}
    out = [(role, name, demo_account(home, name, role, f"Demo {role.replace('_', ' ')}"))
           for role, name in names.items()]
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            if not lifecycle.has_assignment(conn, DEMO_DEVICE, names[users.OFFICER]):
                lifecycle.assign_device(conn, DEMO_DEVICE, names[users.OFFICER], 0, None, actor="local:bwv-demo",
                                        at=datetime.now(timezone.utc).isoformat())
    finally:
        db.close()
    return out


def serve(home: Home, listen: str) -> None:
    """Keep the evidence server running with an account per role, printing how to reach it, until
    interrupted (Ctrl-C or SIGTERM)."""
    import signal

    accounts = role_accounts(home)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with BackgroundServer(home, listen) as server:
            print(f"web: {server.url}/ui/", flush=True)
            print(f"public: {server.url}/ui/public/request", flush=True)
            for role, username, password in accounts:
                print(f"user: {role} {username} {password}", flush=True)
            print("serving until interrupted (Ctrl-C); the passwords change on every run", flush=True)
            while not stop.wait(1.0):
                if server.proc.poll() is not None:
                    raise RuntimeError(f"the evidence server stopped; see {server.log_path}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("serve", "stopped")


def login(server_url: str, username: str, password: str) -> str:
    import requests

    resp = requests.post(f"{server_url}/api/v1/login", json={"username": username, "password": password}, timeout=10)
    if not resp.ok:
        raise RuntimeError(f"demo: {username} could not log in: {resp.status_code} {resp.text[:200]}")
    return resp.json()["token"]


def show_retention_and_audit(home: Home, clip_id: str) -> bool:
    """What happens next to the clip (its due date), and whether the audit trail holds together."""
    from .server import audit
    from .server.config import load_retention
    from .server.lifecycle_command import schedule_lines
    from .server.service import open_metadata, sign_audit_head

    policy = load_retention(home.root / "config.toml")
    db = open_metadata(home)
    try:
        lines = schedule_lines(db, policy, days=max(policy.categories.values()) + 1)
        ours = [line for line in lines if clip_id in line]
        say("retention", f"retention schedule ({', '.join(f'{k}: {v} days' for k, v in sorted(policy.categories.items()))});"
                         f" {len(lines)} clip(s) held, ours:")
        for line in ours:
            say("retention", line.strip())
        keys = ServerKeyPair.load(home.server_keys_dir)
        # The decrypts above came after the server's last checkpoint: sign the head once more, as a
        # server does at its next interval, so the whole trail of this run is under a signature.
        sign_audit_head(db, keys, home.server_dir / "audit-checkpoints.jsonl")
        reader = db.reader()
        report = audit.verify(reader, keys.public.receipt_verifier(),
                              external=audit.read_checkpoint_file(home.server_dir / "audit-checkpoints.jsonl"))
        actions = sorted({r.action for r in audit.query(reader, limit=10_000)})
        say("audit", f"{report.records} audit record(s) ({', '.join(actions)}); hash chain "
                     f"{'intact' if report.ok else 'BROKEN'}, signed through record {report.signed_through}")
        for p in report.problems:
            say("audit", f"PROBLEM {p.message}")
    finally:
        db.close()
    return bool(ours) and report.ok


def find_by_place_and_time(server_url: str, token: str, clip_id: str, gnss, walk_started: float,
                           recorded: tuple[float, float]) -> bool:
    """As a member of the public's request would: where they met the officer and about when, no camera id.

    The place is worked out from the route the emulated wearer walked (its start, speed and heading,
    and when the walk began), not read back from the server, so finding the clip shows that what the
    camera sealed is where the wearer was."""
    import requests

    from .server.geoindex import destination, iso_utc

    mid = (recorded[0] + recorded[1]) / 2
    lat, lon = destination(gnss.start_lat, gnss.start_lon, gnss.heading_deg, gnss.speed_mps * (mid - walk_started))
    mid_us = int(mid * 1_000_000)
    params = {"lat": f"{lat:.6f}", "lon": f"{lon:.6f}", "radius_m": "25",
              "from": iso_utc(mid_us - 120_000_000), "to": iso_utc(mid_us + 120_000_000)}
    resp = requests.get(f"{server_url}/api/v1/search", params=params, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})
    if not resp.ok:
        say("search", f"the search was refused: {resp.status_code} {resp.text[:200]}")
        return False
    clips = resp.json().get("clips", [])
    hit = [c for c in clips if c["clip_id"] == clip_id]
    say("search", f"the wearer walked {gnss.speed_mps:g} m/s heading {gnss.heading_deg:g} deg from "
                  f"{gnss.start_lat},{gnss.start_lon}; mid-incident they were near {params['lat']},{params['lon']}: "
                  f"searching within 25 m from {params['from']} to {params['to']}: {len(clips)} clip(s) found"
                  + (f", ours among them ({hit[0]['matching_fixes']} sealed fixes matched, the closest "
                     f"{hit[0]['closest_m']:.1f} m away)" if hit else ", NOT ours"))
    return bool(hit)


def subject_access_export(server_url: str, token: str, clip_id: str, recorded: tuple[float, float]) -> bool:
    """The footage goes to the person filmed: the disclosure officer logs their request for the window,
    which holds the clip, and exports it redacted (faces blurred but the requester's, the sound kept or
    silenced as the redaction decides), with its signed manifest.  True if the export names the clip and
    its hashes."""
    import requests

    from .server.geoindex import iso_utc

    auth = {"Authorization": f"Bearer {token}"}
    start_us, end_us = int(recorded[0] * 1e6), int(recorded[1] * 1e6)
    logged = requests.post(f"{server_url}/api/v1/requests", headers=auth, timeout=30, json={
        "requester": "A. Member of the public", "description": "stopped by an officer wearing a camera (demo)",
        "from": iso_utc(start_us - 60_000_000), "to": iso_utc(end_us + 60_000_000), "contact": "demo@example.org"})
    if logged.status_code != 201:
        say("access", f"the request was refused: {logged.status_code} {logged.text[:200]}")
        return False
    request_id = logged.json()["request"]
    say("access", f"subject access request {request_id} logged; it holds {len(logged.json()['held_clips'])} clip(s) "
                  f"recorded in its window; answer due {logged.json()['due']}")
    t0 = time.monotonic()
    made = requests.post(f"{server_url}/api/v1/requests/{request_id}/exports", headers=auth, timeout=900,
                         json={"clips": [clip_id]})
    if made.status_code != 201:
        say("access", f"the export was refused: {made.status_code} {made.text[:300]}")
        return False
    manifest = made.json()["manifest"]
    entry = next((c for c in manifest["clips"] if c["clip_id"] == clip_id), None)
    if entry is None:
        say("access", "the export's manifest does not name the clip")
        return False
    report = entry.get("redaction", {})
    tracks = report.get("tracks") or []
    sound = "removed" if report.get("audio_removed") else "kept (no range silenced)"
    say("access", f"export {manifest['export']} made in {time.monotonic() - t0:.1f} s: {entry['output']} "
                  f"(sha256 {entry['output_sha256'][:16]}), {report.get('frames', '?')} frames examined for faces, "
                  f"{len(tracks) if isinstance(tracks, list) else tracks} face track(s) blurred; sound {sound}; "
                  f"manifest signed by the server key ({made.json()['files'].get('manifest.json', 'manifest.json')})")
    return bool(entry.get("output_sha256"))


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo: {what} did not happen within {timeout:g} s")
        time.sleep(0.02)


def run(home: Home, *, seconds: float = 12.0, serve_on: str | None = None) -> int:
    from .dock.bay import Bay
    from .dock.config import BayConfig
    from .dock.errors import LinkTimeout
    from .dock.ports import PTY_PREFIX
    from .dock.tus_upload import TusUploader
    from .firmware.camera import Camera
    from .firmware.config import load_config
    from .firmware.docklink import CameraStatus, DockLink, DockPortService
    from .firmware.state import Mode
    from .hw import open_hardware
    from .hw.config import AudioConfig, CameraConfig, HardwareConfig

    t0 = time.monotonic()
    print(f"OpenBWV demo in {home.root}")
    home.root.mkdir(parents=True, exist_ok=True)
    work = home.root / "demo"
    work.mkdir(exist_ok=True)
    pub = ensure_server_keys(home)
    say("keys", f"evidence server key {pub.key_id.hex()} (ML-KEM-768+X25519 for footage, Ed25519 for receipts)")
    enrol_device(home, DEMO_DEVICE)
    say("enrol", f"camera {DEMO_DEVICE} enrolled: it holds its signing key and the server's public key only")
    token = dock_token(home)
    password = disclosure_password(home)

    with BackgroundServer(home) as server:
        say("server", f"evidence server listening on {server.url} (SQLite + local disk; log {server.log_path})")
        storage = device_storage(home, DEMO_DEVICE)
        before = storage.head.sequence
        _, server_pub = load_device(home, DEMO_DEVICE)
        tty = work / "bay-1.tty"
        # The bay owns its end of the serial link (in emulation it creates the pty at `tty`):
        # made before the camera is docked, so the camera opens the bay's pty and no other.
        uploader = TusUploader(server.url, token, state_path=home.root / "dock" / "uploads.json")
        bay = Bay(BayConfig("bay-1", f"{PTY_PREFIX}{tty}", storage.directory), uploader, dock_id=DEMO_DOCK)
        clock_path = home.device_dir(DEMO_DEVICE) / "clock.json"
        trace_path = work / "hw-trace.jsonl"
        config = load_config(None, **{"prebuffer.seconds": 0, "video.segment_seconds": 4,
                                      "video.bitrate": 2_000_000})
        # A white flash and a click at every even second of the monotonic clock: the opened clip shows them in sync.
        hw_config = HardwareConfig(backend="emulated", camera=CameraConfig(source="synthetic", width=640, height=360,
                                                                           flash_period_s=2.0),
                                   audio=AudioConfig(source="synthetic", pattern="clicks", period_s=2.0),
                                   sound="buzzer", trace_path=trace_path)
        walk_started = time.time()  # the synthetic wearer sets off as the hardware opens
        with open_hardware(hw_config) as hw:
            holder: dict = {}
            link_service = DockPortService(str(tty), lambda port: DockLink(
                port, storage, server_pub, DEMO_DEVICE, clock_path,
                lambda: CameraStatus(firmware="openbwv-demo"),
                on_clock_set=lambda state: setattr(holder["camera"], "clock", state)))
            camera = Camera(config, hw, storage, on_mode=link_service.mode_changed)
            holder["camera"] = camera
            runner = threading.Thread(target=lambda: holder.setdefault("report", camera.run()), daemon=True)
            runner.start()
            camera.record(True, "demo")
            wait_until(lambda: camera.recording_started.is_set(), 30, "recording")
            recording_from = time.time()
            start = time.monotonic()
            wait_until(lambda: time.monotonic() - start >= seconds, seconds + 5, "recording")
            camera.record(False, "demo: end of incident")
            recorded = (recording_from, time.time())
            wait_until(lambda: camera.machine.mode is Mode.STANDBY, 30, "closing the clip")
            report = camera.report
            say("camera", f"emulated camera recorded a {seconds:.0f} s clip of synthetic 640x360 H.264 at 30 fps "
                          f"({report.recorded_frames} frames) with AAC-LC sound ({report.audio_packets} frames, "
                          f"48 kHz mono, from {camera.audio_source.name if camera.audio_source else 'no microphone'}"
                          f"): clip {report.clips[0]}")
            events = read_trace(trace_path)
            flashes = flash_stats(events, "record_led")
            say("camera", f"while recording the red circle flashed {flashes.cycles} times at "
                          f"{flashes.frequency_hz:.1f} Hz and it beeped {len(beeps(events))} times "
                          f"(hardware trace: {trace_path})")
            sealed = list(report.sealed)
            say("seal", f"{len(sealed)} segments sealed on the camera (chain #{before + 1}..#{storage.head.sequence})")
            for info in sealed:
                say("seal", f"  {info.path.name}  {info.path.stat().st_size / 1000:.0f} kB  "
                            f"{info.trailer.chunk_count} chunks  hash {info.segment_hash.hex()[:16]}")

            hw.emulator.set_docked(True)
            wait_until(lambda: camera.machine.mode is Mode.DOCKED, 10, "docking")
            say("dock", f"camera docked in bay-1 (serial link on {tty}, storage {storage.directory})")
            wait_until(lambda: link_service.sessions, 10, "the camera serving the dock link")
            session = None
            for attempt in range(1, 4):  # as the dock daemon does: a failed session is tried again
                try:
                    session = bay.run_session()
                    break
                except LinkTimeout as e:
                    say("dock", f"session {attempt} failed ({e}); trying again")
            if session is None:
                raise RuntimeError("demo: the dock could not talk to the camera")
            if session.clock is not None:
                say("dock", f"clock synced: camera was {session.clock.offset_us / 1000:+.1f} ms off "
                            f"(round trip {session.clock.rtt_us / 1000:.1f} ms)")
            say("dock", f"uploaded {len(session.uploaded)} segment(s) over tus to {server.url}; "
                        f"camera freed {len(session.freed)} against the server's signed receipts"
                        + (f"; refused: {session.refused}" if session.refused else ""))
            left = list(storage.directory.glob("*.bwv"))
            say("dock", f"camera storage now holds {len(left)} sealed segment(s): "
                        f"{'clear' if not left and session.clear else 'NOT clear'}")
            camera.stop()
            runner.join(30)
            link_service.close()
            bay.close()

        registry = DeviceRegistry(home.registry_dir)
        store = home.server_dir / "store"
        verified = verify_paths([store], registry)
        for p in verified.problems:
            say("verify", f"PROBLEM {p.line()}")
        held = [s for s in verified.segments if s.device_id == DEMO_DEVICE]
        say("verify", f"server holds {len(held)} segment(s) of {DEMO_DEVICE} "
                      f"(#{min(s.sequence for s in held)}..#{max(s.sequence for s in held)}), "
                      f"all verified with public keys only; {len(verified.problems)} problem(s)")
        staff_token = login(server.url, DEMO_DISCLOSURE, password)
        say("search", f"{DEMO_DISCLOSURE} (disclosure officer) logged in to the evidence server")
        found = find_by_place_and_time(server.url, staff_token, report.clips[0], hw_config.gnss, walk_started,
                                       recorded)
        disclosed = subject_access_export(server.url, staff_token, report.clips[0], recorded)

    keys = ServerKeyPair.load(home.server_keys_dir)
    new_hashes = {i.segment_hash for i in sealed}
    paths = [s.path for s in verified.segments if s.segment_hash in new_hashes]
    opened = open_paths(paths, registry, keys, work / "opened")
    from .cli import audit_local_decrypts

    audit_local_decrypts(home, opened, via="bwv demo")
    in_sync = False
    for clip in opened.clips:
        say("open", f"server decrypted clip {clip.clip_id}: {len(clip.segments)} segments, "
                    f"{clip.duration_s or 0:.1f} s -> {clip.mp4_path}")
        in_sync = _report_sync(clip.mp4_path)
    scheduled = show_retention_and_audit(home, report.clips[0])
    problems = len(verified.problems) + len(opened.problems) + len(opened.verify.problems)
    ok = (problems == 0 and len(opened.clips) == 1 and not left and session.clear
          and len(paths) == len(sealed) and found and disclosed and scheduled and in_sync)
    print(f"demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s; "
          f"everything is under {home.root}")
    if serve_on is not None:
        serve(home, serve_on)
    else:
        print("to see it in the web application (an account per role, the server kept running):")
        print(f"  BWV_HOME={home.root} {Path(sys.executable).with_name('bwv')} demo --serve")
    return 0 if ok else 1


def _report_sync(mp4_path) -> bool:
    """Say what the opened MP4 carries and how far apart each click and flash play; True if within a frame."""
    import av

    from .avsync import sync_offsets

    if mp4_path is None:
        say("open", "no MP4 was made: nothing to play")
        return False
    with av.open(str(mp4_path)) as c:
        tracks = [f"{s.type} {s.codec_context.name}" for s in c.streams]
    if not any(t.startswith("audio") for t in tracks):
        say("open", f"the opened clip has no sound track ({', '.join(tracks)})")
        return False
    try:
        offsets = sync_offsets(mp4_path)
    except AssertionError as e:
        say("open", f"could not measure the sync: {e}")
        return False
    worst = max(abs(o) for o in offsets) * 1000
    say("open", f"tracks: {', '.join(tracks)}; each flash and its click, made at the same instant, play "
                f"{', '.join(f'{o * 1000:+.0f}' for o in offsets)} ms apart (worst {worst:.0f} ms; one frame is 33 ms)")
    return worst <= 1000 / 30


__all__ = ["run", "DEMO_DEVICE"]
