"""Authenticating devices: each request is signed by the device's Ed25519 signing key.

Checked, in order: the header parses; the device exists and its account is not disabled; the
timestamp is within the freshness window; the signature covers this method, target and body;
the nonce was not used before within the window (replay). Any failure is a 401 that does not
say which check failed beyond a short reason, with one exception: a device that a published
list removed gets 403 ``device_removed`` naming the account and the list version that removed
it, so its owner learns why it stopped working. That is said before the signature is checked;
it reveals nothing, since every version of every account's list is public (the history).

Every successful check also notes the device as seen (``LastSeen``); those times reach storage
in batches, at most once a minute per device, never as a write per request.

A body streamed rather than read whole (a blob upload piece) is checked in two steps:
``signer`` runs every check that needs no body before the first byte is stored, and
``check_digest`` verifies the signature over the body's SHA-256 once it is all in.
"""

from __future__ import annotations

from collections import OrderedDict

from mailslot.errors import AuthenticationError, DeviceRemoved
from mailslot.protocol.auth import (
    FRESHNESS_MS,
    RequestSignature,
    check_fresh,
    verify_request,
    verify_request_digest,
)
from mailslot.server.storage.base import DeviceRow, RemovedDevice, Storage

SEEN_RESOLUTION_MS = 60_000  # a device's stored last_seen moves at most this often


def removal_error(removed: RemovedDevice) -> DeviceRemoved:
    """The 403 a removed device gets, on any request and on the WebSocket."""
    return DeviceRemoved(
        f"this device was removed from account {removed.handle} (device list version {removed.version})",
        details={"handle": removed.handle, "version": removed.version, "removed_at": removed.removed_at_ms},
    )


class LastSeen:
    """When this node last authenticated each device, written to storage in batches.

    ``seen`` only touches memory. A device is queued for writing when this node has not
    written it within ``SEEN_RESOLUTION_MS``; ``flush`` (called every few seconds by the app,
    and at shutdown) writes the queue in one ``touch_devices`` transaction. So a busy device
    costs one write a minute per node, and stored times are at most about a minute old.
    """

    def __init__(self, store: Storage, resolution_ms: int = SEEN_RESOLUTION_MS) -> None:
        self._store = store
        self._resolution_ms = resolution_ms
        self._written: dict[bytes, int] = {}  # device -> the time last written, within resolution
        self._pending: dict[bytes, int] = {}  # device -> latest time not yet written

    def seen(self, device_id: bytes, now_ms: int) -> None:
        written = self._written.get(device_id)
        if written is None or now_ms - written >= self._resolution_ms or device_id in self._pending:
            self._pending[device_id] = now_ms

    def recent(self) -> dict[bytes, int]:
        """The latest time this node saw each device it saw lately (written or not)."""
        return self._written | self._pending

    async def flush(self, now_ms: int) -> int:
        """Write the queued times; how many. On a storage failure they stay queued."""
        self._written = {d: t for d, t in self._written.items() if now_ms - t < self._resolution_ms}
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            await self._store.touch_devices(batch)
        except Exception:
            for device_id, at in batch.items():
                self._pending[device_id] = max(at, self._pending.get(device_id, at))
            raise
        self._written.update(batch)
        return len(batch)


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
    def __init__(self, store: Storage, last_seen: LastSeen | None = None) -> None:
        self._store = store
        self._replays = ReplayCache()
        self.last_seen = last_seen or LastSeen(store)

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
            removed = await self._store.removed_device(sig.device_id)
            if removed is not None:
                raise removal_error(removed)
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
        self.last_seen.seen(sig.device_id, now_ms)

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
        self.last_seen.seen(sig.device_id, now_ms)


def parse_header(header: str | None) -> RequestSignature:
    if not header:
        raise AuthenticationError("missing Authorization header")
    return RequestSignature.from_header(header)
