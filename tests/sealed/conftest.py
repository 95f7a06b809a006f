"""What every sealed-segment test needs: keys, a registry, and sealed files to attack.

Key generation is cheap but every segment costs one HPKE key wrap, so the
segments that tests only read or copy are sealed once per session; tests that
tamper work on copies of their bytes, never on the originals.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from openbwv.sealed.keys import DeviceKey, ServerKeyPair
from openbwv.sealed.reader import VerifiedSegment, verify_file

from .segment_kit import DEVICE_ID, Attacker, Registry, Sealed, Sealer, random_records


@pytest.fixture(scope="session")
def server_keys() -> ServerKeyPair:
    return ServerKeyPair.generate()


@pytest.fixture(scope="session")
def device_key() -> DeviceKey:
    return DeviceKey.generate(DEVICE_ID)


@pytest.fixture(scope="session")
def registry(device_key: DeviceKey) -> Registry:
    return Registry(device_key)


@pytest.fixture(scope="session")
def sealer(device_key: DeviceKey, server_keys: ServerKeyPair) -> Sealer:
    return Sealer(device_key, server_keys)


@pytest.fixture(scope="session")
def attacker(device_key: DeviceKey) -> Attacker:
    return Attacker(device_key)


@pytest.fixture(scope="session")
def small_segment(sealer: Sealer, tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    """Three chunks of random bytes and the end chunk, sealed once (read-only: copy its bytes)."""
    return sealer.seal(tmp_path_factory.mktemp("small"), random_records((200, 120, 300)))


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory):
    """One file that tests overwrite with the bytes they have forged or damaged."""
    path = tmp_path_factory.mktemp("scratch") / "candidate.bwv"

    def write(data: bytes) -> Path:
        path.write_bytes(data)
        return path

    return write


@pytest.fixture(scope="session")
def verify_bytes(scratch, registry: Registry):
    """Verify bytes as a file, as an evidence officer would (`verify_file`, public keys only)."""

    def verify(data: bytes, keys=registry) -> VerifiedSegment:
        return verify_file(scratch(data), keys)

    return verify
