"""Tools for the evidence-server tests: a real server process, a minimal tus client, sealed segments.

The client here is written from the tus 1.0 specification with nothing but
the standard library, so the tests exercise the published protocol rather
than the server's own code.  `DeviceChain` seals segments as a camera does
(one chain per device), and lets a test seal segments it then withholds,
forks or damages.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit

from openbwv.enrol import load_device
from openbwv.home import Home
from openbwv.sealed.keys import DeviceKey, ServerPublicKey
from openbwv.sealed.layout import HASH_LEN, RECORD_INFO, RECORD_MEDIA
from openbwv.sealed.receipt import Receipt, ReceiptVerifier
from openbwv.sealed.writer import SegmentWriter
from kit import dies_with_parent  # tests/ is on the path (pytest's pythonpath, the bench's loader)

BWV = str(Path(sys.executable).with_name("bwv"))
START_TIMEOUT_S = 20


# --------------------------------------------------------------------------- the server process
class ServerProcess:
    """`bwv server` in a subprocess, on an ephemeral loopback port, with BWV_HOME = `home`."""

    def __init__(self, home: Path, *args: str, log: Path | None = None):
        self.home = Path(home)
        self.args = args
        self.log_path = log or self.home / f"server-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.stdout_lines: list[str] = []

    def start(self) -> "ServerProcess":
        env = dict(os.environ, BWV_HOME=str(self.home), PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BWV, "server", "--listen", "127.0.0.1:0", *self.args],
            stdout=subprocess.PIPE, stderr=self._log, env=env, text=True, preexec_fn=dies_with_parent(),
        )
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        line = first[0].strip() if first else ""
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"server did not start: first line {line!r}; log:\n{self.log()}")
        self.stdout_lines.append(line)
        self.url = line.removeprefix("listening on ")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; return the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.stdout_lines += out.splitlines()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as after a power cut or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        # `with ServerProcess(...).start() as s:` is written too: a second start would leave the first
        # server running unseen, with nothing to stop it (ten were found alive after a passing run).
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


# --------------------------------------------------------------------------- sealed segments
@dataclass(frozen=True)
class Segment:
    """A sealed file and what a dock would announce about it."""

    path: Path
    device_id: str
    sequence: int
    segment_hash: str
    prev_hash: str

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def metadata(self, **changes: str) -> dict[str, str]:
        meta = {
            "filename": self.path.name,
            "device_id": self.device_id,
            "sequence": str(self.sequence),
            "segment_hash": self.segment_hash,
        }
        meta.update(changes)
        return meta


class DeviceChain:
    """Seals segments as one camera would: sequence numbers from 1, each linked to the one before."""

    def __init__(self, home: Home, device_id: str, directory: Path, *, key: DeviceKey | None = None):
        enrolled_key, self.server = load_device(home, device_id)
        self.key = key or enrolled_key
        self.directory = Path(directory)
        self.sequence = 0
        self.prev_hash = bytes(HASH_LEN)
        self._n = 0

    def _seal(self, sequence: int, prev_hash: bytes, payload_bytes: int) -> Segment:
        self._n += 1
        where = self.directory / f"{self._n:03d}"
        where.mkdir(parents=True)
        w = SegmentWriter(where, self.key, self.server, clip_id=uuid.uuid4(), segment_index=0, sequence=sequence,
                          prev_hash=prev_hash, start_utc_us=1_700_000_000_000_000 + sequence * 10_000_000,
                          chunk_limit=64 * 1024)
        w.append(RECORD_INFO, json.dumps({"codec": "test"}).encode())
        w.append(RECORD_MEDIA, os.urandom(payload_bytes))
        info = w.seal(end_utc_us=w.preamble.start_utc_us + 10_000_000)
        return Segment(info.path, self.key.device_id, sequence, info.segment_hash.hex(), prev_hash.hex())

    def seal(self, payload_bytes: int = 150_000) -> Segment:
        """The device's next segment."""
        seg = self._seal(self.sequence + 1, self.prev_hash, payload_bytes)
        self.sequence, self.prev_hash = seg.sequence, bytes.fromhex(seg.segment_hash)
        return seg

    def fork(self, payload_bytes: int = 150_000) -> Segment:
        """A different segment in the place of the last one sealed (same sequence, same predecessor)."""
        prev = bytes(HASH_LEN) if self.sequence == 1 else None
        if prev is None:
            raise ValueError("fork() is for the first segment; use a second DeviceChain for later forks")
        return self._seal(self.sequence, prev, payload_bytes)


