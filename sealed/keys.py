"""Key material: the evidence server's key pair and a device's signing key.

The server holds one HPKE key pair (to unwrap segment keys) and one Ed25519
key (to sign receipts).  Its *public* half travels to every camera as a small
JSON bundle; the private halves never leave the server.  A device holds an
Ed25519 signing key and the server's public bundle, and nothing that can
decrypt what it has sealed.

Files are written atomically (temporary name, fsync, rename) with mode 0600
for private keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from .durable import atomic_write
from .errors import KeyFileError
from .layout import DEVICE_ID_RE, KEY_ID_LEN, SUITE_MLKEM768_X25519, SUITE_X25519, SUITES

BUNDLE_FORMAT = "openbwv-server-public-key-v1"
DEVICE_FORMAT = "openbwv-device-public-key-v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, length: int) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"{what}: expected base64 text, found {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyFileError(f"{what}: not valid base64") from None
    if len(raw) != length:
        raise KeyFileError(f"{what}: expected {length} bytes, found {len(raw)}")
    return raw


def _hpke_suite(suite: int) -> hpke.Suite:
    kem = {SUITE_MLKEM768_X25519: hpke.KEM.MLKEM768_X25519, SUITE_X25519: hpke.KEM.X25519}[suite]
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


@dataclass(frozen=True)
class ServerPublicKey:
    """What a camera needs to seal for the server, and what a dock needs to check receipts."""

    mlkem768: bytes  # ML-KEM-768 encapsulation key (1184 bytes)
    x25519: bytes  # X25519 public key (32 bytes)
    receipt_key: bytes  # Ed25519 public key that signs receipts (32 bytes)

    @property
    def key_id(self) -> bytes:
        """16-byte fingerprint; a segment names the key it was sealed to, so keys can rotate."""
        return hashlib.sha256(b"OpenBWV server key id v1\x00" + self.mlkem768 + self.x25519).digest()[:KEY_ID_LEN]

    def wrap(self, suite: int, secret: bytes, info: bytes) -> bytes:
        """HPKE one-shot encryption of `secret` to this server (encapsulated key || ciphertext)."""
        if suite == SUITE_MLKEM768_X25519:
            pk = hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self.mlkem768),
                x25519.X25519PublicKey.from_public_bytes(self.x25519),
            )
        elif suite == SUITE_X25519:
            pk = x25519.X25519PublicKey.from_public_bytes(self.x25519)
        else:
            raise KeyFileError(f"unknown suite {suite}")
        return _hpke_suite(suite).encrypt(secret, pk, info=info)

    def receipt_verifier(self) -> ed25519.Ed25519PublicKey:
        return ed25519.Ed25519PublicKey.from_public_bytes(self.receipt_key)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": BUNDLE_FORMAT,
                "key_id": self.key_id.hex(),
                "mlkem768": _b64(self.mlkem768),
                "x25519": _b64(self.x25519),
                "receipt_ed25519": _b64(self.receipt_key),
            },
            indent=2,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ServerPublicKey":
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise KeyFileError(f"server public key bundle is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise KeyFileError(f"not a server public key bundle (expected format {BUNDLE_FORMAT!r})")
        key = cls(
            mlkem768=_unb64(doc.get("mlkem768"), "mlkem768", 1184),
            x25519=_unb64(doc.get("x25519"), "x25519", 32),
            receipt_key=_unb64(doc.get("receipt_ed25519"), "receipt_ed25519", 32),
        )
        if doc.get("key_id") != key.key_id.hex():
            raise KeyFileError("server public key bundle: key_id does not match the keys (edited or damaged)")
        return key

    @classmethod
    def load(cls, path: Path) -> "ServerPublicKey":
        try:
            return cls.from_json(Path(path).read_text())
        except OSError as e:
            raise KeyFileError(f"cannot read server public key {path}: {e.strerror}") from None
        except KeyFileError as e:
            raise KeyFileError(f"{path}: {e}") from None


class ServerKeyPair:
    """The evidence server's private keys.  Only the server (and `bwv open`) loads these."""

    MLKEM_FILE = "kem-mlkem768.seed"
    X25519_FILE = "kem-x25519.key"
    RECEIPT_FILE = "receipt-ed25519.key"
    PUBLIC_FILE = "server.pub"

    def __init__(self, mlkem_seed: bytes, x25519_raw: bytes, receipt_raw: bytes):
        self._mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(x25519_raw)
        self._receipt = ed25519.Ed25519PrivateKey.from_private_bytes(receipt_raw)
        self._raw = (mlkem_seed, x25519_raw, receipt_raw)
        self.public = ServerPublicKey(
            mlkem768=self._mlkem.public_key().public_bytes_raw(),
            x25519=self._x25519.public_key().public_bytes_raw(),
            receipt_key=self._receipt.public_key().public_bytes_raw(),
        )

    @classmethod
    def generate(cls) -> "ServerKeyPair":
        return cls(os.urandom(64), os.urandom(32), os.urandom(32))

    def unwrap(self, suite: int, wrapped: bytes, info: bytes) -> bytes:
        """Recover a segment key.  Raises cryptography's InvalidTag family on failure."""
        if suite == SUITE_MLKEM768_X25519:
            sk = hpke.MLKEM768X25519PrivateKey(self._mlkem, self._x25519)
        elif suite == SUITE_X25519:
            sk = self._x25519
        else:
            raise KeyFileError(f"unknown suite {suite}; known: {sorted(SUITES)}")
        return _hpke_suite(suite).decrypt(wrapped, sk, info=info)

    def sign(self, message: bytes) -> bytes:
        """Sign with the receipt key (receipts, audit checkpoints)."""
        return self._receipt.sign(message)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        for name, raw in zip((self.MLKEM_FILE, self.X25519_FILE, self.RECEIPT_FILE), self._raw):
            atomic_write(directory / name, raw, mode=0o600)
        atomic_write(directory / self.PUBLIC_FILE, self.public.to_json().encode(), mode=0o644)

    @classmethod
    def load(cls, directory: Path) -> "ServerKeyPair":
        directory = Path(directory)
        raws = []
        for name, size in ((cls.MLKEM_FILE, 64), (cls.X25519_FILE, 32), (cls.RECEIPT_FILE, 32)):
            path = directory / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raise KeyFileError(f"server key {path} not found (create one with `bwv keys server`)") from None
            except OSError as e:
                raise KeyFileError(f"cannot read server key {path}: {e.strerror}") from None
            if len(raw) != size:
                raise KeyFileError(f"server key {path}: expected {size} bytes, found {len(raw)}")
            raws.append(raw)
        return cls(*raws)


