"""The dock's uploader for several servers (dock/failover.py) against the real server over loopback.

What fails over and what does not: a server that cannot be reached is
passed over and the next one takes the segment; a segment a server refuses
for good is not offered to the next one.  Two nodes dying mid-upload, and a
real load balancer, are the system tests (tests/system/test_fleet_*.py).
"""

from __future__ import annotations

import logging
import select
import socket

import pytest

from openbwv.dock.backoff import Backoff
from openbwv.dock.errors import UploadRejected
from openbwv.dock.events import parse_kv
from openbwv.dock.failover import FleetUploader
from openbwv.dock.servers import ServerPool

from .server_kit import blob_path, check_receipt


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket is closed


def test_a_bay_whose_home_server_is_down_uploads_to_the_next_and_later_bays_skip_the_dead_one(
        server, token, camera, shared_home):
    dead = closed_port_url()
    fleet = FleetUploader([dead, server.url], token, connect_timeout=1)
    bay = fleet.for_bay(0, "bay-1")
    assert bay.home == dead
    seg = camera().seal()
    receipt = bay.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)
    check_receipt(shared_home, receipt, seg)
    assert blob_path(shared_home, seg.segment_hash).read_bytes() == seg.data
    assert bay.server == server.url and bay.server_label == server.url.removeprefix("http://")
    assert fleet.pool.is_down(dead)
    assert fleet.pool.candidates(2) == [server.url, dead]  # bay 3 (home: the dead one) goes straight on


def test_a_segment_refused_by_one_server_is_not_offered_to_the_next(server, token, camera):
    witness = socket.create_server(("127.0.0.1", 0))  # a second "node" that only notes connections
    try:
        other = f"http://127.0.0.1:{witness.getsockname()[1]}"
        fleet = FleetUploader([server.url, other], token)
        seg = camera().seal()
        data = bytearray(seg.data)
        data[len(data) // 2] ^= 1
        seg.path.write_bytes(bytes(data))
        with pytest.raises(UploadRejected, match="422"):
            fleet.for_bay(0, "bay-1").upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash,
                                             lambda n: None)
        assert select.select([witness], [], [], 0.2)[0] == [], "the refused segment went to the other node"
        assert not fleet.pool.is_down(server.url)  # a refusal says nothing of the server's health
    finally:
        witness.close()


def test_a_server_that_failed_must_answer_its_health_check_before_it_gets_an_upload_again(
        server, token, camera, shared_home):
    hung = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        fleet = FleetUploader([url, server.url], token, health_timeout=0.5,
                              server_backoff=Backoff(initial_s=0.0, maximum_s=0.0, jitter=0.0))
        fleet.pool.mark_failed(url, "read timeout")  # passed over for no time: due to be tried again now
        bay = fleet.for_bay(0, "bay-1")
        seg = camera().seal()
        receipt = bay.upload(seg.path, seg.device_id, seg.sequence, seg.segment_hash, lambda n: None)
        check_receipt(shared_home, receipt, seg)
        assert bay.server == server.url
        conn, _ = hung.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(4096).startswith(b"GET /api/v1/health "), "asked for its health, sent no upload"
        assert select.select([hung], [], [], 0.2)[0] == [], "no second connection to the hung server"
        assert fleet.pool.has_failed(url)
    finally:
        hung.close()


def test_a_bay_goes_back_to_its_home_server_once_it_is_no_longer_passed_over_and_says_why(
        server, token, camera, shared_home, caplog):
    other = server.url.replace("127.0.0.1", "localhost")  # a second name for a working server
    fleet = FleetUploader([server.url, other], token)
    now = [1000.0]
    fleet.pool = ServerPool(fleet.pool.urls, backoff=Backoff(initial_s=10.0, maximum_s=10.0, jitter=0.0),
                            clock=lambda: now[0])
    bay = fleet.for_bay(0, "bay-1")
    chain = camera()
    caplog.set_level(logging.INFO, logger="bwv.dock")
    fleet.pool.mark_failed(server.url, "connection refused")  # as if another bay had just found it dead
    first = chain.seal()
    check_receipt(shared_home, bay.upload(first.path, first.device_id, first.sequence, first.segment_hash,
                                          lambda n: None), first)
    assert bay.server == other
    now[0] += 11  # its pass-over is over: asked for its health, then given the next segment
    second = chain.seal()
    check_receipt(shared_home, bay.upload(second.path, second.device_id, second.sequence, second.segment_hash,
                                          lambda n: None), second)
    assert bay.server == server.url and not fleet.pool.has_failed(server.url)
    events = [parse_kv(r.getMessage()) for r in caplog.records if r.getMessage().startswith("event=upload_server")]
    assert [(e["server"], e["reason"]) for e in events] == [
        (other.removeprefix("http://"), "failover"), (server.url.removeprefix("http://"), "home_back")]
    assert "home server passed over after failing: connection refused" in events[0]["error"]
    assert any(r.getMessage().startswith("event=server_back bay=bay-1") for r in caplog.records)
