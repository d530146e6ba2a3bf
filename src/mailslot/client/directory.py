"""Verified device lists: fetched from the server, checked, pinned and cached.

The server hands out device lists but cannot make one; this module is where the client makes
sure of that. A list is used only when, in order:

1. it parses, and names the handle that was asked for;
2. its account key is the one pinned for that handle (on first contact the key is pinned only
   after the signature has verified under it; a different key later is ``KeyChanged``);
3. the account key's signature over the exact list bytes verifies;
4. its version is not lower than the version already stored (no rollback), and a same-version
   list has the same bytes.

Verified lists are cached in memory and in the store; the network is asked again only when the
caller says so (a device mismatch on send, or a sender device missing from the cached list).
"""

from __future__ import annotations

from mailslot.client.store import Store
from mailslot.client.transport import Transport, now_ms
from mailslot.errors import DecodeError, VerificationError
from mailslot.protocol import wire
from mailslot.protocol.device_list import DeviceList, SignedDeviceList, verify_device_list
from mailslot.protocol.identity import check_handle


class Directory:
    """Device lists this device trusts, by handle."""

    def __init__(self, transport: Transport, store: Store) -> None:
        self._transport = transport
        self._store = store
        self._cache: dict[str, DeviceList] = {}

    async def get(self, handle: str, *, refresh: bool = False) -> DeviceList:
        """The verified list of ``handle``: cached unless ``refresh``, else from the server."""
        check_handle(handle)
        if not refresh:
            cached = self._cache.get(handle) or self._load(handle)
            if cached is not None:
                return cached
        return await self._fetch(handle)

    def cached_version(self, handle: str) -> int | None:
        """The version of the list this device would use for ``handle`` now, if it has one."""
        cached = self._cache.get(handle) or self._load(handle)
        return cached.version if cached is not None else None

    def remember(self, signed: SignedDeviceList, device_list: DeviceList) -> None:
        """Keep a list this device verified or signed itself (after a link, say)."""
        self._store.save_device_list(device_list.handle, device_list.version, signed.to_bytes())
        self._cache[device_list.handle] = device_list

    def _load(self, handle: str) -> DeviceList | None:
        """The stored list, verified again under the pinned key (the disk is not trusted more)."""
        stored = self._store.device_list(handle)
        pinned = self._store.pinned_key(handle)
        if stored is None or pinned is None:
            return None
        try:
            signed = SignedDeviceList.from_bytes(stored[1])
            device_list = verify_device_list(signed, handle=handle, account_key=pinned)
        except (DecodeError, VerificationError):
            return None
        self._cache[handle] = device_list
        return device_list

    async def _fetch(self, handle: str) -> DeviceList:
        response = await self._transport.call(
            "GET", f"/v1/accounts/{handle}/devices", wire.DeviceListResponse
        )
        if response.handle != handle:
            raise VerificationError(f"the server answered for {response.handle!r}, not {handle!r}")
        try:
            signed = SignedDeviceList.from_bytes(response.device_list)
            claimed_key = signed.parse().account_key
        except DecodeError as exc:
            raise VerificationError(f"the device list of {handle!r} is malformed") from exc
        pinned = self._store.pinned_key(handle)
        if pinned is not None and pinned != claimed_key:
            self._store.pin(handle, claimed_key, now_ms())  # raises KeyChanged naming the handle
        device_list = verify_device_list(signed, handle=handle, account_key=claimed_key)
        if pinned is None:
            self._store.pin(handle, claimed_key, now_ms())
        self.remember(signed, device_list)
        return device_list
