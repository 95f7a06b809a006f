"""The camera's end of the dock link, over a real pty: greeting, listing, and freeing only against receipts.

The camera (firmware/docklink.py) serves on the pyserial end of a pty pair;
these tests play the dock on the other end, frame by frame, including a
dock that lies.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from openbwv.dock.errors import PeerError
from openbwv.dock.protocol import (
    FREE_BAD_NAME,
    FREE_NO_RECEIPT,
    FREE_NOT_FOUND,
    FREE_RECEIPT_INVALID,
    FREED_OK,
    MessageType,
    encode_frame,
    encode_message,
)
from openbwv.sealed.keys import ServerKeyPair
from openbwv.sealed.receipt import Receipt, issue
from openbwv.sealed.writer import SealedInfo

from .dock_kit import DEVICE_ID, utc_us

T = 3.0  # seconds to wait for any one reply


def greet(channel):
    return channel.request(MessageType.HELLO, {"role": "dock", "protocol": 1, "dock_id": "test-dock"},
                           MessageType.HELLO, timeout=T)


def free(channel, name, receipt):
    return channel.request(MessageType.FREE, {"name": name, "receipt": receipt}, MessageType.FREED, timeout=T)


def receipt_for(keys: ServerKeyPair, info: SealedInfo, *, signer: ServerKeyPair | None = None, **changes) -> dict:
    """The server's receipt for a sealed segment (fields overridable to forge one)."""
    fields = dict(device_id=info.preamble.device_id, sequence=info.sequence, segment_hash=info.segment_hash.hex(),
                  size=info.path.stat().st_size, server_key_id=keys.public.key_id.hex(),
                  received_utc="2026-11-25T18:00:00+00:00")
    fields.update(changes)
    return issue(Receipt(**fields), (signer or keys).sign)


# --------------------------------------------------------------------------- hello and list
def test_a_greeted_camera_says_who_it_is_and_what_it_holds(camera, cradle):
    sealed = camera.seal(3)
    hello = greet(cradle.channel())
    assert hello["device_id"] == DEVICE_ID and hello["role"] == "camera"
    assert hello["firmware"] == "openbwv-test" and hello["battery_pct"] == 87
    assert hello["segments"] == 3
    assert hello["storage_used_bytes"] == sum(s.path.stat().st_size for s in sealed)
    assert hello["storage_free_bytes"] > 0
    assert abs(hello["clock_utc_us"] - utc_us()) < 5_000_000
    assert hello["clock_sync_utc_us"] == 0  # never set by a dock yet


def test_a_camera_answers_nothing_before_it_is_greeted(camera, cradle):
    camera.seal(1)
    with pytest.raises(PeerError, match="unexpected.*before HELLO"):
        cradle.channel().request(MessageType.LIST, {"after": ""}, MessageType.SEGMENTS, timeout=T)
    assert camera.files()  # and of course frees nothing


def test_the_listing_gives_each_sealed_segment_as_its_signed_header_names_it(camera, cradle):
    sealed = camera.seal(3)
    (camera.storage.directory / "cam-0042-0000000009.open").write_bytes(b"being recorded")
    damaged = camera.storage.directory / "cam-0042-0000000008.bwv"
    damaged.write_bytes(sealed[0].path.read_bytes()[:-10])
    ch = cradle.channel()
    greet(ch)
    reply = ch.request(MessageType.LIST, {"after": ""}, MessageType.SEGMENTS, timeout=T)
    assert reply["more"] is False and reply["damaged"] == 1
    assert reply["segments"] == [
        {"name": s.path.name, "size": s.path.stat().st_size, "sequence": s.sequence,
         "segment_hash": s.segment_hash.hex(), "clip_id": str(s.preamble.clip_id),
         "segment_index": s.preamble.segment_index}
        for s in sealed
    ]


def test_the_listing_comes_in_pages_that_follow_a_name_cursor(camera, cradle):
    sealed = camera.seal(5)
    ch = cradle.channel()
    greet(ch)
    first = ch.request(MessageType.LIST, {"after": "", "limit": 2}, MessageType.SEGMENTS, timeout=T)
    assert [e["name"] for e in first["segments"]] == [s.path.name for s in sealed[:2]] and first["more"]
    rest = ch.request(MessageType.LIST, {"after": first["segments"][-1]["name"], "limit": 3}, MessageType.SEGMENTS,
                      timeout=T)
    assert [e["name"] for e in rest["segments"]] == [s.path.name for s in sealed[2:]] and not rest["more"]


# --------------------------------------------------------------------------- freeing
def test_a_valid_receipt_frees_exactly_that_segment_durably(camera, cradle, server_keys, monkeypatch):
    import openbwv.firmware.docklink as docklink

    synced = []
    monkeypatch.setattr(docklink, "fsync_dir", lambda d: synced.append(d))
    sealed = camera.seal(3)
    receipt = receipt_for(server_keys, sealed[1])
    ch = cradle.channel()
    greet(ch)
    reply = free(ch, sealed[1].path.name, receipt)
    assert (reply["freed"], reply["code"], reply["name"]) == (True, FREED_OK, sealed[1].path.name)
    assert sorted(camera.files()) == [sealed[0].path.name, sealed[2].path.name]
    assert synced == [camera.storage.directory]  # the unlink is on disk before FREED says so
    again = free(ch, sealed[1].path.name, receipt)
    assert (again["freed"], again["code"]) == (False, FREE_NOT_FOUND)


