"""The key directory: accounts and their account-signed device lists.

The server checks what it can so that junk never enters the directory (the list parses, is
signed by the account key, raises the version, stays within limits), but clients never rely on
these checks: they verify every list themselves under the account key they pinned.
"""

from __future__ import annotations

from mailslot.errors import (
    ConflictError,
    DecodeError,
    ForbiddenError,
    InputError,
    StaleDeviceList,
    TooManyDevices,
    UnknownHandle,
    VerificationError,
)
from mailslot.protocol.device_list import DeviceList, SignedDeviceList, verify_device_list
from mailslot.protocol.identity import check_handle
from mailslot.server.bus import WakeupBus
from mailslot.server.config import ServerConfig
from mailslot.server.storage.base import AccountRow, DeviceRow, Storage


def parse_signed_list(data: bytes) -> DeviceList:
    """Parse a signed list and check it is signed by the account key it names."""
    try:
        signed = SignedDeviceList.from_bytes(data)
        device_list = signed.parse()
        verify_device_list(signed, handle=device_list.handle, account_key=device_list.account_key)
    except DecodeError as exc:
        raise InputError(f"malformed device list: {exc.message}") from exc
    except VerificationError as exc:
        raise InputError("device list is not signed by its account key") from exc
    return device_list


def _rows(device_list: DeviceList) -> list[DeviceRow]:
    return [DeviceRow(d.device_id, device_list.handle, d.sign_key) for d in device_list.devices]


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

    async def register(self, handle: str, data: bytes, signer: bytes, now_ms: int) -> AccountRow:
        """Create an account from its first signed list; ``signer`` signed the request."""
        check_handle(handle)
        device_list = parse_signed_list(data)
        if device_list.handle != handle:
            raise InputError("the device list is for another handle")
        if device_list.version != 1:
            raise InputError("a new account's device list has version 1")
        if device_list.find(signer) is None:
            raise ForbiddenError("the request is not signed by a device in the list")
        self._check_size(device_list)
        await self._check_ids_free(device_list)
        account = AccountRow(handle, device_list.account_key, 1, data, now_ms)
        await self._store.create_account(account, _rows(device_list))
        return account

    async def get(self, handle: str) -> AccountRow:
        check_handle(handle)
        account = await self._store.get_account(handle)
        if account is None or account.disabled:
            raise UnknownHandle(f"no account {handle!r}", details={"handles": [handle]})
        return account

    async def publish(self, handle: str, data: bytes, publisher: DeviceRow) -> AccountRow:
        """Replace an account's list; only its own devices, only under its account key."""
        if publisher.handle != handle:
            raise ForbiddenError("a device may only publish its own account's device list")
        current = await self.get(handle)
        device_list = parse_signed_list(data)
        if device_list.handle != handle or device_list.account_key != current.account_key:
            raise ForbiddenError("the list is not signed by this account's key")
        if device_list.version <= current.list_version:
            raise StaleDeviceList(
                f"device list version must be above {current.list_version}",
                details={"current_version": current.list_version},
            )
        self._check_size(device_list)
        await self._check_ids_free(device_list)
        removed = await self._store.replace_devices(
            handle, current.list_version, device_list.version, data, _rows(device_list)
        )
        await self._bus.notify(removed)
        return AccountRow(handle, current.account_key, device_list.version, data, current.created_at_ms)
