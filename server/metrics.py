"""What a node is doing, for the force's monitoring: `/metrics` in Prometheus's text format, and the
per-dependency health that `/api/v1/health` reports.

Each `EvidenceService` owns its own `CollectorRegistry` rather than prometheus-client's global one:
tests and `bwv demo` run several servers in one process, and each node's figures must be its own.

Who may read `/metrics`: it holds counts and timings only (no clip, device, officer or place), but
counts of uploads and deletions still say how busy a force is, so by default only loopback callers
(a Prometheus agent or node exporter beside the node) may scrape it; `metrics_from` in the server's
config widens that to the monitoring network's addresses.  A scraper then needs no token, as
Prometheus expects.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Receipts are signed after the last byte is verified and stored: milliseconds on local disk,
# longer when the object store is slow or far. Buckets from 5 ms to a minute.
RECEIPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEFAULT_METRICS_FROM = ("127.0.0.0/8", "::1/128")


class ServerMetrics:
    """The counters one node keeps; `render()` is the `/metrics` body."""

    def __init__(self, uploads_in_flight: Callable[[], int]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge("bwv_uploads_in_flight", "tus PATCH requests streaming into this node now",
              registry=r).set_function(uploads_in_flight)
        self.bytes_received = Counter("bwv_ingest_bytes", "Bytes of sealed segments received over tus (durable)",
                                      registry=r)
        self.segments = Counter("bwv_segments_ingested", "Sealed segments verified, stored and receipted",
                                ["outcome"], registry=r)  # new | duplicate
        self.receipt_seconds = Histogram("bwv_receipt_seconds",
                                         "From an upload's last byte to its signed receipt (verify, store, sign)",
                                         buckets=RECEIPT_BUCKETS, registry=r)
        self.verification_failures = Counter("bwv_verification_failures",
                                             "Uploads refused on verification (layout, hash, signature, chain fork)",
                                             ["kind"], registry=r)
        self.sweep_runs = Counter("bwv_sweep_runs", "Retention sweeps run on this node", ["outcome"], registry=r)
        self.sweep_deletions = Counter("bwv_sweep_deleted_clips", "Clips deleted by the retention sweep",
                                       registry=r)
        self.dependency_errors = Counter("bwv_dependency_errors",
                                         "Errors from what the node depends on", ["dependency"], registry=r)
        for outcome in ("new", "duplicate"):
            self.segments.labels(outcome)
        for kind in ("verification", "fork"):
            self.verification_failures.labels(kind)
        for dep in ("database", "object_store", "upload_area"):
            self.dependency_errors.labels(dep)
        for outcome in ("ok", "failed"):
            self.sweep_runs.labels(outcome)

    @contextmanager
    def timing_receipt(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.receipt_seconds.observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def parse_networks(texts: Iterable[str], setting: str = "metrics_from"
                   ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`metrics_from` (or another `setting` of addresses) as networks; a bad entry is a clear config
    error (ValueError names it)."""
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {str(text)[:60]!r} is not an address or network "
                             "(for example 127.0.0.1, 10.20.0.0/16 or ::1)") from None
    return tuple(out)


def may_scrape(remote: str | None, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks if addr.version == net.version)


@dataclass(frozen=True)
class Check:
    """One dependency's state, as `/api/v1/health` reports it."""

    name: str
    ok: bool
    detail: str


def run_check(name: str, probe: Callable[[], str]) -> Check:
    """Run one probe; any exception is that dependency being down, said in its own words."""
    try:
        return Check(name, True, probe())
    except Exception as e:  # noqa: BLE001 - a health check reports every failure, it never raises
        text = str(e).strip() or type(e).__name__
        return Check(name, False, f"{type(e).__name__}: {text[:300]}")


def disk_probe(path: Path, reserve_bytes: int) -> Callable[[], str]:
    def probe() -> str:
        usage = shutil.disk_usage(path)
        if usage.free <= reserve_bytes:
            raise OSError(f"{usage.free // 2**20} MiB free in {path}, at or below the "
                          f"{reserve_bytes // 2**20} MiB reserve: uploads are refused (507)")
        return f"{usage.free // 2**20} MiB free in {path}"
    return probe


def writable_probe(path: Path) -> Callable[[], str]:
    def probe() -> str:
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable by this process")
        return f"{path} writable"
    return probe


PROBE_KEY = "0" * 64  # a well-formed blob key no segment has: asking for it reaches the store and finds nothing


def _where(blobs) -> str:
    location = getattr(blobs, "location", None)
    if location is not None:
        return str(location)
    root = getattr(blobs, "root", None)
    return f"local store {root}" if root is not None else type(blobs).__name__


def dependency_checks(service) -> list[Check]:
    """What `/api/v1/health` reports, one probe per dependency (blocking: run in a thread).

    database: the metadata store answers a read; object_store: the blob store answers a lookup
    (for S3 a real HEAD on the bucket); keys: the server's key pair is loaded; upload_area and
    (for local stores) evidence_store: room above the reserve and writable.
    """
    checks = [
        run_check("database", lambda: f"{service.db.engine_name} schema version {service.db.schema_version}"),
        run_check("object_store", lambda: (service.blobs.exists(PROBE_KEY), f"{_where(service.blobs)} answers")[1]),
        run_check("keys", lambda: f"server key {service.server_keys.public.key_id.hex()[:16]}"),
        run_check("upload_area", disk_probe(service.uploads_dir, service.config.reserve_bytes)),
    ]
    root = getattr(service.blobs, "root", None)
    if root is not None:
        checks.append(run_check("evidence_store", disk_probe(Path(root), service.config.reserve_bytes)))
    for check in checks:
        if not check.ok and check.name in ("database", "object_store"):
            service.metrics.dependency_errors.labels(check.name).inc()
    return checks


__all__ = ["dependency_checks", "CONTENT_TYPE", "Check", "DEFAULT_METRICS_FROM", "ServerMetrics", "disk_probe", "may_scrape",
           "parse_networks", "run_check", "writable_probe"]
