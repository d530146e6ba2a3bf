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
    return signed_bytes_for_digest(method, target, timestamp_ms, nonce, crypto.sha256(body))


def signed_bytes_for_digest(
    method: str, target: str, timestamp_ms: int, nonce: bytes, body_digest: bytes
) -> bytes:
    """What a request signature covers, given the SHA-256 of the body instead of the body.

    For bodies streamed rather than held in memory (blob upload pieces): the receiver hashes
    the body as it arrives and checks the signature once the last byte is in.
    """
    if len(body_digest) != crypto.HASH_SIZE:
        raise ValueError("a body digest is 32 bytes")
    w = Writer().var(labels.REQUEST).text(method.upper()).text(target).u64(timestamp_ms)
    return w.fixed(nonce, NONCE_SIZE).fixed(body_digest, crypto.HASH_SIZE).to_bytes()


def sign_request(
    keys: DeviceKeys, method: str, target: str, body: bytes, *, now_ms: int, nonce: bytes
) -> RequestSignature:
    """Sign one request; ``target`` is the path with its query string, as sent."""
    return sign_request_digest(keys, method, target, crypto.sha256(body), now_ms=now_ms, nonce=nonce)


def sign_request_digest(
    keys: DeviceKeys, method: str, target: str, body_digest: bytes, *, now_ms: int, nonce: bytes
) -> RequestSignature:
    """Sign one request whose body is given by its SHA-256 (a body streamed from a file)."""
    message = signed_bytes_for_digest(method, target, now_ms, nonce, body_digest)
    return RequestSignature(keys.device_id, now_ms, nonce, keys.sign(message))


def check_fresh(sig: RequestSignature, *, now_ms: int) -> None:
    """The checks that need no body: a well-formed device id and a timestamp within
    ``FRESHNESS_MS`` of ``now_ms``. A server runs them before it reads a streamed body."""
    if len(sig.device_id) != DEVICE_ID_SIZE:
        raise AuthenticationError("malformed device id")
    if abs(now_ms - sig.timestamp_ms) > FRESHNESS_MS:
        raise AuthenticationError("request timestamp outside the freshness window")


def verify_request(
    sig: RequestSignature, sign_key: bytes, method: str, target: str, body: bytes, *, now_ms: int
) -> None:
    """Check freshness and the signature; the caller checks the nonce was not seen before."""
    verify_request_digest(sig, sign_key, method, target, crypto.sha256(body), now_ms=now_ms)


def verify_request_digest(
    sig: RequestSignature, sign_key: bytes, method: str, target: str, body_digest: bytes, *, now_ms: int
) -> None:
    """``verify_request`` for a body known by its SHA-256; the same checks, the same errors."""
    check_fresh(sig, now_ms=now_ms)
    try:
        message = signed_bytes_for_digest(method, target, sig.timestamp_ms, sig.nonce, body_digest)
        crypto.verify(sign_key, sig.signature, message)
    except (VerificationError, ValueError) as exc:
        raise AuthenticationError("bad request signature") from exc