class DeviceKey:
    """A camera's Ed25519 signing key and its id."""

    FILE = "device-ed25519.pem"

    def __init__(self, device_id: str, private: ed25519.Ed25519PrivateKey):
        if not DEVICE_ID_RE.match(device_id):
            raise KeyFileError(f"device id {device_id!r} is not 1-64 letters, digits, '.', '_' or '-'")
        self.device_id = device_id
        self._private = private
        self.public_bytes = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, device_id: str) -> "DeviceKey":
        return cls(device_id, ed25519.Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._private.public_key()

    def public_record(self) -> dict:
        return {"format": DEVICE_FORMAT, "device_id": self.device_id, "ed25519": _b64(self.public_bytes)}

    def save(self, path: Path) -> None:
        pem = self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        atomic_write(Path(path), pem, mode=0o600)

    @classmethod
    def load(cls, device_id: str, path: Path) -> "DeviceKey":
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyFileError(f"device key {path} not found (enrol with `bwv keys device --id {device_id}`)") from None
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"device key {path} is not a PEM private key: {e}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFileError(f"device key {path} is not an Ed25519 key")
        return cls(device_id, key)


def parse_device_record(doc: object, where: str) -> tuple[str, ed25519.Ed25519PublicKey]:
    """Check a registry record ({format, device_id, ed25519}) and return (id, public key)."""
    if not isinstance(doc, dict) or doc.get("format") != DEVICE_FORMAT:
        raise KeyFileError(f"{where}: not a device record (expected format {DEVICE_FORMAT!r})")
    device_id = doc.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise KeyFileError(f"{where}: bad device id {device_id!r}")
    raw = _unb64(doc.get("ed25519"), f"{where}: ed25519", 32)
    return device_id, ed25519.Ed25519PublicKey.from_public_bytes(raw)
