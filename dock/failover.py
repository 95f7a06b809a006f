"""A dock with several evidence servers: each bay's uploads go to its home node, and elsewhere when it fails.

`FleetUploader` owns one `TusUploader` per server URL (each with its own
HTTP connections) and one `ServerPool` (dock/servers.py) that every bay
shares; `for_bay(i, name)` gives bay i its own `BayUploader`, which is the
`Uploader` the bay calls.  For one segment it tries the servers in the
pool's order: an `UploadUnavailable` from one (refused, timed out, 5xx,
507, 423) marks that server down and moves on to the next at once; only
when every server has failed does the bay see `UploadUnavailable` and back
off as it does with a single server.  A server that has failed is asked
`GET /api/v1/health` (bounded by a few seconds) before it is given an upload
again, so a node that accepts connections but hangs costs a bay that short
check, not a whole read timeout, each time its pass-over ends.
`UploadRejected` is never failed
over: a segment a server refuses for good (bad signature, a fork) is
refused by the fleet.

The upload URL of a segment is remembered in one `ResumeState` for the whole
dock, so the node failed over to is first asked (HEAD) about the same upload
path: nodes sharing their upload store continue from the durable offset;
a node that does not know it (404/410) gets the upload again from byte 0.
Either way the camera frees the segment only against the signed receipt
that comes back, which it verifies itself.

Every change of server is logged (`event=upload_server bay=... server=...
reason=home|failover|home_back previous=... error=...`) and shown in the
bay's status (`server`) and progress line.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Sequence

from .backoff import Backoff
from .errors import UploadUnavailable
from .events import log_event
from .servers import ServerPool, server_label
from .tus_upload import ResumeState, TusUploader
from .upload import ProgressCallback

log = logging.getLogger("bwv.dock.fleet")

# How long a failed server is passed over: short, so a restarted node gets its bays back within a minute.
SERVER_BACKOFF = Backoff(initial_s=2.0, factor=2.0, maximum_s=60.0)
# A server that failed is asked GET /api/v1/health, bounded by this, before it gets an upload again.
HEALTH_TIMEOUT_S = 5.0


class FleetUploader:
    """Uploads to whichever of several evidence servers is up; a `BayUploader` per bay."""

    def __init__(self, server_urls: Sequence[str], token: str, *, state_path: Path | None = None,
                 server_backoff: Backoff = SERVER_BACKOFF, health_timeout: float = HEALTH_TIMEOUT_S,
                 make_uploader: Callable[..., TusUploader] = TusUploader, **tus_options):
        self.pool = ServerPool(server_urls, backoff=server_backoff)
        self.health_timeout = health_timeout
        self.resume = ResumeState(state_path)
        self.nodes = {url: make_uploader(url, token, resume=self.resume, **tus_options) for url in self.pool.urls}
        self._default: BayUploader | None = None
        self._lock = threading.Lock()

    def for_bay(self, index: int, name: str) -> "BayUploader":
        return BayUploader(self, index, name)

    def upload(self, path: Path, device_id: str, sequence: int, segment_hash: str,
               progress: ProgressCallback) -> bytes:
        """As an `Uploader` shared by every bay (no bay number): bay 0's order of servers."""
        with self._lock:
            if self._default is None:
                self._default = self.for_bay(0, "-")
        return self._default.upload(path, device_id, sequence, segment_hash, progress)

    @property
    def bytes_sent(self) -> int:
        return sum(n.bytes_sent for n in self.nodes.values())


class BayUploader:
    """One bay's view of the fleet: its home server, the server it uses now, and why."""

    def __init__(self, fleet: FleetUploader, index: int, name: str):
        self.fleet = fleet
        self.index = index
        self.name = name
        self.home = fleet.pool.home(index)
        self.server: str | None = None  # the server of the current (or last) upload
        self.switches = 0

    @property
    def server_label(self) -> str | None:
        return server_label(self.server) if self.server else None

    def upload(self, path: Path, device_id: str, sequence: int, segment_hash: str,
               progress: ProgressCallback) -> bytes:
        pool = self.fleet.pool
        errors: list[str] = []
        for url in pool.candidates(self.index):
            node = self.fleet.nodes[url]
            if pool.has_failed(url):
                why = node.unhealthy(self.fleet.health_timeout)  # not back yet: do not hang a bay on it
                if why is not None:
                    self._failed(url, why, device_id, sequence, errors)
                    continue
            self._use(url, device_id, sequence, errors[-1] if errors else None)
            try:
                receipt = node.upload(path, device_id, sequence, segment_hash, progress)
            except UploadUnavailable as e:
                self._failed(url, str(e), device_id, sequence, errors)
                continue
            if pool.mark_ok(url):
                log_event("server_back", bay=self.name, server=server_label(url))
            return receipt
        raise UploadUnavailable("no evidence server can take the upload now: " + "; ".join(errors))

    def _failed(self, url: str, error: str, device_id: str, sequence: int, errors: list[str]) -> None:
        passed_over = self.fleet.pool.mark_failed(url, error)
        errors.append(f"{server_label(url)}: {error}")
        log_event("server_unavailable", level=logging.WARNING, bay=self.name, server=server_label(url),
                  device=device_id, sequence=sequence, passed_over_s=round(passed_over, 1), error=error)

    def _use(self, url: str, device_id: str, sequence: int, error: str | None) -> None:
        """Note (and log) the server this bay is about to use, when it is not the one it used last."""
        if url == self.server:
            return
        previous, self.server = self.server, url
        if previous is None and url == self.home:
            reason = "home"
        elif url == self.home:
            reason = "home_back"
        else:
            reason = "failover"
        if previous is not None:
            self.switches += 1
        log_event("upload_server", level=logging.WARNING if reason == "failover" else logging.INFO,
                  bay=self.name, server=server_label(url), reason=reason,
                  previous=server_label(previous) if previous else None,
                  home=server_label(self.home), device=device_id, sequence=sequence,
                  error=error or (self._why_not_home() if reason == "failover" else None))

    def _why_not_home(self) -> str:
        last = next((h.last_error for h in self.fleet.pool.health() if h.url == self.home), None)
        return f"home server passed over after failing: {last}" if last else "home server passed over"


__all__ = ["BayUploader", "FleetUploader", "SERVER_BACKOFF"]
