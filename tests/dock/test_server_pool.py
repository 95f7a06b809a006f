"""How a dock with several evidence servers picks one per bay: stable homes, failover in ring order, return home.

Pure logic (dock/servers.py) with a hand-wound clock; the real failover
between two `bwv server` processes is tests/system/test_fleet_failover.py.
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from openbwv.dock.backoff import Backoff
from openbwv.dock.config import parse_config
from openbwv.dock.errors import DockConfigError
from openbwv.dock.servers import ServerPool, server_label

A, B, C = "http://10.0.0.1:8443", "http://10.0.0.2:8443", "https://10.0.0.3"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool(clock: Clock, *urls: str) -> ServerPool:
    return ServerPool(urls or (A, B, C), backoff=Backoff(initial_s=2.0, factor=2.0, maximum_s=60.0, jitter=0.0),
                      clock=clock)


def test_bays_spread_over_the_servers_bay_i_to_server_i_mod_n():
    p = pool(Clock())
    assert [p.home(i) for i in range(7)] == [A, B, C, A, B, C, A]
    assert [p.candidates(i)[0] for i in range(4)] == [A, B, C, A]


def test_a_failed_server_is_passed_over_by_every_bay_and_tried_last_until_its_backoff_ends():
    clock = Clock()
    p = pool(clock)
    assert p.mark_failed(A, "connection refused") == 2.0
    assert p.candidates(0) == [B, C, A]  # bay 0's home is down: next in the ring first
    assert p.candidates(2) == [C, B, A]  # bay 2 never used A, but need not discover it again
    assert p.mark_failed(A, "connection refused") == 4.0  # consecutive failures: longer
    clock.now += 3.9
    assert p.candidates(0) == [B, C, A]
    clock.now += 0.2
    assert p.candidates(0) == [A, B, C]  # its time is up: the bay goes home again


def test_with_every_server_down_all_are_still_tried_soonest_back_first():
    clock = Clock()
    p = pool(clock)
    p.mark_failed(B, "503")
    clock.now += 1
    p.mark_failed(A, "timeout")
    p.mark_failed(C, "refused")
    assert p.candidates(0) == [B, A, C]


def test_a_success_clears_a_servers_failures():
    clock = Clock()
    p = pool(clock)
    p.mark_failed(A, "refused")
    p.mark_failed(A, "refused")
    assert p.mark_ok(A) is True
    assert not p.is_down(A) and p.candidates(0)[0] == A
    assert p.mark_failed(A, "refused") == 2.0  # counting starts afresh
    assert p.mark_ok(B) is False


@pytest.mark.parametrize("urls, why", [
    ((), "at least one"),
    ((A, A + "/"), "given twice"),
    (("ftp://x",), "must be http"),
    (("http://x/?a=1",), "query"),
])
def test_bad_server_lists_are_refused_saying_why(urls, why):
    with pytest.raises(ValueError, match=why):
        ServerPool(urls)


def test_labels_name_host_and_port():
    assert server_label("http://127.0.0.1:8080/") == "127.0.0.1:8080"
    assert server_label("https://ingest.example/bwv") == "ingest.example:443/bwv"


def _parse(text: str):
    return parse_config(tomllib.loads(textwrap.dedent(text)), base=Path("/etc/openbwv"))


def test_the_bays_file_may_list_the_servers():
    cfg = _parse("""
        [dock]
        id = "dock-3"
        servers = ["https://ingest-1.example/", "https://ingest-2.example"]
        [[bay]]
        name = "bay-1"
        serial = "/dev/bwv-bay-1"
        mount = "/media/bwv/bay-1"
    """)
    assert cfg.servers == ("https://ingest-1.example", "https://ingest-2.example")
    assert _parse('[[bay]]\nname = "b"\nserial = "/dev/x"\nmount = "/m"\n').servers == ()


@pytest.mark.parametrize("servers, why", [
    ('"https://a"', "list of URLs"),
    ('["https://a", "https://a"]', "twice"),
    ('["mailto:x"]', "must be http"),
])
def test_a_bad_servers_list_in_the_bays_file_is_refused(servers, why):
    with pytest.raises(DockConfigError, match=why):
        _parse(f'[dock]\nservers = {servers}\n[[bay]]\nname = "b"\nserial = "/dev/x"\nmount = "/m"\n')
