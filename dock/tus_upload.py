"""The dock's HTTP uploader: tus 1.0 to the evidence server, resumable, checksummed.

Why our own small client rather than tuspy: the dock must bound every network
wait (a half-open connection must not freeze a bay), must understand the
server's dedupe answer (200 + receipt, nothing sent), and must remember upload
URLs across its own restarts so an interrupted segment resumes from the
server's durable offset.  tuspy is used in the tests as the independent
client that proves the server speaks plain tus.

Error mapping, which decides what the daemon does:

* unreachable, timeouts, 503, 507, 423, 5xx -> `UploadUnavailable`: back off
  and try again later; the camera's files are untouched.
* 400, 401, 403, 409 (fork), 413, 422 -> `UploadRejected`: this segment will
  not be accepted as it is; reported, never freed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from ..sealed.durable import atomic_write
from .errors import UploadRejected, UploadUnavailable
from .upload import ProgressCallback

log = logging.getLogger("bwv.dock.upload")

TUS_VERSION = "1.0.0"
DEFAULT_CHUNK = 4 * 1024 * 1024
RETRYABLE = {423, 500, 502, 503, 504, 507}
MAX_RESYNCS = 5


def _meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def _reason(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("error") or resp.reason)
    except ValueError:
        return resp.headers.get("Bwv-Error") or resp.reason or f"HTTP {resp.status_code}"


class ResumeState:
    """Segment hash -> the upload URL it is being sent to, kept across dock restarts.

    One per dock, shared by the uploaders of all its servers, so an upload
    begun on one node is found again when a bay fails over to another.  In a
    JSON file written atomically (or in memory when no path is given).
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._memory: dict[str, str] = {}

    def _read(self) -> dict[str, str]:
        if self.path is None or not self.path.exists():
            return self._memory
        try:
            return json.loads(self.path.read_text())
        except ValueError:
            log.warning("upload state %s unreadable; uploads restart from the server's offsets", self.path)
            return {}

    def get(self, segment_hash: str) -> str | None:
        with self._lock:
            return self._read().get(segment_hash)

    def remember(self, segment_hash: str, url: str | None) -> None:
        with self._lock:
            urls = dict(self._read())
            if url is None:
                urls.pop(segment_hash, None)
            else:
                urls[segment_hash] = url
            if self.path is None:
                self._memory = urls
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, json.dumps(urls, indent=1).encode())


