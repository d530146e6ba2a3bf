"""Authenticating devices: each request is signed by the device's Ed25519 signing key.

Checked, in order: the header parses; the device exists and its account is not disabled; the
timestamp is within the freshness window; the signature covers this method, target and body;
the nonce was not used before within the window (replay). Any failure is a 401 that does not
say which check failed beyond a short reason.

A body streamed rather than read whole (a blob upload piece) is checked in two steps:
``signer`` runs every check that needs no body before the first byte is stored, and
``check_digest`` verifies the signature over the body's SHA-256 once it is all in.
"""

from __future__ import annotations

from collections import OrderedDict

from mailslot.errors import AuthenticationError
from mailslot.protocol.auth import (
    FRESHNESS_MS,
    RequestSignature,
    check_fresh,
    verify_request,
    verify_request_digest,
)
from mailslot.server.storage.base import DeviceRow, Storage


class ReplayCache:
    """Nonces seen within the freshness window, oldest first, bounded in size."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._max = max_entries

    def check_unseen(self, nonce: bytes, now_ms: int) -> None:
        """``AuthenticationError`` if the nonce was used within the window; remembers nothing."""
        self._evict(now_ms)
        if nonce in self._seen:
            raise AuthenticationError("replayed request")

    def check_and_add(self, nonce: bytes, now_ms: int) -> None:
        self.check_unseen(nonce, now_ms)
        self._seen[nonce] = now_ms + 2 * FRESHNESS_MS
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def _evict(self, now_ms: int) -> None:
        while self._seen:
            nonce, expires = next(iter(self._seen.items()))
            if expires > now_ms:
                break
            del self._seen[nonce]


class Authenticator:
    def __init__(self, store: Storage) -> None:
        self._store = store
        self._replays = ReplayCache()

    async def device(
        self, header: str | None, method: str, target: str, body: bytes, now_ms: int
    ) -> DeviceRow:
        """The registered device that signed this request."""
        sig = parse_header(header)
        device = await self._enabled_device(sig)
        self.check(sig, device.sign_key, method, target, body, now_ms)
        return device

    async def signer(self, header: str | None, now_ms: int) -> tuple[RequestSignature, DeviceRow]:
        """Who claims to sign a request whose body is still to come, checked as far as the
        header allows: it parses, the device is registered and its account enabled, the
        timestamp is fresh and the nonce unused. Finish with ``check_digest``."""
        sig = parse_header(header)
        device = await self._enabled_device(sig)
        check_fresh(sig, now_ms=now_ms)
        self._replays.check_unseen(sig.nonce, now_ms)
        return sig, device

    async def _enabled_device(self, sig: RequestSignature) -> DeviceRow:
        device = await self._store.get_device(sig.device_id)
        if device is None:
            raise AuthenticationError("unknown device")
        if device.account_disabled:
            raise AuthenticationError("account disabled")
        return device

    def check(
        self,
        sig: RequestSignature,
        sign_key: bytes,
        method: str,
        target: str,
        body: bytes,
        now_ms: int,
    ) -> None:
        """Verify one signature against a known key, then burn its nonce."""
        verify_request(sig, sign_key, method, target, body, now_ms=now_ms)
        self._replays.check_and_add(sig.nonce, now_ms)

    def check_digest(
        self,
        sig: RequestSignature,
        sign_key: bytes,
        method: str,
        target: str,
        body_digest: bytes,
        now_ms: int,
    ) -> None:
        """``check`` for a body known by its SHA-256: verify, then burn the nonce."""
        verify_request_digest(sig, sign_key, method, target, body_digest, now_ms=now_ms)
        self._replays.check_and_add(sig.nonce, now_ms)


def parse_header(header: str | None) -> RequestSignature:
    if not header:
        raise AuthenticationError("missing Authorization header")
    return RequestSignature.from_header(header)
