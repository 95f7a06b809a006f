"""A JSON request body is at most 64 KiB: one byte more is 413 Content Too Large, saying so, whether the
client announced its length or streamed the body in chunks.  (tus PATCH bodies are not JSON: they stream.)"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from lifecycle import http_kit
from openbwv.server.staff_api import MAX_BODY


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = http_kit.make_home(tmp_path_factory.mktemp("http-body") / "home")
    with http_kit.ServerProcess(home.root, "--reserve-mb", "0") as proc:
        yield home, proc


def login_body(size: int) -> bytes:
    """A well-formed login of exactly `size` bytes, the object last (JSON whitespace before it): a
    server that read only the first piece to arrive would see no object at all."""
    body = json.dumps({"username": "nobody", "password": "not the password"}).encode()
    return b" " * (size - len(body)) + body


def send(url: str, method: str, path: str, body, headers: dict[str, str] | None = None,
         chunked: bool = False) -> tuple[int, dict, dict]:
    session = http_kit.TusSession(url, None)
    conn = http.client.HTTPConnection(*session.host_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})},
                     encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_a_body_of_exactly_64_kib_is_read(server):
    _home, proc = server
    status, _headers, doc = send(proc.url, "POST", "/api/v1/login", login_body(MAX_BODY))
    assert status == 401, doc  # read and understood: the password is wrong


def test_one_byte_more_is_413_with_a_reason(server):
    _home, proc = server
    status, headers, doc = send(proc.url, "POST", "/api/v1/login", login_body(MAX_BODY + 1))
    assert status == 413
    assert doc["error"] == f"request body of {MAX_BODY + 1} bytes is over the {MAX_BODY} bytes a JSON body may have"
    assert headers["Bwv-Error"] == doc["error"]


def trickle(body: bytes, piece: int = 4096):
    """The body in pieces that arrive one by one, as from a slow link."""
    for at in range(0, len(body), piece):
        time.sleep(0.005)
        yield body[at : at + piece]


def test_a_body_that_arrives_in_pieces_is_read_whole(server):
    _home, proc = server
    status, _headers, doc = send(proc.url, "POST", "/api/v1/login", trickle(login_body(MAX_BODY)), chunked=True)
    assert status == 401, doc


def test_a_chunked_body_that_runs_past_64_kib_is_413_too(server):
    _home, proc = server
    # No Content-Length: the server counts as it reads.
    status, _headers, doc = send(proc.url, "POST", "/api/v1/login", trickle(b"x" * 80_000), chunked=True)
    assert status == 413 and "over the 65536 bytes" in doc["error"]


def test_staff_routes_answer_413_after_checking_who_is_asking(server):
    home, proc = server
    token = http_kit.staff_token(home, "dora-big", "disclosure_officer")
    big = json.dumps({"requester": "A. Person", "description": "x" * (MAX_BODY + 10)}).encode()
    status, _headers, doc = send(proc.url, "POST", "/api/v1/requests", big, {"Authorization": f"Bearer {token}"})
    assert status == 413 and str(MAX_BODY) in doc["error"]
    admin = http_kit.staff_token(home, "adm-big", "admin")
    status, _headers, doc = send(proc.url, "POST", "/api/v1/requests", big, {"Authorization": f"Bearer {admin}"})
    assert status == 403  # a caller who may not call it learns nothing more
