"""Admission control: the cap on concurrent uploads the server announces, and its free-space reserve."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from openbwv.enrol import enrol_device

from .conftest import add_dock, make_home
from .server_kit import DeviceChain, ServerProcess, TusSession, check_receipt, read_reply, wait_for_streaming


def test_uploads_past_the_announced_cap_get_503_with_retry_after_and_get_in_later(tmp_path):
    home = make_home(tmp_path / "home")
    enrol_device(home, "cam-1")
    token = add_dock(home)
    cam = DeviceChain(home, "cam-1", tmp_path / "segments")
    one, two = cam.seal(), cam.seal()
    with ServerProcess(home.root, "--max-concurrent", "1", "--reserve-mb", "0") as server:
        tus = TusSession(server.url, token)
        assert tus.request("OPTIONS", "/tus/", headers={}).headers["Bwv-Max-Concurrent-Uploads"] == "1"
        first = tus.create(one).headers["Location"]
        second = tus.create(two).headers["Location"]

        # The first upload is streaming (half its body sent, the rest still to come) ...
        data = one.data
        in_flight = tus.open_patch(first, 0, len(data), data[: len(data) // 2])
        wait_for_streaming(server.url, 1)

        # ... so the second is told to come back, and when.
        busy = tus.patch(second, 0, two.data)
        assert busy.status == 503
        assert busy.headers["Retry-After"] == "2"
        assert "Bwv-Max-Concurrent-Uploads: 1" in busy.error
        assert tus.offset(second) == 0

        in_flight.sendall(data[len(data) // 2 :])
        done = read_reply(in_flight)
        assert done.status == 204
        check_receipt(home, done.receipt, one)

        retried = tus.patch(second, 0, two.data)
        assert retried.status == 204
        check_receipt(home, retried.receipt, two)


def test_a_store_down_to_its_reserve_refuses_new_uploads_with_507(tmp_path):
    home = make_home(tmp_path / "home")
    enrol_device(home, "cam-1")
    token = add_dock(home)
    seg = DeviceChain(home, "cam-1", tmp_path / "segments").seal()
    # A reserve larger than any disk: the store is always "full".
    with ServerProcess(home.root, "--reserve-mb", str(10**12)) as server:
        tus = TusSession(server.url, token)
        reply = tus.create(seg)
        assert reply.status == 507
        assert "reserve" in reply.error and "--reserve-mb" in reply.error
        assert "Location" not in reply.headers
        # Still answering, and saying why it takes nothing: a load balancer sends the docks elsewhere.
        health = TusSession(server.url, None).get("/api/v1/health")
        assert health.status == 503
        assert health.json()["checks"]["upload_area"]["ok"] is False
    assert not list((home.server_dir / "uploads").iterdir())


def test_many_docks_upload_at_once_and_every_segment_gets_its_receipt(server, shared_home, tmp_path):
    """Six docks, each emptying its own camera, all at the same time, under the announced cap."""

    def dock_run(n: int) -> list:
        device = f"cam-busy-{n}"
        enrol_device(shared_home, device)
        cam = DeviceChain(shared_home, device, tmp_path / device)
        segments = [cam.seal(payload_bytes=200_000) for _ in range(3)]
        tus = TusSession(server.url, add_dock(shared_home, f"dock-busy-{n}"))
        return [(seg, tus.upload(seg, chunk=32 * 1024)) for seg in segments]

    with ThreadPoolExecutor(6) as pool:
        results = [r for batch in pool.map(dock_run, range(6)) for r in batch]
    assert len(results) == 18
    for seg, reply in results:
        check_receipt(shared_home, reply.receipt, seg)