# --------------------------------------------------------------------------- a minimal tus client
@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes = b""
    sent: int = 0  # body bytes this request put on the wire

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The reason of an error reply (every error is JSON {"error": ...})."""
        assert self.headers.get("Content-Type", "").startswith("application/json"), (self.status, self.body)
        doc = self.json()
        assert set(doc) == {"error"} and doc["error"], doc
        return doc["error"]

    @property
    def receipt(self) -> bytes:
        header = self.headers.get("Bwv-Receipt")
        assert header, f"no Bwv-Receipt in a {self.status} reply: {dict(self.headers)}"
        return base64.b64decode(header)


def tus_metadata(meta: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())


@dataclass
class TusSession:
    """Speaks tus 1.0 (creation, checksum, termination) to one server as one dock."""

    url: str
    token: str | None
    extra_headers: dict[str, str] = field(default_factory=dict)
    bytes_sent: int = 0

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname, parts.port

    def headers(self, **more: str) -> dict[str, str]:
        h = {"Tus-Resumable": "1.0.0", **self.extra_headers}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        h.update({k.replace("_", "-"): v for k, v in more.items()})
        return h

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Reply:
        conn = http.client.HTTPConnection(*self.host_port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers if headers is not None else self.headers())
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.bytes_sent += len(body)
        return Reply(resp.status, resp.headers, data, len(body))

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def create(self, seg: Segment | None = None, *, metadata: dict[str, str] | None = None,
               length: int | None = None) -> Reply:
        meta = metadata if metadata is not None else seg.metadata()
        return self.request("POST", "/tus/", self.headers(Upload_Length=str(length if length is not None else seg.size),
                                                          Upload_Metadata=tus_metadata(meta)))

    def head(self, location: str) -> Reply:
        return self.request("HEAD", location)

    def offset(self, location: str) -> int:
        reply = self.head(location)
        assert reply.status == 200, (reply.status, reply.headers.get("Bwv-Error"))
        assert reply.headers["Cache-Control"] == "no-store"
        return int(reply.headers["Upload-Offset"])

    def patch(self, location: str, offset: int, data: bytes, *, checksum: str | None = "sha256",
              wrong_checksum: bool = False) -> Reply:
        h = self.headers(Upload_Offset=str(offset), Content_Type="application/offset+octet-stream")
        if checksum:
            digest = hashlib.new(checksum, data + (b"x" if wrong_checksum else b"")).digest()
            h["Upload-Checksum"] = f"{checksum} {base64.b64encode(digest).decode()}"
        return self.request("PATCH", location, h, data)

    def send(self, location: str, data: bytes, *, start: int = 0, chunk: int = 64 * 1024,
             checksum: str | None = "sha256", stop_at: int | None = None) -> Reply:
        """PATCH `data[start:]` in chunks; return the last reply."""
        offset = start
        end = len(data) if stop_at is None else stop_at
        reply = None
        while offset < end:
            piece = data[offset : min(offset + chunk, end)]
            reply = self.patch(location, offset, piece, checksum=checksum)
            assert reply.status == 204, (reply.status, reply.body)
            offset = int(reply.headers["Upload-Offset"])
        return reply

    def upload(self, seg: Segment, **kw) -> Reply:
        """Create and send a whole segment; the last PATCH's reply carries the receipt."""
        created = self.create(seg)
        assert created.status == 201, (created.status, created.body)
        return self.send(created.headers["Location"], seg.data, **kw)

    def open_patch(self, location: str, offset: int, total: int, first: bytes,
                   headers: dict[str, str] | None = None) -> socket.socket:
        """Start a PATCH of `total` body bytes and send only `first`: a transfer still in flight."""
        h = self.headers(Upload_Offset=str(offset), Content_Type="application/offset+octet-stream",
                         Content_Length=str(total), **(headers or {}))
        head = f"PATCH {location} HTTP/1.1\r\nHost: {self.host_port[0]}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        sock = socket.create_connection(self.host_port, timeout=30)
        sock.sendall(head.encode() + first)
        self.bytes_sent += len(first)
        return sock


def wait_for_streaming(url: str, count: int, timeout_s: float = 10) -> None:
    """Until the server reports `count` PATCH bodies streaming (health's uploads_in_progress)."""
    probe = TusSession(url, None)
    deadline = time.monotonic() + timeout_s
    while True:
        now = probe.get("/api/v1/health").json()["uploads_in_progress"]
        if now == count:
            return
        assert time.monotonic() < deadline, f"{now} uploads in progress, waited for {count}"
        time.sleep(0.02)


def read_reply(sock: socket.socket) -> Reply:
    """The HTTP reply on a socket opened by `open_patch`."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    body = resp.read()
    sock.close()
    return Reply(resp.status, resp.headers, body)


def verifier(home: Home) -> ReceiptVerifier:
    pub = ServerPublicKey.load(home.server_public_key)
    return ReceiptVerifier(pub.receipt_verifier(), pub.key_id)


def check_receipt(home: Home, data: bytes, seg: Segment) -> Receipt:
    """The receipt verifies with the server's key, as a camera checks it, and names exactly `seg`."""
    receipt = verifier(home).check_for(data, device_id=seg.device_id, sequence=seg.sequence,
                                       segment_hash=bytes.fromhex(seg.segment_hash))
    assert receipt.size == seg.size
    return receipt


def blob_path(home: Home, segment_hash: str) -> Path:
    return home.server_dir / "store" / segment_hash[:2] / segment_hash[2:4] / f"{segment_hash}.bwv"


def partial_files(home: Home) -> list[Path]:
    return sorted((home.server_dir / "uploads").glob("*"))


def staff_token(home: Home | Path, username: str, role: str, *, password: str = "correct horse battery") -> str:
    """A staff account with `role` and a bearer token for it, made straight in the server's database
    (as `bwv user add` and `bwv user token` do).  A cheap scrypt cost keeps tests fast; the server
    reads the cost from each stored hash, so logins work the same."""
    from openbwv.server import users
    from openbwv.server.service import open_metadata

    home = home if isinstance(home, Home) else Home(Path(home))
    db = open_metadata(home)
    try:
        with db.transaction() as conn:
            if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone() is None:
                users.add_user(conn, username, role, password, actor="test:setup", kdf_n=2**10)
            token, _ = users.issue_token(conn, username, actor="test:setup")
        return token
    finally:
        db.close()
