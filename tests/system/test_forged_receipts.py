"""A forged receipt frees nothing, even when the real dock carries it to the camera.

The dock only relays receipts; the camera checks each one against the
server key it was enrolled with and against the file itself.  Here the real
`bwv dock` uploads to an impostor evidence server (a hijacked address, a
rogue machine on the network) that answers every upload with "already held"
and a receipt of its own making, a different forgery for each camera.  The
dock hands them over as it would genuine ones; every camera keeps every file.

(A dock that itself lies, frame by frame over the pty, is
tests/dock/test_camera_link.py::test_a_forged_or_mismatched_receipt_frees_nothing.)
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.receipt import Receipt, encode, issue
from openbwv.sealed.writer import SealedInfo

from .system_kit import DockStation, eventually

Forge = Callable[[SealedInfo, list[SealedInfo]], dict]


def receipt_fields(info: SealedInfo, key_id: str) -> Receipt:
    return Receipt(device_id=info.preamble.device_id, sequence=info.sequence, segment_hash=info.segment_hash.hex(),
                   size=info.path.stat().st_size, server_key_id=key_id, received_utc="2026-11-25T18:00:00+00:00")


class ImpostorServer(ThreadingHTTPServer):
    """Speaks just enough tus to a dock: every POST /tus/ is "already held, here is the receipt", forged by `forge`."""

    def __init__(self, forgeries: dict[str, tuple[Forge, list[SealedInfo]]]):
        super().__init__(("127.0.0.1", 0), _ImpostorHandler)
        self.forgeries = forgeries  # device id -> (forge, that camera's sealed segments)
        self.handed_out: list[tuple[str, int]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _ImpostorHandler(BaseHTTPRequestHandler):
    server: ImpostorServer

    def do_POST(self) -> None:
        meta = dict(pair.split(" ") for pair in self.headers["Upload-Metadata"].split(","))
        meta = {k: base64.b64decode(v).decode() for k, v in meta.items()}
        forge, segments = self.server.forgeries[meta["device_id"]]
        [segment] = [s for s in segments if s.segment_hash.hex() == meta["segment_hash"]]
        receipt = encode(forge(segment, segments))
        self.server.handed_out.append((meta["device_id"], segment.sequence))
        body = json.dumps({"held": True}).encode()
        self.send_response(200)
        self.send_header("Tus-Resumable", "1.0.0")
        self.send_header("Bwv-Receipt", base64.b64encode(receipt).decode())
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def impostor():
    servers: list[ImpostorServer] = []

    def start(forgeries) -> ImpostorServer:
        servers.append(ImpostorServer(forgeries))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_a_forged_receipt_relayed_by_the_real_dock_frees_nothing(home, custody, launch, camera, impostor, tmp_path):
    real = ServerKeyPair.load(home.server_keys_dir)  # the key every camera was enrolled with
    real_id = real.public.key_id.hex()
    other = ServerKeyPair.generate()
    forgeries: dict[str, tuple[Forge, str]] = {  # device -> (its forgery, why its camera refuses it)
        "cam-1": (lambda seg, segs: issue(receipt_fields(seg, real_id), other.sign),
                  "receipt signature does not verify with the server's receipt key"),
        "cam-2": (lambda seg, segs: issue(receipt_fields(seg, other.public.key_id.hex()), other.sign),
                  f"this camera trusts '{real_id}'"),
        "cam-3": (lambda seg, segs: issue(receipt_fields(segs[seg.sequence % len(segs)], real_id), real.sign),
                  "receipt is for cam-3 #"),
    }
    cams = {device: camera(device, segments=3, media_bytes=20_000) for device in forgeries}
    before = {device: cam.files() for device, cam in cams.items()}
    server = impostor({device: (forge, cams[device].sealed) for device, (forge, _) in forgeries.items()})
    dock = launch(DockStation(tmp_path / "dock", "dock-1", "bwvd_" + "A" * 43, server.url,
                              {f"bay-{device}": cam.directory for device, cam in cams.items()}))
    for device, cam in cams.items():
        cam.dock(dock.port_path(f"bay-{device}"))
    custody.watch(cams.values())

    eventually(lambda: {b.state for b in dock.bays().values()} == {"needs_attention"}, 60,
               "every bay done with its camera and asking for attention")
    assert sorted(server.handed_out) == sorted((d, n) for d in cams for n in (1, 2, 3))
    for device, cam in cams.items():
        assert cam.files() == before[device]
        assert cam.freed_by_links() == []
        bay = dock.bays()[f"bay-{device}"]
        assert (bay.segments_listed, bay.segments_uploaded, bay.segments_freed, bay.segments_left) == (3, 3, 0, 3)
        assert "camera kept it" in bay.last_error
        refusals = re.findall(rf'event=segment_not_freed bay=bay-{device} device={device} segment=(\S+) '
                              r'code=receipt_invalid reason="([^"]*)"', dock.log())
        assert sorted(name for name, _ in refusals) == sorted(before[device])
        assert all(forgeries[device][1] in why for _, why in refusals), refusals
    assert custody.accepted == set() and custody.freed == set()
    assert custody.violations == []
    assert dock.stop() == 0
