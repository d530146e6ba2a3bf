"""The key directory: accounts, their account-signed device lists and the history of those
lists, registration (by invite unless the server is open) and account recovery.

The server checks what it can so that junk never enters the directory (the list parses, is
signed by the account key and approved by the device that publishes it, is exactly the next
version, stays within limits), but clients never rely on these checks: they verify every list
themselves under the account key they pinned, and walk the history to see every change.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from mailslot.errors import (
    ConflictError,
    DecodeError,
    ForbiddenError,
    InputError,
    InviteRequired,
    RecoveryRefused,
    StaleDeviceList,
    TooManyDevices,
    UnknownHandle,
    VerificationError,
)
from mailslot.protocol import crypto
from mailslot.protocol.device_list import DeviceList, SignedDeviceList, verify_device_list
from mailslot.protocol.identity import check_handle
from mailslot.protocol.recovery import verify_recovery
from mailslot.protocol.wire import DeviceListHistory, DeviceSeen, DevicesSeen, RecoverRequest
from mailslot.server.bus import WakeupBus
from mailslot.server.config import ServerConfig
from mailslot.server.storage.base import AccountRow, DeviceRow, InviteRow, Storage

MAX_HISTORY_PAGE = 100
INVITE_PREFIX = "inv_"
INVITE_BYTES = 18

ASK_FOR_INVITE = (
    "ask the server's operator for an invite (they create one with `mailslot admin invite create`)"
)


def parse_signed_list(data: bytes) -> DeviceList:
    """Parse a signed list and check it is signed by the account key it names and approved by
    the listed device it names."""
    try:
        signed = SignedDeviceList.from_bytes(data)
        device_list = signed.parse()
        verify_device_list(signed, handle=device_list.handle, account_key=device_list.account_key)
    except DecodeError as exc:
        raise InputError(f"malformed device list: {exc.message}") from exc
    except VerificationError as exc:
        raise InputError("device list is not signed by its account key and its approver") from exc
    return device_list


def _rows(device_list: DeviceList) -> list[DeviceRow]:
    return [DeviceRow(d.device_id, device_list.handle, d.sign_key) for d in device_list.devices]


def _stored_ids(account: AccountRow) -> set[bytes]:
    """Device ids of the list an account holds now (stored lists were checked on the way in)."""
    return set(SignedDeviceList.from_bytes(account.device_list).parse().device_ids)


def _check_next_version(current: AccountRow, version: int) -> None:
    """A list replaces exactly the current one: ``StaleDeviceList`` (409) if it does not go
    above it (someone else changed the list first: fetch it and try again), ``InputError`` if
    it skips versions (a client bug; a gap would hide a change from the history)."""
    if version <= current.list_version:
        raise StaleDeviceList(
            f"device list version must be {current.list_version + 1}",
            details={"current_version": current.list_version},
        )
    if version > current.list_version + 1:
        raise InputError(
            f"device list version must be {current.list_version + 1}, not {version}",
            details={"current_version": current.list_version},
        )


# --- invites -----------------------------------------------------------------------------------
def invite_hash(token: str) -> bytes:
    """What is stored of an invite token: its SHA-256 (the token itself is shown once)."""
    return crypto.sha256(token.strip().encode())


@dataclass(frozen=True)
class NewInvite:
    token: str  # shown once to the operator, never stored
    row: InviteRow


def new_invite(now_ms: int, *, uses: int, expires_in_ms: int, note: str = "") -> NewInvite:
    """A fresh random invite token (``inv_`` and 24 URL-safe base64 characters, 144 bits)."""
    if uses < 1:
        raise InputError("an invite allows at least one registration")
    if expires_in_ms < 1:
        raise InputError("an invite must expire in the future")
    token = INVITE_PREFIX + base64.urlsafe_b64encode(crypto.random_bytes(INVITE_BYTES)).decode()
    row = InviteRow(invite_hash(token), now_ms, now_ms + expires_in_ms, uses, note)
    return NewInvite(token, row)


# --- the directory -----------------------------------------------------------------------------
class Directory:
    def __init__(self, store: Storage, config: ServerConfig, bus: WakeupBus) -> None:
        self._store = store
        self._config = config
        self._bus = bus

    def _check_size(self, device_list: DeviceList) -> None:
        if len(device_list.devices) > self._config.max_devices_per_account:
            raise TooManyDevices(
                f"an account may have at most {self._config.max_devices_per_account} devices"
            )

    async def _check_ids_free(self, device_list: DeviceList) -> None:
        for record in device_list.devices:
            existing = await self._store.get_device(record.device_id)
            if existing is not None and existing.handle != device_list.handle:
                raise ConflictError("a listed device belongs to another account")

    def _invite_hash(self, invite: str | None) -> bytes | None:
        """The hash of the invite to spend, or None on an open server (a given invite is then
        ignored). ``InviteRequired`` when the server wants one and none was given."""
        if self._config.registration == "open":
            return None
        if not invite or not invite.strip():
            raise InviteRequired(f"registration on this server needs an invite: {ASK_FOR_INVITE}")
        return invite_hash(invite)

    async def register(
        self, handle: str, data: bytes, signer: bytes, now_ms: int, invite: str | None = None
    ) -> AccountRow:
        """Create an account from its first signed list; ``signer`` signed the request.

        Unless registration is open, ``invite`` must be a stored, unexpired invite with a use
        left; the store spends one use in the same transaction that creates the account, so a
        refused registration spends nothing."""
        check_handle(handle)
        device_list = parse_signed_list(data)
        if device_list.handle != handle:
            raise InputError("the device list is for another handle")
        if device_list.version != 1:
            raise InputError("a new account's device list has version 1")
        if device_list.find(signer) is None:
            raise ForbiddenError("the request is not signed by a device in the list")
        self._check_size(device_list)
        spent = self._invite_hash(invite)
        await self._check_ids_free(device_list)
        account = AccountRow(handle, device_list.account_key, 1, data, now_ms)
        try:
            await self._store.create_account(account, _rows(device_list), invite_hash=spent)
        except InviteRequired as exc:
            raise InviteRequired(
                f"this invite is unknown, expired or used up: {ASK_FOR_INVITE}"
            ) from exc
        return account

    async def get(self, handle: str) -> AccountRow:
        check_handle(handle)
        account = await self._store.get_account(handle)
        if account is None or account.disabled:
            raise UnknownHandle(f"no account {handle!r}", details={"handles": [handle]})
        return account

    async def publish(self, handle: str, data: bytes, publisher: DeviceRow, now_ms: int) -> AccountRow:
        """Replace an account's list with its next version.

        Only a device of the account may publish, only under the account's key, only exactly
        the next version, and only a list that the publishing device itself approved (so the
        approver named in the history is the device that really made the change). Every device
        of the old and the new list is woken: sessions of removed devices close, the others
        announce the new version."""
        if publisher.handle != handle:
            raise ForbiddenError("a device may only publish its own account's device list")
        current = await self.get(handle)
        device_list = parse_signed_list(data)
        if device_list.handle != handle or device_list.account_key != current.account_key:
            raise ForbiddenError("the list is not signed by this account's key")
        _check_next_version(current, device_list.version)
        if device_list.approver != publisher.device_id:
            raise ForbiddenError("a device list must be approved by the device that publishes it")
        self._check_size(device_list)
        await self._check_ids_free(device_list)
        await self._store.replace_devices(
            handle, current.list_version, device_list.version, data, _rows(device_list), now_ms=now_ms
        )
        await self._bus.notify(sorted(_stored_ids(current) | device_list.device_ids))
        return AccountRow(handle, current.account_key, device_list.version, data, current.created_at_ms)

    async def recover(self, handle: str, request: RecoverRequest, signer: bytes, now_ms: int) -> AccountRow:
        """Replace a lost account key: the next list, under a new account key, signed for with
        the recovery key that the current list commits to.

        Checked: the account exists and is enabled; the new list parses and is for this handle
        and exactly the next version; ``signer`` (who signed the request) is in it and is its
        approver; the recovery claim verifies (``verify_recovery``; ``RecoveryRefused``
        otherwise); its devices are not another account's. Then every old device not in the
        new list is removed with its queue, and old and new devices are woken."""
        current = await self.get(handle)
        device_list = parse_signed_list(request.device_list)
        if device_list.handle != handle:
            raise InputError("the device list is for another handle")
        _check_next_version(current, device_list.version)
        if device_list.approver != signer:
            raise ForbiddenError("a recovered device list must be approved by the device that sends it")
        stored = SignedDeviceList.from_bytes(current.device_list).parse()
        try:
            verify_recovery(stored, SignedDeviceList.from_bytes(request.device_list), request.signature)
        except VerificationError as exc:
            raise RecoveryRefused(
                f"the recovery claim for {handle!r} does not verify: wrong recovery code"
            ) from exc
        self._check_size(device_list)
        await self._check_ids_free(device_list)
        await self._store.recover_account(
            handle,
            current.list_version,
            device_list.account_key,
            device_list.version,
            request.device_list,
            _rows(device_list),
            now_ms=now_ms,
        )
        await self._bus.notify(sorted(stored.device_ids | device_list.device_ids))
        return AccountRow(
            handle, device_list.account_key, device_list.version, request.device_list, current.created_at_ms
        )

    async def history(self, handle: str, after: int, limit: int) -> DeviceListHistory:
        """The account's published lists with version above ``after``, oldest first, at most
        ``limit`` (1-100) of them."""
        await self.get(handle)
        limit = max(1, min(limit, MAX_HISTORY_PAGE))
        lists = await self._store.list_history(handle, after, limit + 1)
        return DeviceListHistory(handle, lists[:limit], more=len(lists) > limit)

    async def seen(self, device: DeviceRow, recent: dict[bytes, int]) -> DevicesSeen:
        """Every current device of ``device``'s account with when it was last seen: the stored
        time, or a later one this node has not written yet (``recent``)."""
        stored = await self._store.devices_seen(device.handle)
        devices = []
        for device_id, at in sorted(stored.items()):
            local = recent.get(device_id)
            latest = at if local is None else max(at or 0, local)
            devices.append(DeviceSeen(device_id.hex(), latest))
        return DevicesSeen(devices)
