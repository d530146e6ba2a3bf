"""Verified device lists: fetched from the server, checked, pinned and cached.

The server hands out device lists but cannot make one; this module is where the client makes
sure of that. A list is used only when, in order:

1. it parses, and names the handle that was asked for;
2. the account key it names has signed the exact list bytes (checked before any pinning
   decision, so a list nobody signed never gets as far as a trust question);
3. that key is the one pinned for the handle. On first contact it is pinned, at the level the
   trust policy gives (``_first_trust``); a different key later is ``KeyChanged``, naming
   both fingerprints, unless the policy is ``always`` (then it is pinned anew, trusted but
   unverified, with a warning in the log);
4. its version is not lower than the version already stored (no rollback), and a same-version
   list has the same bytes.

Verified lists are cached in memory and in the store; the network is asked again only when the
caller says so (a device mismatch on send, or a sender device missing from the cached list).

When a refresh shows that a contact's devices changed (same account key, a device came or
went), a contact notice is recorded (``DeviceAlert`` with ``own=False``) and passed to
``on_alert``. Contacts have no approvals to check and may skip versions.

This account's OWN list never comes from here: ``get`` hands it over to ``own_lists``
(``alerts.own_list``, wired by the session), which uses only the list the alert walk checked
step by step, and refuses it while a change no device of the account approved is in force.
A list the account key signed is not enough for the own account: the key may be stolen.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from mailslot.client.models import DeviceAlert, TrustLevel, TrustPolicy
from mailslot.client.store import Store, key_changed
from mailslot.client.transport import Transport, now_ms
from mailslot.errors import ConfigError, DecodeError, InputError, VerificationError
from mailslot.protocol import wire
from mailslot.protocol.device_changes import device_changes
from mailslot.protocol.device_list import DeviceList, SignedDeviceList, verify_device_list
from mailslot.protocol.identity import check_handle
from mailslot.protocol.safety import fingerprint

log = logging.getLogger("mailslot.client")


class OwnLists(Protocol):
    """Where this account's own list comes from (``alerts.own_list``): the walked list, walked
    again first if ``refresh``; ``checked`` refuses one that a change nobody approved made."""

    def __call__(self, *, refresh: bool, checked: bool) -> Awaitable[DeviceList]: ...


class Directory:
    """Device lists this device trusts, by handle."""

    def __init__(
        self,
        transport: Transport,
        store: Store,
        policy: TrustPolicy = "on-first-use",
        *,
        own: str | None = None,
    ) -> None:
        self._transport = transport
        self._store = store
        self._cache: dict[str, DeviceList] = {}
        self.policy = policy
        self.own = own  # this device's handle: its list comes from ``own_lists``
        self.own_lists: OwnLists | None = None
        self.on_alert: Callable[[DeviceAlert], None] | None = None

    async def get(self, handle: str, *, refresh: bool = False) -> DeviceList:
        """The verified list of ``handle``: cached unless ``refresh``, else from the server.

        The own account's list is the walked one, refused while a change no device approved
        is in force (see the module docstring)."""
        check_handle(handle)
        if handle == self.own:
            return await self._own_lists()(refresh=refresh, checked=True)
        if not refresh:
            cached = self._cache.get(handle) or self._load(handle)
            if cached is not None:
                return cached
        return await self._fetch(handle)

    async def walked_own(self) -> DeviceList:
        """The own list the server serves now, reached by the alert walk, even while a change
        no device approved is in force: for the flows that publish the next version (removing
        the device nobody approved is how the list becomes usable again)."""
        return await self._own_lists()(refresh=True, checked=False)

    def _own_lists(self) -> OwnLists:
        if self.own_lists is None:  # fail closed: never the server's word for the own list
            raise ConfigError("this directory has no source for the own device list")
        return self.own_lists

    def cached_version(self, handle: str) -> int | None:
        """The version of the list this device would use for ``handle`` now, if it has one
        (for the own account: the walked list's)."""
        if handle == self.own:
            checkpoint = self._store.checkpoint(handle)
            return checkpoint[0] if checkpoint is not None else None
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

    def forget(self, handle: str) -> None:
        """Drop the cached list of ``handle`` (after its pinned key was replaced)."""
        self._cache.pop(handle, None)

    async def fetch_served(self, handle: str) -> tuple[SignedDeviceList, DeviceList]:
        """The list the server serves for ``handle`` now; see ``fetch_served``."""
        return await fetch_served(self._transport, handle)

    async def _fetch(self, handle: str) -> DeviceList:
        signed, device_list = await self.fetch_served(handle)
        self._pin(handle, device_list.account_key)
        previous = self._cache.get(handle) or self._load(handle)
        self.remember(signed, device_list)
        if previous is not None and handle != self.own:
            self._notice(previous, device_list)
        return device_list

    def _notice(self, previous: DeviceList, new: DeviceList) -> None:
        """Record a contact notice for each device that came or went between two verified
        lists under the same account key (a new key is a trust question, not a notice)."""
        if new.account_key != previous.account_key or new.version <= previous.version:
            return
        approver = new.find(new.approver)
        notices = [
            DeviceAlert(
                id=0, handle=new.handle, version=new.version, at=new.issued_at_ms, kind=change.kind,
                device_id=change.device_id.hex(), device_name=change.name,
                approver_id=new.approver.hex(), approver_name=approver.name if approver else "",
                attack=False, own=False, seen=False,
            )
            for change in device_changes(previous, new)
            if change.kind in ("added", "removed")
        ]
        for alert in self._store.add_alerts(notices):
            log.info("%s: device %r (%s) %s", alert.handle, alert.device_name, alert.device_id, alert.kind)
            if self.on_alert is not None:
                self.on_alert(alert)

    def _pin(self, handle: str, served: bytes) -> None:
        """Apply the trust policy to the key the server serves for ``handle`` (see above)."""
        contact = self._store.pinned_key(handle)
        if contact is None:
            self._store.pin(handle, served, now_ms(), _first_trust(self.policy))
        elif contact != served:
            if self.policy != "always":
                raise key_changed(handle, contact, served)
            log.warning(
                "the account key of %s changed from %s to %s; accepted (policy: always), unverified",
                handle,
                fingerprint(contact),
                fingerprint(served),
            )
            self._store.repin(handle, served, now_ms(), "trusted-unverified")
            self.forget(handle)


async def fetch_served(transport: Transport, handle: str) -> tuple[SignedDeviceList, DeviceList]:
    """The list the server serves for ``handle`` now, verified under the key it names.

    Nothing is pinned or stored: this is what a trust decision (or a recovery) looks at. The
    list is for ``handle`` and its own account key signed it, so the server cannot show a key
    with a device list that key never signed; whether that key is the right one is the
    question the pin, the safety code and the user answer.
    """
    check_handle(handle)
    response = await transport.call("GET", f"/v1/accounts/{handle}/devices", wire.DeviceListResponse)
    if response.handle != handle:
        raise VerificationError(f"the server answered for {response.handle!r}, not {handle!r}")
    try:
        signed = SignedDeviceList.from_bytes(response.device_list)
        claimed_key = signed.parse().account_key
    except DecodeError as exc:
        raise VerificationError(f"the device list of {handle!r} is malformed") from exc
    try:
        device_list = verify_device_list(signed, handle=handle, account_key=claimed_key)
    except VerificationError as exc:
        raise VerificationError(
            f"the server sent a device list for {handle!r} that its account key did not sign; "
            "refusing it (a device the account never approved?)"
        ) from exc
    return signed, device_list


def _first_trust(policy: TrustPolicy) -> TrustLevel:
    if policy == "never":
        return "untrusted"
    if policy in ("on-first-use", "always"):
        return "trusted-unverified"
    raise InputError(f"unknown trust policy {policy!r}")
