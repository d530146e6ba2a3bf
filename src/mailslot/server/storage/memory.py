"""An in-memory store for unit tests, with exactly the semantics of the SQLite store.

Every method runs to completion without awaiting, so on one event loop each is atomic; each
checks everything that can fail before it changes anything, so a failed call changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import islice

from mailslot.errors import (
    ConflictError,
    HandleTaken,
    InputError,
    InviteRequired,
    MessageIdConflict,
    NotFoundError,
    QueueFull,
    QuotaExceeded,
    StaleDeviceList,
    UnknownHandle,
)
from mailslot.server.storage.base import (
    AccountDevices,
    AccountRow,
    BlobRow,
    DeviceRow,
    InviteRow,
    NewMessage,
    QueueEntry,
    QueueStats,
    RemovedDevice,
    Storage,
    StoredSend,
)
from mailslot.server.storage.list_versions import check_versions
from mailslot.server.storage.migrations import LATEST_VERSION

__all__ = ["MemoryStorage"]


@dataclass
class _Body:
    """A stored message and the devices whose queues still hold it."""

    message: NewMessage
    holders: set[bytes] = field(default_factory=set)


@dataclass(frozen=True)
class _Entry:
    seq: int
    message_id: bytes
    wrapped_key: bytes


@dataclass
class _Link:
    request: bytes
    expires_at_ms: int
    response: bytes | None = None


class MemoryStorage(Storage):
    """Dictionaries in one process, gone with the object."""

    def __init__(self) -> None:
        self._accounts: dict[str, AccountRow] = {}
        self._devices: dict[bytes, DeviceRow] = {}
        self._devices_by_handle: dict[str, set[bytes]] = {}
        self._history: dict[str, dict[int, bytes]] = {}  # handle -> version -> signed list
        self._last_seen: dict[bytes, int] = {}  # current devices only
        self._removed: dict[bytes, RemovedDevice] = {}
        self._invites: dict[bytes, InviteRow] = {}
        self._bodies: dict[bytes, _Body] = {}
        # device id -> message id -> entry; insertion order is seq order, as seq only grows.
        self._queues: dict[bytes, dict[bytes, _Entry]] = {}
        self._links: dict[bytes, _Link] = {}
        self._blobs: dict[bytes, BlobRow] = {}
        self._last_seq = 0

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Nothing to connect to; the schema is the code."""

    async def close(self) -> None:
        """Nothing to release; the data lives as long as the object."""

    async def schema_version(self) -> int:
        return LATEST_VERSION

    async def ping(self) -> None:
        """Always answers: the data is in this process."""

    # --- accounts and devices ----------------------------------------------------------------
    async def create_account(
        self, account: AccountRow, devices: list[DeviceRow], *, invite_hash: bytes | None = None
    ) -> None:
        invite = None if invite_hash is None else self._usable_invite(invite_hash, account.created_at_ms)
        if account.handle in self._accounts:
            raise HandleTaken(f"handle {account.handle!r} is taken")
        self._check_unowned(account.handle, devices)
        if invite is not None:
            self._invites[invite.token_hash] = replace(invite, uses_left=invite.uses_left - 1)
        self._accounts[account.handle] = account
        self._devices_by_handle[account.handle] = set()
        self._history[account.handle] = {account.list_version: account.device_list}
        self._add_devices(devices)

    async def get_account(self, handle: str) -> AccountRow | None:
        return self._accounts.get(handle)

    async def list_accounts(self) -> list[tuple[AccountRow, int]]:
        return [
            (self._accounts[handle], len(self._devices_by_handle[handle]))
            for handle in sorted(self._accounts)
        ]

    async def set_disabled(self, handle: str, disabled: bool) -> None:
        account = self._accounts.get(handle)
        if account is None:
            raise UnknownHandle(f"no account {handle!r}")
        self._accounts[handle] = replace(account, disabled=disabled)

    async def replace_devices(
        self,
        handle: str,
        expected_version: int,
        new_version: int,
        device_list: bytes,
        devices: list[DeviceRow],
        *,
        now_ms: int,
    ) -> list[bytes]:
        account = self._swappable(handle, expected_version, new_version, devices)
        return self._swap(
            replace(account, list_version=new_version, device_list=device_list), devices, now_ms
        )

    async def recover_account(
        self,
        handle: str,
        expected_version: int,
        account_key: bytes,
        new_version: int,
        device_list: bytes,
        devices: list[DeviceRow],
        *,
        now_ms: int,
    ) -> list[bytes]:
        account = self._swappable(handle, expected_version, new_version, devices)
        renewed = replace(account, account_key=account_key, list_version=new_version, device_list=device_list)
        return self._swap(renewed, devices, now_ms)

    async def list_history(self, handle: str, after_version: int, limit: int) -> list[bytes]:
        lists = self._history.get(handle, {})
        later = sorted(version for version in lists if version > after_version)
        return [lists[version] for version in later[: max(limit, 0)]]

    async def removed_device(self, device_id: bytes) -> RemovedDevice | None:
        return self._removed.get(device_id)

    async def touch_devices(self, seen: dict[bytes, int]) -> None:
        for device_id, at_ms in seen.items():
            if device_id in self._devices:
                self._last_seen[device_id] = max(self._last_seen.get(device_id, at_ms), at_ms)

    async def devices_seen(self, handle: str) -> dict[bytes, int | None]:
        return {
            device_id: self._last_seen.get(device_id) for device_id in self._devices_by_handle.get(handle, ())
        }

    async def get_device(self, device_id: bytes) -> DeviceRow | None:
        device = self._devices.get(device_id)
        if device is None:
            return None
        account = self._accounts[device.handle]
        return replace(device, account_disabled=account.disabled, list_version=account.list_version)

    async def devices_of(self, handles: list[str]) -> dict[str, AccountDevices]:
        return {
            handle: AccountDevices(self._accounts[handle].list_version, set(self._devices_by_handle[handle]))
            for handle in handles
            if handle in self._accounts
        }

    # --- invites -----------------------------------------------------------------------------
    async def create_invite(self, invite: InviteRow) -> None:
        if invite.token_hash in self._invites:
            raise ConflictError("the invite already exists")
        self._invites[invite.token_hash] = invite

    async def list_invites(self) -> list[InviteRow]:
        return sorted(self._invites.values(), key=lambda i: (-i.created_at_ms, i.token_hash))

    async def revoke_invite(self, token_hash: bytes) -> bool:
        return self._invites.pop(token_hash, None) is not None

    # --- relay -------------------------------------------------------------------------------
    async def store_message(self, message: NewMessage, max_queue: int) -> StoredSend:
        stored = self._bodies.get(message.message_id)
        if stored is not None:
            return _replay(stored.message, message)
        for device_id in message.keys:
            if len(self._queues.get(device_id, ())) >= max_queue:
                raise QueueFull(
                    f"device {device_id.hex()} has {max_queue} queued messages",
                    details={"device": device_id.hex()},
                )
        self._bodies[message.message_id] = _Body(message, set(message.keys))
        for device_id, wrapped_key in message.keys.items():
            self._last_seq += 1
            queue = self._queues.setdefault(device_id, {})
            queue[message.message_id] = _Entry(self._last_seq, message.message_id, wrapped_key)
        return StoredSend(
            True,
            message.sender,
            message.sender_device,
            message.accepted_at_ms,
            len(message.keys),
        )

    async def fetch_queue(self, device_id: bytes, after_seq: int, limit: int) -> list[QueueEntry]:
        entries = self._queues.get(device_id, {}).values()
        later = (entry for entry in entries if entry.seq > after_seq)
        return [self._entry(entry) for entry in islice(later, max(limit, 0))]

    async def ack(self, device_id: bytes, message_ids: list[bytes]) -> int:
        queue = self._queues.get(device_id, {})
        deleted = [mid for mid in dict.fromkeys(message_ids) if queue.pop(mid, None) is not None]
        self._release(device_id, deleted)
        return len(deleted)

    async def queue_depth(self, device_id: bytes) -> int:
        return len(self._queues.get(device_id, ()))

    async def queue_stats(self) -> QueueStats:
        heads = [next(iter(queue.values())) for queue in self._queues.values() if queue]
        if not heads:
            return QueueStats(0, None)
        oldest = min(heads, key=lambda entry: entry.seq)
        entries = sum(len(queue) for queue in self._queues.values())
        return QueueStats(entries, self._bodies[oldest.message_id].message.accepted_at_ms)

    async def message_exists(self, message_id: bytes) -> bool:
        return message_id in self._bodies

    async def expire(self, now_ms: int) -> int:
        expired = [
            (message_id, body)
            for message_id, body in self._bodies.items()
            if body.message.expires_at_ms <= now_ms
        ]
        count = 0
        for message_id, body in expired:
            for device_id in body.holders:
                del self._queues[device_id][message_id]
            count += len(body.holders)
            del self._bodies[message_id]
        return count

    # --- device linking ----------------------------------------------------------------------
    async def create_link(self, link_id: bytes, request: bytes, expires_at_ms: int) -> None:
        if link_id in self._links:
            raise ConflictError(f"link {link_id.hex()} already exists")
        self._links[link_id] = _Link(request, expires_at_ms)

    async def get_link(self, link_id: bytes, now_ms: int) -> tuple[bytes, bytes | None] | None:
        link = self._live_link(link_id, now_ms)
        return None if link is None else (link.request, link.response)

    async def respond_link(self, link_id: bytes, response: bytes, now_ms: int) -> None:
        link = self._live_link(link_id, now_ms)
        if link is None:
            raise NotFoundError(f"no pending link {link_id.hex()}")
        if link.response is not None:
            raise ConflictError(f"link {link_id.hex()} was already answered")
        link.response = response

    async def expire_links(self, now_ms: int) -> int:
        expired = [lid for lid, link in self._links.items() if link.expires_at_ms <= now_ms]
        for link_id in expired:
            del self._links[link_id]
        return len(expired)

    # --- blobs -------------------------------------------------------------------------------
    async def create_blob(self, blob: BlobRow, quota_bytes: int) -> None:
        if blob.blob_id in self._blobs:
            raise ConflictError(f"blob {blob.blob_id.hex()} already exists")
        used = self._usage(blob.owner, blob.created_at_ms)
        if used + blob.size > quota_bytes:
            raise QuotaExceeded(
                f"the account's blobs would pass its quota of {quota_bytes} bytes",
                details={"quota_bytes": quota_bytes, "used_bytes": used},
            )
        self._blobs[blob.blob_id] = blob

    async def get_blob(self, blob_id: bytes, now_ms: int) -> BlobRow | None:
        blob = self._blobs.get(blob_id)
        return blob if blob is not None and blob.expires_at_ms > now_ms else None

    async def advance_blob(self, blob_id: bytes, expected_offset: int, new_offset: int) -> BlobRow:
        blob = self._blobs.get(blob_id)
        if blob is None:
            raise NotFoundError(f"no blob {blob_id.hex()}")
        if blob.offset != expected_offset:
            raise ConflictError(
                f"blob offset is {blob.offset}, not {expected_offset}", details={"offset": blob.offset}
            )
        if not expected_offset <= new_offset <= blob.size:
            raise InputError(f"offset {new_offset} is outside {expected_offset}..{blob.size}")
        advanced = self._blobs[blob_id] = replace(blob, offset=new_offset)
        return advanced

    async def delete_blob(self, blob_id: bytes) -> bool:
        return self._blobs.pop(blob_id, None) is not None

    async def expire_blobs(self, now_ms: int) -> list[bytes]:
        expired = sorted(bid for bid, blob in self._blobs.items() if blob.expires_at_ms <= now_ms)
        for blob_id in expired:
            del self._blobs[blob_id]
        return expired

    async def blob_usage(self, handle: str, now_ms: int) -> int:
        return self._usage(handle, now_ms)

    # --- helpers -----------------------------------------------------------------------------
    def _usage(self, handle: str, now_ms: int) -> int:
        return sum(
            blob.size for blob in self._blobs.values() if blob.owner == handle and blob.expires_at_ms > now_ms
        )

    def _usable_invite(self, token_hash: bytes, now_ms: int) -> InviteRow:
        """The invite if it can still be used at ``now_ms``; ``InviteRequired`` otherwise."""
        invite = self._invites.get(token_hash)
        if invite is None or invite.expires_at_ms <= now_ms or invite.uses_left <= 0:
            raise InviteRequired("the invite is unknown, expired or used up")
        return invite

    def _swappable(
        self, handle: str, expected_version: int, new_version: int, devices: list[DeviceRow]
    ) -> AccountRow:
        """The account whose list may go from ``expected_version`` to ``new_version``, or raise."""
        check_versions(expected_version, new_version)
        account = self._accounts.get(handle)
        if account is None:
            raise UnknownHandle(f"no account {handle!r}")
        if account.list_version != expected_version:
            raise StaleDeviceList(f"device list is at version {account.list_version}, not {expected_version}")
        self._check_unowned(handle, devices)
        return account

    def _swap(self, account: AccountRow, devices: list[DeviceRow], now_ms: int) -> list[bytes]:
        """Store the new account row, its list in the history, and the new set of devices."""
        handle = account.handle
        self._accounts[handle] = account
        self._history[handle][account.list_version] = account.device_list
        removed = sorted(self._devices_by_handle[handle] - {device.device_id for device in devices})
        for device_id in removed:
            self._drop_device(device_id)
            self._removed[device_id] = RemovedDevice(device_id, handle, account.list_version, now_ms)
        self._add_devices(devices)
        return removed

    def _check_unowned(self, handle: str, devices: Iterable[DeviceRow]) -> None:
        """``ConflictError`` if a device id already belongs to another account."""
        for device in devices:
            owner = self._devices.get(device.device_id)
            if owner is not None and owner.handle != handle:
                raise ConflictError(f"device {device.device_id.hex()} belongs to another account")

    def _add_devices(self, devices: Iterable[DeviceRow]) -> None:
        for device in devices:
            self._devices[device.device_id] = device
            self._devices_by_handle[device.handle].add(device.device_id)
            self._removed.pop(device.device_id, None)  # a device added back is no longer removed

    def _drop_device(self, device_id: bytes) -> None:
        """Forget a device, its queue, and any body only it still held."""
        device = self._devices.pop(device_id)
        self._last_seen.pop(device_id, None)
        self._devices_by_handle[device.handle].discard(device_id)
        self._release(device_id, list(self._queues.pop(device_id, {})))

    def _release(self, device_id: bytes, message_ids: Iterable[bytes]) -> None:
        """The device no longer holds these messages; delete bodies nobody holds."""
        for message_id in message_ids:
            body = self._bodies[message_id]
            body.holders.discard(device_id)
            if not body.holders:
                del self._bodies[message_id]

    def _live_link(self, link_id: bytes, now_ms: int) -> _Link | None:
        link = self._links.get(link_id)
        return link if link is not None and link.expires_at_ms > now_ms else None

    def _entry(self, entry: _Entry) -> QueueEntry:
        message = self._bodies[entry.message_id].message
        return QueueEntry(
            entry.seq,
            entry.message_id,
            message.sender,
            message.sender_device,
            message.accepted_at_ms,
            message.body,
            entry.wrapped_key,
        )


def _replay(first: NewMessage, retry: NewMessage) -> StoredSend:
    """The answer to a send whose id is already stored: the first acceptance, or a conflict."""
    if (first.sender, first.sender_device) != (retry.sender, retry.sender_device):
        raise MessageIdConflict(f"message id {retry.message_id.hex()} is used by another sender")
    return StoredSend(False, first.sender, first.sender_device, first.accepted_at_ms, len(first.keys))
