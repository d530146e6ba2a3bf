"""The storage interface: accounts, devices, queues, bodies, link sessions and blob metadata.

Services hold the rules; a store only keeps data and makes each method atomic. Every method
that changes state takes ``now_ms`` from its caller (no clock is read here), so tests are exact.
One conformance suite (tests/server/storage/test_conformance.py) runs against every
implementation; a new engine is done when it passes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class AccountRow:
    handle: str
    account_key: bytes
    list_version: int
    device_list: bytes  # SignedDeviceList bytes, exactly as published
    created_at_ms: int
    disabled: bool = False


@dataclass(frozen=True)
class DeviceRow:
    device_id: bytes
    handle: str
    sign_key: bytes
    # Read with the device so authenticating a request (and a WebSocket session's re-check)
    # is one lookup; not part of identity.
    account_disabled: bool = field(default=False, compare=False)
    list_version: int = field(default=0, compare=False)


class AccountDevices(NamedTuple):
    """An account's current device list version and device ids (what a send must cover)."""

    version: int
    device_ids: set[bytes]


@dataclass(frozen=True)
class RemovedDevice:
    """A device that a published list (or a recovery) dropped: kept so that the device, when
    it next calls, is told it was removed rather than that it is unknown."""

    device_id: bytes
    handle: str
    version: int  # the list version that dropped it
    removed_at_ms: int


@dataclass(frozen=True)
class InviteRow:
    """An invite token, stored only as its SHA-256 (``token_hash``); each registration that
    presents the token uses one of ``uses_left``."""

    token_hash: bytes
    created_at_ms: int
    expires_at_ms: int
    uses_left: int
    note: str = ""


@dataclass(frozen=True)
class NewMessage:
    """A message as accepted by the relay: one body, one wrapped key per recipient device."""

    message_id: bytes
    sender: str
    sender_device: bytes
    accepted_at_ms: int
    expires_at_ms: int
    body: bytes
    keys: dict[bytes, bytes]  # recipient device id -> wrapped key


@dataclass(frozen=True)
class QueueEntry:
    """One device's copy of a message, in per-device order ``seq``."""

    seq: int
    message_id: bytes
    sender: str
    sender_device: bytes
    accepted_at_ms: int
    body: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class StoredSend:
    """What ``store_message`` did: ``created`` is False when the id was already stored."""

    created: bool
    sender: str
    sender_device: bytes
    accepted_at_ms: int
    devices: int


class QueueStats(NamedTuple):
    """All queues at one moment, for the metrics: how many entries are waiting for their
    device's acknowledgement, and when the oldest of them (lowest ``seq``) was accepted."""

    entries: int
    oldest_accepted_at_ms: int | None  # None when every queue is empty


@dataclass(frozen=True)
class BlobRow:
    """One blob's metadata; its bytes live in a ``BlobStore`` under the same id.

    ``size`` is the total the owner declared when creating it, ``offset`` the bytes committed
    so far (``0 <= offset <= size``); the blob is complete, and readable, once they are equal.
    A blob counts against its owner's quota with its declared ``size`` from its creation until
    it expires, complete or not.
    """

    blob_id: bytes  # 32 random bytes chosen by the server
    owner: str  # handle of the account whose device created it
    size: int
    offset: int
    created_at_ms: int
    expires_at_ms: int

    @property
    def complete(self) -> bool:
        return self.offset == self.size


