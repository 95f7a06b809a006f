"""Receipts: the evidence server's signed word that it holds a segment.

A camera frees a segment's storage only against a receipt that (a) verifies
with the server key the camera was enrolled with, and (b) names exactly that
segment: device, sequence number and segment hash.  A dock relays receipts but
cannot make one, so a stolen, buggy or malicious dock cannot wipe evidence.

Wire form: canonical JSON (sorted keys, no spaces) of the fields, and the
Ed25519 signature over ``CONTEXT || that JSON``, carried together as
``{"receipt": {...fields...}, "signature": base64}``.  Bounded: a receipt
document over 4 KiB is rejected before parsing.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from .errors import SegmentError
from .layout import DEVICE_ID_RE

CONTEXT = b"OpenBWV receipt v1\x00"
FORMAT = "openbwv-receipt-v1"
MAX_RECEIPT_BYTES = 4096


class ReceiptInvalid(SegmentError):
    """A receipt that is malformed, forged, or names another segment."""


@dataclass(frozen=True)
class Receipt:
    device_id: str
    sequence: int
    segment_hash: str  # hex
    size: int
    server_key_id: str  # hex: which server signed
    received_utc: str  # ISO 8601
    format: str = FORMAT

    def signed_bytes(self) -> bytes:
        return CONTEXT + json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def issue(receipt: Receipt, sign) -> dict:
    """The wire document: fields plus signature (`sign` is the server key's sign function)."""
    return {"receipt": asdict(receipt), "signature": base64.b64encode(sign(receipt.signed_bytes())).decode()}


def encode(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class ReceiptVerifier:
    """Checks receipts against one server receipt key (the one a camera was enrolled with)."""

    def __init__(self, public_key: ed25519.Ed25519PublicKey, server_key_id: bytes):
        self.public_key = public_key
        self.server_key_id = server_key_id.hex()

    def parse(self, data: bytes | dict) -> Receipt:
        """Verify a receipt's form and signature; raise ReceiptInvalid saying what is wrong."""
        if isinstance(data, (bytes, bytearray)):
            if len(data) > MAX_RECEIPT_BYTES:
                raise ReceiptInvalid(f"receipt of {len(data)} bytes exceeds {MAX_RECEIPT_BYTES}")
            try:
                doc = json.loads(data)
            except ValueError as e:
                raise ReceiptInvalid(f"receipt is not JSON: {e}") from None
        else:
            doc = data
        if not isinstance(doc, dict) or set(doc) != {"receipt", "signature"}:
            raise ReceiptInvalid("receipt must be an object with exactly 'receipt' and 'signature'")
        fields, sig_text = doc["receipt"], doc["signature"]
        if not isinstance(fields, dict) or set(fields) != set(Receipt.__dataclass_fields__):
            raise ReceiptInvalid(f"receipt fields must be exactly {sorted(Receipt.__dataclass_fields__)}")
        try:
            receipt = Receipt(**fields)
        except TypeError as e:
            raise ReceiptInvalid(f"receipt fields: {e}") from None
        checks = [
            (receipt.format == FORMAT, f"format {receipt.format!r}, expected {FORMAT!r}"),
            (isinstance(receipt.device_id, str) and bool(DEVICE_ID_RE.match(receipt.device_id)), "bad device id"),
            (isinstance(receipt.sequence, int) and not isinstance(receipt.sequence, bool) and receipt.sequence >= 1,
             "sequence must be a positive integer"),
            (isinstance(receipt.segment_hash, str) and len(receipt.segment_hash) == 64, "segment hash must be 64 hex"),
            (isinstance(receipt.size, int) and receipt.size > 0, "size must be a positive integer"),
            (receipt.server_key_id == self.server_key_id,
             f"signed by server key {receipt.server_key_id!r}, this camera trusts {self.server_key_id!r}"),
        ]
        for ok, why in checks:
            if not ok:
                raise ReceiptInvalid(f"receipt rejected: {why}")
        try:
            bytes.fromhex(receipt.segment_hash)
            sig = base64.b64decode(sig_text, validate=True)
        except (ValueError, TypeError):
            raise ReceiptInvalid("receipt rejected: hash or signature is not valid hex/base64") from None
        try:
            self.public_key.verify(sig, receipt.signed_bytes())
        except InvalidSignature:
            raise ReceiptInvalid("receipt signature does not verify with the server's receipt key (forged?)") from None
        return receipt

    def check_for(self, data: bytes | dict, *, device_id: str, sequence: int, segment_hash: bytes) -> Receipt:
        """Verify and check that the receipt names exactly this segment."""
        receipt = self.parse(data)
        if (receipt.device_id, receipt.sequence, receipt.segment_hash) != (device_id, sequence, segment_hash.hex()):
            raise ReceiptInvalid(
                f"receipt is for {receipt.device_id} #{receipt.sequence} ({receipt.segment_hash[:16]}...), "
                f"not {device_id} #{sequence} ({segment_hash.hex()[:16]}...)"
            )
        return receipt
