"""Keys on disk: what a server, a camera and the registry load is exactly what was saved, or an error saying why not."""

from __future__ import annotations

import json
import stat

import pytest
from cryptography.exceptions import InvalidTag

from openbwv.sealed.errors import KeyFileError
from openbwv.sealed.keys import DeviceKey, ServerKeyPair, ServerPublicKey, parse_device_record
from openbwv.sealed.layout import SUITE_MLKEM768_X25519, SUITE_X25519


def test_a_saved_server_key_pair_loads_as_the_same_keys(server_keys, tmp_path):
    server_keys.save(tmp_path / "server")

    loaded = ServerKeyPair.load(tmp_path / "server")

    assert loaded.public == server_keys.public
    wrapped = server_keys.public.wrap(SUITE_MLKEM768_X25519, b"k" * 32, b"info")
    assert loaded.unwrap(SUITE_MLKEM768_X25519, wrapped, b"info") == b"k" * 32


def test_private_server_keys_are_readable_by_their_owner_only(server_keys, tmp_path):
    server_keys.save(tmp_path / "server")

    for name in (ServerKeyPair.MLKEM_FILE, ServerKeyPair.X25519_FILE, ServerKeyPair.RECEIPT_FILE):
        assert stat.S_IMODE((tmp_path / "server" / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("suite", [SUITE_MLKEM768_X25519, SUITE_X25519])
def test_a_key_wrapped_for_one_segment_does_not_unwrap_for_another(server_keys, suite):
    wrapped = server_keys.public.wrap(suite, b"k" * 32, b"segment 1")

    with pytest.raises(InvalidTag):
        server_keys.unwrap(suite, wrapped, b"segment 2")


def test_the_public_bundle_survives_json(server_keys):
    assert ServerPublicKey.from_json(server_keys.public.to_json()) == server_keys.public


def test_a_public_bundle_whose_keys_were_edited_is_rejected(server_keys):
    doc = json.loads(server_keys.public.to_json())
    doc["x25519"] = json.loads(ServerKeyPair.generate().public.to_json())["x25519"]  # a key swapped in

    with pytest.raises(KeyFileError, match="key_id does not match"):
        ServerPublicKey.from_json(json.dumps(doc))


@pytest.mark.parametrize("text", ["", "[]", '{"format": "something else"}', "not json"])
def test_something_that_is_not_a_public_bundle_is_rejected(text):
    with pytest.raises(KeyFileError):
        ServerPublicKey.from_json(text)


def test_a_missing_server_key_says_how_to_make_one(tmp_path):
    with pytest.raises(KeyFileError, match="bwv keys server"):
        ServerKeyPair.load(tmp_path)


def test_a_saved_device_key_loads_and_signs_as_the_same_key(device_key, tmp_path):
    device_key.save(tmp_path / "device.pem")

    loaded = DeviceKey.load(device_key.device_id, tmp_path / "device.pem")

    assert loaded.public_bytes == device_key.public_bytes
    assert stat.S_IMODE((tmp_path / "device.pem").stat().st_mode) == 0o600


def test_a_device_public_record_gives_back_its_id_and_key(device_key):
    device_id, key = parse_device_record(device_key.public_record(), "registry")

    assert device_id == device_key.device_id
    key.verify(device_key.sign(b"message"), b"message")


@pytest.mark.parametrize(
    "change",
    [{"format": "other"}, {"device_id": "../etc"}, {"device_id": "cam\n"}, {"ed25519": "AAAA"}, {"ed25519": 7}],
)
def test_a_damaged_device_record_is_rejected(device_key, change):
    with pytest.raises(KeyFileError):
        parse_device_record({**device_key.public_record(), **change}, "registry")
