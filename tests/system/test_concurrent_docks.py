"""Several docks upload to one server at once; past its cap the server says "busy", and the docks wait their turn.

Four `bwv dock` processes, each with its own bays file, token and camera,
upload to one `bwv server` that streams at most two uploads at a time
(`--max-concurrent 2`).  To be sure the cap is met, a fifth uploader on a bad
line holds both slots at first; every dock is told 503, backs off and
tries again, its camera untouched.  When the slow uploader is done, the
four share the two slots until every camera is clear.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import socket

import pytest

from openbwv.sealed.keys import ServerPublicKey
from openbwv.sealed.receipt import ReceiptVerifier
from openbwv.sealed.writer import SealedInfo

from .system_kit import DockStation, EvidenceServer, add_dock, assert_server_holds_exactly, eventually

DOCKS = 4


class StalledUploads:
    """An uploader on a bad line: it has begun a PATCH of each segment, sent half its bytes, and sends
    the rest only when `finish` is called.  Meanwhile each PATCH holds one of the server's upload slots."""

    def __init__(self, port: int, token: str, device_id: str, segments: list[SealedInfo]):
        self.port = port
        self.headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
        self.pending: list[tuple[socket.socket, bytes]] = []
        for info in segments:
            data = info.path.read_bytes()
            location = self._create(info, device_id, len(data))
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            head = {**self.headers, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
                    "Content-Length": str(len(data)), "Upload-Checksum": f"sha256 {checksum}"}
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                         + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n"
                         + data[: len(data) // 2])
            self.pending.append((sock, data[len(data) // 2:]))

    def _create(self, info: SealedInfo, device_id: str, size: int) -> str:
        meta = {"filename": info.path.name, "device_id": device_id, "sequence": str(info.sequence),
                "segment_hash": info.segment_hash.hex()}
        encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/tus/", headers={**self.headers, "Upload-Length": str(size),
                                                   "Upload-Metadata": encoded})
            reply = conn.getresponse()
            reply.read()
        finally:
            conn.close()
        assert reply.status == 201, reply.status
        return reply.headers["Location"]

    def finish(self) -> list[bytes]:
        """Send the rest of every body; the receipts."""
        receipts = []
        for sock, rest in self.pending:
            sock.sendall(rest)
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            reply.read()
            sock.close()
            assert reply.status == 204, reply.status
            receipts.append(base64.b64decode(reply.headers["Bwv-Receipt"]))
        self.pending.clear()
        return receipts

    def close(self) -> None:
        for sock, _ in self.pending:
            sock.close()


@pytest.mark.slow
def test_concurrent_docks_upload_in_parallel_to_one_server(home, custody, launch, camera, tmp_path):
    cams = [camera(f"cam-{n}", segments=3, media_bytes=1_500_000) for n in range(1, DOCKS + 1)]
    slow_cam = camera("cam-slow", segments=2, media_bytes=1_000_000)
    server = launch(EvidenceServer(home, tmp_path / "server", "--max-concurrent", "2", "--idle-timeout", "300"))

    slow = StalledUploads(server.port, add_dock(home, "dock-slow"), slow_cam.device_id, slow_cam.sealed)
    try:
        eventually(lambda: (server.health() or {}).get("uploads_in_progress") == 2, 30,
                   "the slow uploader holding both slots")
        docks = [launch(DockStation(tmp_path / f"dock-{n}", f"dock-{n}", add_dock(home, f"dock-{n}"), server.url,
                                    {"bay-1": cam.directory})) for n, cam in enumerate(cams, 1)]
        for dock, cam in zip(docks, cams):
            cam.dock(dock.port_path("bay-1"))
        custody.watch(cams)

        def told_busy(dock: DockStation) -> bool:
            return re.search(rf" dock:{dock.dock_id} PATCH /tus/\S+ -> 503", server.log()) is not None \
                and "event=upload_retry" in dock.log()

        eventually(lambda: all(told_busy(dock) for dock in docks), 60, "every dock told the server is busy")
        assert not any(cam.empty for cam in cams) and custody.freed == set()
        receipts = slow.finish()
    finally:
        slow.close()
    pub = ServerPublicKey.load(home.server_public_key)
    for receipt, info in zip(receipts, slow_cam.sealed):
        ReceiptVerifier(pub.receipt_verifier(), pub.key_id).check_for(
            receipt, device_id=slow_cam.device_id, sequence=info.sequence, segment_hash=info.segment_hash)

    eventually(lambda: all(cam.empty for cam in cams), 90, "every docked camera emptied")
    for dock in docks:
        eventually(lambda: {b.state for b in dock.bays().values()} == {"clear"}, 30, f"{dock.dock_id} clear")
        assert dock.stop() == 0
    assert server.stop() == 0

    custody.look(cams)
    assert custody.violations == []
    assert custody.freed == {(cam.device_id, info.path.name) for cam in cams for info in cam.sealed}
    assert_server_holds_exactly(home, custody, [*cams, slow_cam])
    assert {cam.device_id: {custody.records().segment(info.segment_hash.hex()).dock for info in cam.sealed}
            for cam in cams} == {cam.device_id: {dock.dock_id} for cam, dock in zip(cams, docks)}