class TusUploader:
    """Uploads sealed segments to one evidence server; safe to share between bays (threads)."""

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        state_path: Path | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        verify: bool | str = True,
        client_cert: tuple[str, str] | None = None,
        resume: "ResumeState | None" = None,
    ):
        if not server_url.startswith(("http://", "https://")):
            raise ValueError(f"server URL {server_url!r} must start with http:// or https://")
        self.base = server_url.rstrip("/") + "/"
        self.chunk_size = chunk_size
        self.timeout = (connect_timeout, read_timeout)
        self.resume = resume if resume is not None else ResumeState(state_path)
        self._local = threading.local()
        self._headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": TUS_VERSION}
        self._verify = verify
        self._cert = client_cert
        self.bytes_sent = 0  # all PATCH bytes, resent ones included (for the resume benchmark)

    # -- HTTP -------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers.update(self._headers)
            self._local.session = s
        return s

    def _request(self, method: str, url: str, **kw) -> requests.Response:
        try:
            # verify/cert per request: set on the session only, requests would let
            # REQUESTS_CA_BUNDLE in the environment override the force's own CA.
            return self._session().request(method, url, timeout=self.timeout, verify=self._verify, cert=self._cert, **kw)
        except requests.RequestException as e:
            self._local.session = None  # a broken connection: start clean next time
            raise UploadUnavailable(f"evidence server {self.base} unreachable: {type(e).__name__}: {e}") from None

    def _fail(self, resp: requests.Response, what: str) -> None:
        reason = _reason(resp)
        if resp.status_code in RETRYABLE:
            retry = resp.headers.get("Retry-After")
            raise UploadUnavailable(f"{what}: server busy or out of space ({resp.status_code} {reason})"
                                    + (f"; retry after {retry} s" if retry else ""))
        raise UploadRejected(f"{what}: refused by the server ({resp.status_code} {reason})")

    def unhealthy(self, timeout: float) -> str | None:
        """None if `GET /api/v1/health` answers 200 within `timeout` seconds; else what went wrong.

        Asked before a server that has failed is given an upload again: a node
        that accepts connections but hangs would otherwise hold a bay for a
        whole read timeout each time its pass-over ends."""
        try:
            resp = self._session().get(urljoin(self.base, "api/v1/health"), timeout=(timeout, timeout),
                                       verify=self._verify, cert=self._cert)
        except requests.RequestException as e:
            self._local.session = None
            return f"health check: {type(e).__name__}: {e}"
        return None if resp.status_code == 200 else f"health check: HTTP {resp.status_code} {_reason(resp)}"

    # -- the upload ----------------------------------------------------------------
    def upload(self, path: Path, device_id: str, sequence: int, segment_hash: str,
               progress: ProgressCallback) -> bytes:
        try:
            return self._upload(Path(path), device_id, sequence, segment_hash, progress)
        except UploadRejected:
            self.resume.remember(segment_hash, None)  # the server dropped it; a later try starts afresh
            raise

    def _upload(self, path: Path, device_id: str, sequence: int, segment_hash: str,
                progress: ProgressCallback) -> bytes:
        size = path.stat().st_size
        what = f"{device_id} #{sequence}"
        url = self.resume.get(segment_hash)
        offset = 0
        if url is not None and not url.startswith(self.base):
            # Begun on another node: the same upload path on this one.  A node that shares the
            # upload store answers with the durable offset; one that does not says 404.
            url = self._here(url)
            log.info("event=upload_resume_elsewhere device=%s sequence=%d url=%s", device_id, sequence, url)
        if url is not None:
            head = self._request("HEAD", url)
            if head.status_code == 200 and head.headers.get("Bwv-Receipt"):
                self.resume.remember(segment_hash, None)
                return base64.b64decode(head.headers["Bwv-Receipt"])
            if head.status_code in (200, 204):
                offset = int(head.headers.get("Upload-Offset", "0"))
                log.info("event=upload_resume device=%s sequence=%d offset=%d size=%d", device_id, sequence, offset, size)
            elif head.status_code in (404, 410):
                log.info("event=upload_restart device=%s sequence=%d server=%s reason=upload_unknown_here "
                         "status=%d", device_id, sequence, self.base, head.status_code)
                url = None
            else:
                self._fail(head, what)
        if url is None:
            resp = self._request("POST", urljoin(self.base, "tus/"), headers={
                "Upload-Length": str(size),
                "Upload-Metadata": _meta(filename=path.name, device_id=device_id, sequence=str(sequence),
                                         segment_hash=segment_hash),
            })
            if resp.status_code == 200 and resp.headers.get("Bwv-Receipt"):
                log.info("event=upload_skipped device=%s sequence=%d reason=already_held", device_id, sequence)
                progress(size)
                return base64.b64decode(resp.headers["Bwv-Receipt"])
            if resp.status_code != 201 or "Location" not in resp.headers:
                self._fail(resp, what)
            url = urljoin(self.base, resp.headers["Location"])
            self.resume.remember(segment_hash, url)
        receipt = self._send(url, path, size, offset, what, progress)
        self.resume.remember(segment_hash, None)
        if receipt is None:
            resp = self._request("GET", urljoin(self.base, f"api/v1/receipts/{device_id}/{sequence}"))
            if resp.status_code != 200:
                self._fail(resp, f"{what}: receipt")
            return resp.content
        return receipt

    def _here(self, url: str) -> str:
        """An upload URL of another node, moved onto this node (same path below the tus endpoint)."""
        path = urlsplit(url).path
        at = path.rfind("/tus/")
        return urljoin(self.base, path[at + 1:] if at >= 0 else path.lstrip("/"))

    def _send(self, url: str, path: Path, size: int, offset: int, what: str,
              progress: ProgressCallback) -> bytes | None:
        resyncs = 0
        receipt: bytes | None = None
        fd = os.open(path, os.O_RDONLY)

        def chunk(at: int) -> tuple[int, bytes, str]:
            data = os.pread(fd, self.chunk_size, at)
            return at, data, base64.b64encode(hashlib.sha256(data).digest()).decode()

        # The next chunk is read and hashed in a thread while this one is on the wire
        # (pread and hashlib release the GIL): the dock's own work overlaps the server's.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-read") as reader:
            ahead: Future | None = None
            try:
                # Until a receipt comes: a resumed upload with every byte already there but no
                # receipt (its ingest failed, say in a database outage) is finished by an empty
                # PATCH at the end, which the server answers by storing it.
                while offset < size or receipt is None:
                    at, data, digest = ahead.result() if ahead is not None else chunk(offset)
                    ahead = None
                    if at != offset:
                        at, data, digest = chunk(offset)
                    if offset + len(data) < size:
                        ahead = reader.submit(chunk, offset + len(data))
                    resp = self._request("PATCH", url, data=data, headers={
                        "Content-Type": "application/offset+octet-stream",
                        "Upload-Offset": str(offset),
                        "Upload-Checksum": f"sha256 {digest}",
                    })
                    self.bytes_sent += len(data)
                    if resp.status_code == 204:
                        offset = int(resp.headers["Upload-Offset"])
                        progress(offset)
                        if resp.headers.get("Bwv-Receipt"):
                            receipt = base64.b64decode(resp.headers["Bwv-Receipt"])
                        elif offset >= size and not data:
                            break  # the empty PATCH at the end brought no receipt: asked for below
                        continue
                    if resp.status_code in (409, 423, 460) and resyncs < MAX_RESYNCS:
                        # Offset disagreement, a concurrent request, or a damaged chunk: ask where we are.
                        resyncs += 1
                        head = self._request("HEAD", url)
                        if head.status_code not in (200, 204):
                            self._fail(head, what)
                        if head.headers.get("Bwv-Receipt"):
                            return base64.b64decode(head.headers["Bwv-Receipt"])
                        offset = int(head.headers.get("Upload-Offset", offset))
                        continue
                    self._fail(resp, what)
            finally:
                if ahead is not None:
                    ahead.cancel()
                reader.shutdown(wait=True)
                os.close(fd)
        return receipt