FORGERIES = {
    "signed by another key, claiming the enrolled server's key id":
        lambda keys, other, seg, segs: receipt_for(keys, seg, signer=other),
    "a genuine receipt from another server": lambda keys, other, seg, segs: receipt_for(other, seg),
    "a genuine receipt for another segment": lambda keys, other, seg, segs: receipt_for(keys, segs[0]),
    "a receipt for this segment with a forged hash":
        lambda keys, other, seg, segs: receipt_for(keys, seg, segment_hash="ab" * 32),
    "a receipt for another device's segment of the same number":
        lambda keys, other, seg, segs: receipt_for(keys, seg, device_id="cam-9999"),
    "a receipt for this segment but another size": lambda keys, other, seg, segs: receipt_for(keys, seg, size=1),
    "a genuine receipt with its fields edited after signing":
        lambda keys, other, seg, segs: {**receipt_for(keys, segs[0]),
                                        "receipt": receipt_for(keys, seg)["receipt"]},
    "a receipt with a broken signature":
        lambda keys, other, seg, segs: {**receipt_for(keys, seg), "signature": "AAAA"},
    "an object that is no receipt at all": lambda keys, other, seg, segs: {"ok": True},
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_or_mismatched_receipt_frees_nothing(camera, cradle, server_keys, forgery):
    sealed = camera.seal(2)
    before = camera.files()
    ch = cradle.channel()
    greet(ch)
    receipt = FORGERIES[forgery](server_keys, ServerKeyPair.generate(), sealed[1], sealed)
    reply = free(ch, sealed[1].path.name, receipt)
    assert reply["freed"] is False and reply["code"] == FREE_RECEIPT_INVALID, reply["reason"]
    assert camera.files() == before


def test_a_missing_receipt_frees_nothing(camera, cradle):
    sealed = camera.seal(1)
    before = camera.files()
    ch = cradle.channel()
    greet(ch)
    reply = free(ch, sealed[0].path.name, None)
    assert (reply["freed"], reply["code"]) == (False, FREE_NO_RECEIPT)
    assert "only against the server's receipt" in reply["reason"]
    assert camera.files() == before


@pytest.mark.parametrize("name", ["../outside.bwv", "/etc/passwd", "..", "sub/cam-0042-0000000001.bwv",
                                  ".cam-0042-0000000001.bwv", "cam-0042-0000000001.bwv/", "chain.json",
                                  "cam-0042-0000000001.bwv\x00.txt"])
def test_a_name_that_is_not_a_plain_segment_file_frees_nothing(camera, cradle, server_keys, name):
    (segment,) = camera.seal(1)
    outside = camera.storage.directory.parent / "outside.bwv"
    shutil.copy(segment.path, outside)  # a receipt-worthy file one level up: the receipt is genuine
    before = camera.files()
    ch = cradle.channel()
    greet(ch)
    reply = free(ch, name, receipt_for(server_keys, segment))
    assert (reply["freed"], reply["code"]) == (False, FREE_BAD_NAME)
    assert camera.files() == before and outside.exists() and os.path.exists("/etc/passwd")


def test_a_symlink_in_the_storage_is_not_followed_out_of_it(camera, cradle, server_keys):
    (segment,) = camera.seal(1)
    outside = camera.storage.directory.parent / "victim.bwv"
    shutil.copy(segment.path, outside)
    link = camera.storage.directory / "cam-0042-0000000077.bwv"
    link.symlink_to(outside)
    ch = cradle.channel()
    greet(ch)
    reply = free(ch, link.name, receipt_for(server_keys, segment))
    assert (reply["freed"], reply["code"]) == (False, FREE_BAD_NAME)
    assert outside.exists() and link.is_symlink()


# --------------------------------------------------------------------------- a dock that misbehaves
def test_a_replayed_frame_is_refused_with_an_error_naming_it(camera, cradle):
    camera.seal(1)
    ch = cradle.channel()
    greet(ch)
    frame = encode_message(MessageType.LIST, 50, {"after": ""})
    cradle.dock_port.write(frame)
    assert ch.receive(T).type is MessageType.SEGMENTS
    cradle.dock_port.write(frame)
    error = ch.receive(T)
    assert error.type is MessageType.ERROR and error["code"] == "replay" and error["reply_to"] == 50
    assert "50 is not above the last one received (50)" in error["message"]


def test_a_damaged_frame_is_answered_with_an_error_and_the_link_carries_on(camera, cradle):
    camera.seal(1)
    ch = cradle.channel()
    greet(ch)
    bad = bytearray(encode_frame(MessageType.LIST, 60, {"after": ""}))
    bad[14] ^= 0x04
    cradle.dock_port.write(b"line noise" + bytes(bad))
    codes = set()
    deadline = time.monotonic() + T
    while "bad_frame" not in codes and time.monotonic() < deadline:
        codes.add(ch.receive(T)["code"])
    assert "bad_frame" in codes
    ch.counter._last = 100  # past the numbers the test wrote by hand
    reply = ch.request(MessageType.LIST, {"after": ""}, MessageType.SEGMENTS, timeout=T)
    assert len(reply["segments"]) == 1


def test_a_message_with_wrong_fields_is_refused_and_nothing_done(camera, cradle):
    camera.seal(1)
    before = camera.files()
    ch = cradle.channel()
    greet(ch)
    cradle.dock_port.write(encode_frame(MessageType.FREE, 70, {"name": next(iter(before))}))  # no receipt field
    error = ch.receive(T)
    assert error["code"] == "bad_message" and "'receipt' is missing" in error["message"]
    assert camera.files() == before


def test_bye_ends_the_session(camera, cradle):
    ch = cradle.channel()
    greet(ch)
    ch.send(MessageType.BYE, {"reason": "clear"})
    assert cradle.link.join(T)
    assert cradle.link.ended == "bye"
