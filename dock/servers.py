"""Which evidence server each bay uploads to, when a dock is given several: assignment and failover.

Pure logic (URLs, failures and a clock in; an ordered list of servers out), so
the rules can be read and tested without a network:

* **Stable assignment.**  Bay number i (0-based, in the bays file's order)
  has server i mod n as its *home*: a rack of bays spreads evenly over the
  nodes, and each bay keeps talking to the same node, so a node's upload
  partials and connections stay warm.
* **Failover.**  When an upload to a server fails in a way that says "not
  now" (refused, timed out, 5xx, 507 full, 423 locked) that server is marked
  *down* for a backoff that grows with its consecutive failures (the dock's
  `Backoff`), shared by every bay: one bay's discovery spares the others the
  wait.  A bay tries the servers that are not down in ring order from its
  home, then, if all are down, every server in the order they come back.
* **Return home.**  A success clears the server's failures.  Each new
  segment starts at the bay's home again once the home is no longer marked
  down, so a node that comes back gets its bays back without an operator.

Nothing here decides what to do with a camera's files: only receipts free
footage, whichever node signed them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import urlsplit

from .backoff import Backoff


def check_server_url(url: str) -> str:
    """The URL, normalised (no trailing slash), or ValueError saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"server URL {url!r} must be http://HOST[:PORT][/PATH] or https://...")
    if parts.query or parts.fragment:
        raise ValueError(f"server URL {url!r} must not carry a query or fragment")
    return url.rstrip("/")


def server_label(url: str) -> str:
    """host:port, what logs and the progress line show for a server."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}{parts.path.rstrip('/')}"


@dataclass
class ServerHealth:
    url: str
    failures: int = 0  # consecutive failed attempts
    down_until: float = 0.0  # monotonic time; 0: not marked down
    last_error: str | None = None


class ServerPool:
    """The dock's evidence servers and what the dock has learnt of their health.  Thread-safe."""

    def __init__(self, urls: Sequence[str], *, backoff: Backoff = Backoff(initial_s=2.0, maximum_s=60.0),
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] | None = None):
        normalised = [check_server_url(u) for u in urls]
        if not normalised:
            raise ValueError("a dock needs at least one evidence server URL")
        dupes = sorted({u for u in normalised if normalised.count(u) > 1})
        if dupes:
            raise ValueError(f"evidence server URL given twice: {', '.join(dupes)}")
        self.urls = tuple(normalised)
        self.backoff = backoff
        self._clock = clock
        self._rand = rand
        self._health = {u: ServerHealth(u) for u in self.urls}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.urls)

    def home(self, bay_index: int) -> str:
        """The server a bay uploads to while it is up: bay i -> server i mod n."""
        return self.urls[bay_index % len(self.urls)]

    def candidates(self, bay_index: int) -> list[str]:
        """Servers to try for the next upload of this bay, best first.

        Up servers in ring order from the bay's home; then the down ones,
        soonest back first, so that with every server down the bay still
        tries them all before it waits.
        """
        start = bay_index % len(self.urls)
        ring = self.urls[start:] + self.urls[:start]
        now = self._clock()
        with self._lock:
            up = [u for u in ring if self._health[u].down_until <= now]
            down = sorted((u for u in ring if self._health[u].down_until > now),
                          key=lambda u: self._health[u].down_until)
        return up + down

    def is_down(self, url: str) -> bool:
        with self._lock:
            return self._health[url].down_until > self._clock()

    def has_failed(self, url: str) -> bool:
        """The server's last attempt failed (it may be past its pass-over, not yet known to be back)."""
        with self._lock:
            return self._health[url].failures > 0

    def mark_failed(self, url: str, error: str) -> float:
        """Record a failed attempt; returns how long (s) the server is now passed over."""
        with self._lock:
            h = self._health[url]
            delay = self.backoff.delay(h.failures) if self._rand is None else \
                self.backoff.delay(h.failures, self._rand)
            h.failures += 1
            h.down_until = self._clock() + delay
            h.last_error = error
            return delay

    def mark_ok(self, url: str) -> bool:
        """Record a success; True if the server had been failing (it is back)."""
        with self._lock:
            h = self._health[url]
            was_failing = h.failures > 0
            h.failures, h.down_until, h.last_error = 0, 0.0, None
            return was_failing

    def health(self) -> list[ServerHealth]:
        with self._lock:
            return [ServerHealth(h.url, h.failures, h.down_until, h.last_error) for h in self._health.values()]


__all__ = ["ServerHealth", "ServerPool", "check_server_url", "server_label"]