class Storage(abc.ABC):
    """Async storage; every method is one atomic transaction."""

    # --- lifecycle ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date; raise ``SchemaTooNew`` if it is newer."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Return once the database answers a trivial query; ``ServerError`` if it cannot
        (readiness, ``GET /ready``). May wait as long as a connection attempt: callers bound it."""

    # --- accounts and devices ----------------------------------------------------------------
    @abc.abstractmethod
    async def create_account(
        self, account: AccountRow, devices: list[DeviceRow], *, invite_hash: bytes | None = None
    ) -> None:
        """Insert an account, its first devices and version 1 of its list history
        (published at ``account.created_at_ms``).

        ``HandleTaken`` if the handle exists, ``ConflictError`` if a device id belongs to
        another account. With ``invite_hash``, one use of that invite is spent in the same
        transaction: ``InviteRequired`` if it is unknown, expired at ``account.created_at_ms``
        or used up. Nothing changes on any error (a refused registration spends no invite).
        """

    @abc.abstractmethod
    async def get_account(self, handle: str) -> AccountRow | None: ...

    @abc.abstractmethod
    async def list_accounts(self) -> list[tuple[AccountRow, int]]:
        """Every account with its device count, ordered by handle (for ``mailslot admin``)."""

    @abc.abstractmethod
    async def set_disabled(self, handle: str, disabled: bool) -> None:
        """Disable or enable an account; its devices fail authentication at once while it is
        disabled. ``UnknownHandle`` if there is no such account."""

    @abc.abstractmethod
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
        """Swap in a new signed list if the stored version is still ``expected_version``.

        Raises ``StaleDeviceList`` otherwise (a concurrent update won), ``UnknownHandle`` for an
        unknown handle, ``ConflictError`` if a device id belongs to another account. Queue
        entries of devices that left the list are deleted with them, and bodies only they still
        held; each removed device is remembered as a ``RemovedDevice`` (``now_ms``,
        ``new_version``). The list joins the history at ``new_version``. Devices that stay
        keep their ``last_seen``. Returns the ids of the removed devices, sorted.
        """

    @abc.abstractmethod
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
        """``replace_devices`` that also replaces the account key (an account recovery): every
        old device not in ``devices`` is removed as there. Same errors; returns removed ids."""

    @abc.abstractmethod
    async def list_history(self, handle: str, after_version: int, limit: int) -> list[bytes]:
        """Signed list bytes of ``handle`` with version > ``after_version``, ascending, at most
        ``limit``; empty for an unknown handle."""

    @abc.abstractmethod
    async def removed_device(self, device_id: bytes) -> RemovedDevice | None:
        """The removal record of a device that a list dropped, or None."""

    @abc.abstractmethod
    async def touch_devices(self, seen: dict[bytes, int]) -> None:
        """Record when devices were last seen: each known device's ``last_seen`` becomes the
        later of the stored and the given time; unknown ids are ignored. One transaction."""

    @abc.abstractmethod
    async def devices_seen(self, handle: str) -> dict[bytes, int | None]:
        """Each current device of ``handle`` with its ``last_seen`` (None: never recorded)."""

    @abc.abstractmethod
    async def get_device(self, device_id: bytes) -> DeviceRow | None:
        """The device with its account's ``disabled`` flag (for authentication), or None."""

    @abc.abstractmethod
    async def devices_of(self, handles: list[str]) -> dict[str, AccountDevices]:
        """Current list version and device ids of each known handle (unknown handles are
        absent; a known account with no devices maps to an empty set)."""

    # --- invites -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_invite(self, invite: InviteRow) -> None:
        """Store an invite; ``ConflictError`` if its hash exists."""

    @abc.abstractmethod
    async def list_invites(self) -> list[InviteRow]:
        """Every stored invite (used up and expired ones too), newest first."""

    @abc.abstractmethod
    async def revoke_invite(self, token_hash: bytes) -> bool:
        """Delete an invite; whether it existed."""

    # --- relay -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def store_message(self, message: NewMessage, max_queue: int) -> StoredSend:
        """Commit the body and every queue entry together, or nothing.

        Idempotent on ``message_id``: if it is already stored from the same sender device, store
        nothing and return the first acceptance and its device count (``created=False``); from
        another sender raise
        ``MessageIdConflict``. Raise ``QueueFull`` (details: ``device``) if any recipient device
        already holds ``max_queue`` entries.
        """

    @abc.abstractmethod
    async def fetch_queue(self, device_id: bytes, after_seq: int, limit: int) -> list[QueueEntry]:
        """Up to ``limit`` entries of the device with ``seq > after_seq``, in ``seq`` order.

        Entries past their expiry are returned until the sweeper deletes them: expiry frees
        space, it is not a promise that old mail is withheld."""

    @abc.abstractmethod
    async def ack(self, device_id: bytes, message_ids: list[bytes]) -> int:
        """Delete the device's entries for these ids at once, and any body left with no entry.

        Ids not queued for this device are ignored. Returns how many entries were deleted.
        """

    @abc.abstractmethod
    async def queue_depth(self, device_id: bytes) -> int: ...

    @abc.abstractmethod
    async def queue_stats(self) -> QueueStats:
        """Entries in all queues (expired ones the sweeper has not deleted yet included), and
        the acceptance time of the oldest, by ``seq``. Cheap: read at every metrics scrape."""

    @abc.abstractmethod
    async def message_exists(self, message_id: bytes) -> bool:
        """Whether a body for ``message_id`` is still stored."""

    @abc.abstractmethod
    async def expire(self, now_ms: int) -> int:
        """Delete entries whose message expired by ``now_ms``, and their bodies; count entries."""

    # --- device linking ----------------------------------------------------------------------
    @abc.abstractmethod
    async def create_link(self, link_id: bytes, request: bytes, expires_at_ms: int) -> None:
        """Store a link request; ``ConflictError`` if the id is taken (an expired session keeps
        its id until ``expire_links`` removes it)."""

    @abc.abstractmethod
    async def get_link(self, link_id: bytes, now_ms: int) -> tuple[bytes, bytes | None] | None:
        """(request, response or None) of an unexpired link session, or None."""

    @abc.abstractmethod
    async def respond_link(self, link_id: bytes, response: bytes, now_ms: int) -> None:
        """Attach the approving device's response; ``NotFoundError`` if expired or unknown,
        ``ConflictError`` if it was already answered."""

    @abc.abstractmethod
    async def expire_links(self, now_ms: int) -> int: ...

    # --- blobs -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_blob(self, blob: BlobRow, quota_bytes: int) -> None:
        """Insert a blob's metadata, or nothing.

        Raises ``QuotaExceeded`` (details: ``quota_bytes``, ``used_bytes``) if the sizes of the
        owner's live blobs (``expires_at_ms > blob.created_at_ms``) plus ``blob.size`` would pass
        ``quota_bytes``; the check and the insert are one atomic step, so concurrent creates
        cannot both squeeze under the quota. ``ConflictError`` if the id exists (an expired blob
        keeps its id until ``expire_blobs`` removes it).
        """

    @abc.abstractmethod
    async def get_blob(self, blob_id: bytes, now_ms: int) -> BlobRow | None:
        """The blob's metadata, or None if it is unknown or expired by ``now_ms``."""

    @abc.abstractmethod
    async def advance_blob(self, blob_id: bytes, expected_offset: int, new_offset: int) -> BlobRow:
        """Commit uploaded bytes: move the offset from ``expected_offset`` to ``new_offset``.

        A compare-and-set: ``ConflictError`` (details: ``offset``, the stored one) if the stored
        offset is not ``expected_offset`` (another upload moved it), ``NotFoundError`` if the
        blob is unknown (expiry does not matter here: a blob the sweeper has not yet removed can
        still be advanced), ``InputError`` unless ``expected_offset <= new_offset <= size``.
        Nothing changes on an error. Returns the updated row.
        """

    @abc.abstractmethod
    async def delete_blob(self, blob_id: bytes) -> bool:
        """Delete a blob's metadata at once; whether it existed."""

    @abc.abstractmethod
    async def expire_blobs(self, now_ms: int) -> list[bytes]:
        """Delete the metadata of every blob expired by ``now_ms`` (complete or not) and return
        their ids, sorted, so the caller can delete their bytes after the metadata."""

    @abc.abstractmethod
    async def blob_usage(self, handle: str, now_ms: int) -> int:
        """Sum of the declared sizes of the account's blobs still live at ``now_ms``."""
