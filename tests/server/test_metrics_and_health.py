"""What a force's monitoring sees of a node: /metrics in Prometheus's text format, and a health answer
that names each dependency and turns 503 when one of them fails."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from .conftest import make_home, write_server_config
from .server_kit import ServerProcess, TusSession


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    reply = TusSession(url, None).get("/metrics")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.body.decode())
            for s in family.samples}


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_health_reports_every_dependency_by_name_and_the_engine_under_test(tus, db_engine):
    reply = TusSession(tus.url, None).get("/api/v1/health")
    assert reply.status == 200, reply.body.decode()
    checks = reply.json()["checks"]
    assert {"database", "object_store", "keys", "upload_area", "evidence_store"} <= set(checks)
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["database"]["detail"].startswith(f"{db_engine} schema version ")


def test_an_upload_moves_the_bytes_segments_and_receipt_latency_counters(tus, camera):
    seg = camera().seal()
    before = scrape(tus.url)
    reply = tus.upload(seg)
    assert reply.status == 204
    after = scrape(tus.url)
    assert moved(before, after, "bwv_ingest_bytes_total") == len(seg.data)
    assert moved(before, after, "bwv_segments_ingested_total", outcome="new") == 1
    assert moved(before, after, "bwv_receipt_seconds_count") == 1
    assert after[("bwv_uploads_in_flight", ())] == 0


def test_a_damaged_segment_counts_as_a_verification_failure_not_an_ingest(tus, camera):
    seg = camera().seal()
    data = bytearray(seg.data)
    data[len(data) // 2] ^= 0x01
    before = scrape(tus.url)
    location = tus.create(seg).headers["Location"]
    assert tus.patch(location, 0, bytes(data)).status == 422
    after = scrape(tus.url)
    assert moved(before, after, "bwv_verification_failures_total", kind="verification") == 1
    assert moved(before, after, "bwv_segments_ingested_total", outcome="new") == 0


def test_metrics_are_refused_to_an_address_outside_metrics_from_and_health_fails_when_the_disk_is_full(tmp_path):
    home = make_home(tmp_path / "home")
    write_server_config(home, 'metrics_from = ["10.20.0.0/16"]\n')
    # A reserve no disk here has: the upload area is "full", and the node must say so.
    with ServerProcess(home.root, "--reserve-mb", str(100 * 1024 * 1024)).start() as server:
        client = TusSession(server.url, None)
        refused = client.get("/metrics")
        assert refused.status == 403
        assert "metrics_from" in refused.error
        health = client.get("/api/v1/health")
        assert health.status == 503
        answer = health.json()
        assert answer["status"] == "failing"
        assert answer["checks"]["upload_area"]["ok"] is False
        assert "reserve" in answer["checks"]["upload_area"]["detail"]
        assert answer["checks"]["database"]["ok"] is True


def test_a_bad_metrics_from_entry_stops_the_server_with_a_message_naming_it(tmp_path):
    import subprocess

    from .server_kit import BWV

    home = make_home(tmp_path / "home")
    write_server_config(home, 'metrics_from = ["10.20.0.0/99"]\n')
    run = subprocess.run([BWV, "server", "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                         env={"BWV_HOME": str(home.root), "PATH": "/usr/bin:/bin"}, timeout=30)
    assert run.returncode != 0
    assert "metrics_from" in run.stderr and "10.20.0.0/99" in run.stderr
