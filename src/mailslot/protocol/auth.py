"""Per-request device authentication: every request is signed by the device's signing key.

The signature covers the method, the path with its query, a timestamp, a random nonce and the
SHA-256 of the body, under a domain-separation label, so a signature cannot be moved to another
request, replayed after the freshness window, or replayed inside it (the server remembers nonces
for the window). The header::

    Authorization: Mailslot device=<32 hex>, ts=<unix ms>, nonce=<32 hex>, sig=<128 hex>
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailslot.errors import AuthenticationError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.encoding import Writer
from mailslot.protocol.identity import DEVICE_ID_SIZE, DeviceKeys

SCHEME = "Mailslot"
NONCE_SIZE = 16
FRESHNESS_MS = 5 * 60 * 1000
_HEADER = re.compile(
    r"^Mailslot device=(?P<device>[0-9a-f]{32}), ts=(?P<ts>[0-9]{1,15}), "
    r"nonce=(?P<nonce>[0-9a-f]{32}), sig=(?P<sig>[0-9a-f]{128})$"
)


@dataclass(frozen=True)
class RequestSignature:
    """The parsed ``Authorization`` header of one request."""

    device_id: bytes
    timestamp_ms: int
    nonce: bytes
    signature: bytes

    def to_header(self) -> str:
        return (
            f"{SCHEME} device={self.device_id.hex()}, ts={self.timestamp_ms}, "
            f"nonce={self.nonce.hex()}, sig={self.signature.hex()}"
        )

    @classmethod
    def from_header(cls, header: str) -> RequestSignature:
        match = _HEADER.fullmatch(header)
        if match is None:
            raise AuthenticationError("malformed Authorization header")
        return cls(
            device_id=bytes.fromhex(match["device"]),
            timestamp_ms=int(match["ts"]),
            nonce=bytes.fromhex(match["nonce"]),
            signature=bytes.fromhex(match["sig"]),
        )


def signed_bytes(method: str, target: str, timestamp_ms: int, nonce: bytes, body: bytes) -> bytes:
    """What a request signature covers."""
    w = Writer().var(labels.REQUEST).text(method.upper()).text(target).u64(timestamp_ms)
    return w.fixed(nonce, NONCE_SIZE).fixed(crypto.sha256(body), 32).to_bytes()


def sign_request(
    keys: DeviceKeys, method: str, target: str, body: bytes, *, now_ms: int, nonce: bytes
) -> RequestSignature:
    """Sign one request; ``target`` is the path with its query string, as sent."""
    message = signed_bytes(method, target, now_ms, nonce, body)
    return RequestSignature(keys.device_id, now_ms, nonce, keys.sign(message))


def verify_request(
    sig: RequestSignature, sign_key: bytes, method: str, target: str, body: bytes, *, now_ms: int
) -> None:
    """Check freshness and the signature; the caller checks the nonce was not seen before."""
    if len(sig.device_id) != DEVICE_ID_SIZE:
        raise AuthenticationError("malformed device id")
    if abs(now_ms - sig.timestamp_ms) > FRESHNESS_MS:
        raise AuthenticationError("request timestamp outside the freshness window")
    try:
        message = signed_bytes(method, target, sig.timestamp_ms, sig.nonce, body)
        crypto.verify(sign_key, sig.signature, message)
    except (VerificationError, ValueError) as exc:
        raise AuthenticationError("bad request signature") from exc
