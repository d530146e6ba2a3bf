"""The storage contract for accounts, devices, device list history and invites (base.py),
checked against every implementation by the same tests."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from mailslot.errors import (
    ConflictError,
    HandleTaken,
    InputError,
    InviteRequired,
    StaleDeviceList,
    UnknownHandle,
)
from mailslot.server.storage import DeviceRow, Storage
from mailslot.server.storage.base import AccountDevices, InviteRow, RemovedDevice
from tests.server.storage.test_conformance import (
    BIG_QUEUE,
    account,
    dev,
    device,
    message,
    mid,
    queued_ids,
    register,
)

NOW = 50_000  # when a test's list changes happen


def devices(handle: str, *numbers: int) -> list[DeviceRow]:
    return [device(n, handle) for n in numbers]


async def replace(store: Storage, handle: str, version: int, *numbers: int, now_ms: int = NOW) -> list[bytes]:
    """Publish ``list-<version>`` with these devices over version ``version - 1``."""
    return await store.replace_devices(
        handle, version - 1, version, b"list-%d" % version, devices(handle, *numbers), now_ms=now_ms
    )


def invite(n: int, *, uses: int = 1, created: int = 500, expires: int = 2_000, note: str = "") -> InviteRow:
    return InviteRow(hashlib.sha256(b"token-%d" % n).digest(), created, expires, uses, note)


async def uses_left(store: Storage, n: int) -> int | None:
    found = [i.uses_left for i in await store.list_invites() if i.token_hash == invite(n).token_hash]
    return found[0] if found else None


# --- accounts ------------------------------------------------------------------------------------
async def test_create_and_get_account(store: Storage) -> None:
    row = account("alice", version=3, disabled=True)
    await store.create_account(row, [device(1, "alice"), device(2, "alice")])
    assert await store.get_account("alice") == row
    assert await store.get_account("bob") is None


async def test_create_account_starts_the_history_at_its_version(store: Storage) -> None:
    await register(store, "alice", 1)
    assert await store.list_history("alice", 0, 10) == [account("alice").device_list]
    await store.create_account(account("bob", version=3), [device(2, "bob")])
    assert await store.list_history("bob", 2, 10) == [account("bob", version=3).device_list]
    assert await store.list_history("bob", 3, 10) == []


async def test_handle_taken(store: Storage) -> None:
    await register(store, "alice", 1)
    with pytest.raises(HandleTaken):
        await store.create_account(account("alice", version=9), [device(2, "alice")])
    assert await store.get_account("alice") == account("alice")
    assert await store.get_device(dev(2)) is None
    assert await store.list_history("alice", 0, 10) == [account("alice").device_list]


async def test_create_account_with_a_taken_device_id_stores_nothing(store: Storage) -> None:
    await register(store, "alice", 1)
    with pytest.raises(ConflictError):
        await store.create_account(account("bob"), [device(2, "bob"), device(1, "bob")])
    assert await store.get_account("bob") is None
    assert await store.get_device(dev(2)) is None
    assert await store.get_device(dev(1)) == device(1, "alice")
    assert await store.list_history("bob", 0, 10) == []


async def test_get_device(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    found = await store.get_device(dev(2))
    assert found == device(2, "alice")
    assert found is not None and not found.account_disabled
    assert found.list_version == 1
    assert await store.get_device(dev(3)) is None


async def test_get_device_carries_the_account_disabled_flag(store: Storage) -> None:
    await store.create_account(account("mallory", disabled=True), [device(4, "mallory")])
    found = await store.get_device(dev(4))
    assert found is not None and found.account_disabled


async def test_get_device_carries_the_current_list_version(store: Storage) -> None:
    await store.create_account(account("alice", version=4), [device(1, "alice")])
    found = await store.get_device(dev(1))
    assert found is not None and found.list_version == 4
    await store.replace_devices("alice", 4, 5, b"list-5", devices("alice", 1, 2), now_ms=NOW)
    for number in (1, 2):
        found = await store.get_device(dev(number))
        assert found is not None and found.list_version == 5


async def test_list_accounts_with_device_counts_by_handle(store: Storage) -> None:
    assert await store.list_accounts() == []
    await register(store, "carol")
    await register(store, "alice", 1, 2)
    await store.create_account(account("bob", disabled=True), [device(3, "bob")])
    assert await store.list_accounts() == [
        (account("alice"), 2),
        (account("bob", disabled=True), 1),
        (account("carol"), 0),
    ]


async def test_set_disabled(store: Storage) -> None:
    await register(store, "alice", 1)
    await register(store, "bob", 2)
    await store.set_disabled("alice", True)
    assert await store.get_account("alice") == account("alice", disabled=True)
    found = await store.get_device(dev(1))
    assert found is not None and found.account_disabled
    other = await store.get_device(dev(2))
    assert other is not None and not other.account_disabled
    await store.set_disabled("alice", True)  # already disabled: no change, no error
    await store.set_disabled("alice", False)
    assert await store.get_account("alice") == account("alice")
    found = await store.get_device(dev(1))
    assert found is not None and not found.account_disabled


async def test_set_disabled_unknown_handle(store: Storage) -> None:
    with pytest.raises(UnknownHandle):
        await store.set_disabled("nobody", True)
    assert await store.list_accounts() == []


async def test_devices_of(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await register(store, "bob", 3)
    await register(store, "carol")
    await replace(store, "bob", 2, 3)
    found = await store.devices_of(["alice", "bob", "carol", "nobody", "alice"])
    assert found == {
        "alice": AccountDevices(1, {dev(1), dev(2)}),
        "bob": AccountDevices(2, {dev(3)}),
        "carol": AccountDevices(1, set()),
    }
    assert found["bob"].version == 2 and found["bob"].device_ids == {dev(3)}
    assert await store.devices_of([]) == {}


# --- registration with an invite -----------------------------------------------------------------
async def test_registration_spends_one_use_of_the_invite(store: Storage) -> None:
    await store.create_invite(invite(1, uses=2))
    await store.create_account(account("alice"), [device(1, "alice")], invite_hash=invite(1).token_hash)
    assert await uses_left(store, 1) == 1
    await store.create_account(account("bob"), [device(2, "bob")], invite_hash=invite(1).token_hash)
    assert await uses_left(store, 1) == 0
    with pytest.raises(InviteRequired):
        await store.create_account(account("carol"), [device(3, "carol")], invite_hash=invite(1).token_hash)
    assert await store.get_account("carol") is None
    assert await store.get_device(dev(3)) is None
    assert await store.list_history("carol", 0, 10) == []
    assert await uses_left(store, 1) == 0


async def test_registration_without_an_invite_leaves_invites_alone(store: Storage) -> None:
    await store.create_invite(invite(1))
    await register(store, "alice", 1)
    assert await store.list_invites() == [invite(1)]


@pytest.mark.parametrize(
    ("stored", "created_at_ms"),
    [
        (None, 1_000),  # unknown
        (invite(1, expires=1_000), 1_000),  # expired at the moment of registration
        (invite(1, expires=999), 1_000),
        (invite(1, uses=0), 1_000),  # used up
    ],
)
async def test_an_unusable_invite_is_refused(
    store: Storage, stored: InviteRow | None, created_at_ms: int
) -> None:
    if stored is not None:
        await store.create_invite(stored)
    with pytest.raises(InviteRequired):
        await store.create_account(account("alice"), [device(1, "alice")], invite_hash=invite(1).token_hash)
    assert await store.get_account("alice") is None
    assert await store.get_device(dev(1)) is None
    assert await store.list_invites() == ([] if stored is None else [stored])


async def test_an_invite_is_good_until_just_before_it_expires(store: Storage) -> None:
    await store.create_invite(invite(1, expires=1_001))  # account("...") is created at 1_000
    await store.create_account(account("alice"), [device(1, "alice")], invite_hash=invite(1).token_hash)
    assert await uses_left(store, 1) == 0


async def test_a_refused_registration_spends_no_invite(store: Storage) -> None:
    await register(store, "alice", 1)
    await store.create_invite(invite(1))
    with pytest.raises(HandleTaken):
        await store.create_account(account("alice"), [device(2, "alice")], invite_hash=invite(1).token_hash)
    with pytest.raises(ConflictError):
        await store.create_account(account("bob"), [device(1, "bob")], invite_hash=invite(1).token_hash)
    assert await uses_left(store, 1) == 1
    assert await store.get_account("bob") is None


async def test_an_unusable_invite_is_refused_before_the_handle_is_checked(store: Storage) -> None:
    await register(store, "alice", 1)
    with pytest.raises(InviteRequired):
        await store.create_account(account("alice"), [device(2, "alice")], invite_hash=invite(1).token_hash)


async def test_concurrent_registrations_cannot_overspend_an_invite(store: Storage) -> None:
    await store.create_invite(invite(1, uses=2))
    registrations = [
        store.create_account(account(f"user{n}"), [device(n, f"user{n}")], invite_hash=invite(1).token_hash)
        for n in range(1, 9)
    ]
    results = await asyncio.gather(*registrations, return_exceptions=True)
    assert sum(r is None for r in results) == 2
    assert all(isinstance(r, InviteRequired) for r in results if r is not None)
    assert len(await store.list_accounts()) == 2
    assert await uses_left(store, 1) == 0


# --- invites -------------------------------------------------------------------------------------
async def test_create_and_list_invites_newest_first(store: Storage) -> None:
    assert await store.list_invites() == []
    await store.create_invite(invite(1, created=100, note="for bob"))
    await store.create_invite(invite(2, created=300, uses=5))
    await store.create_invite(invite(3, created=200, expires=150))  # already expired: still listed
    assert await store.list_invites() == [
        invite(2, created=300, uses=5),
        invite(3, created=200, expires=150),
        invite(1, created=100, note="for bob"),
    ]


async def test_invite_hash_taken(store: Storage) -> None:
    await store.create_invite(invite(1, note="first"))
    with pytest.raises(ConflictError):
        await store.create_invite(invite(1, uses=9, note="second"))
    assert await store.list_invites() == [invite(1, note="first")]


async def test_revoke_invite(store: Storage) -> None:
    await store.create_invite(invite(1))
    await store.create_invite(invite(2))
    assert await store.revoke_invite(invite(1).token_hash)
    assert not await store.revoke_invite(invite(1).token_hash)
    assert await store.list_invites() == [invite(2)]
    with pytest.raises(InviteRequired):
        await store.create_account(account("alice"), [device(1, "alice")], invite_hash=invite(1).token_hash)


# --- replacing the device list -------------------------------------------------------------------
async def test_replace_devices(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    renewed = DeviceRow(dev(1), "alice", b"new-sign-key")
    removed = await store.replace_devices("alice", 1, 2, b"list-2", [renewed, device(3, "alice")], now_ms=NOW)
    assert removed == [dev(2)]
    stored = await store.get_account("alice")
    assert stored is not None
    assert (stored.list_version, stored.device_list) == (2, b"list-2")
    assert stored.account_key == account("alice").account_key
    assert await store.devices_of(["alice"]) == {"alice": AccountDevices(2, {dev(1), dev(3)})}
    assert await store.get_device(dev(1)) == renewed
    assert await store.get_device(dev(2)) is None


async def test_replace_devices_returns_removed_ids_sorted(store: Storage) -> None:
    await register(store, "alice", 5, 1, 9, 3)
    assert await replace(store, "alice", 2, 3) == [dev(1), dev(5), dev(9)]


async def test_replace_devices_joins_the_history(store: Storage) -> None:
    await register(store, "alice", 1)
    await replace(store, "alice", 2, 1, 2)
    await replace(store, "alice", 3, 2)
    assert await store.list_history("alice", 0, 10) == [account("alice").device_list, b"list-2", b"list-3"]


async def test_replace_devices_remembers_removed_devices(store: Storage) -> None:
    await register(store, "alice", 1, 2, 3)
    await replace(store, "alice", 2, 1, 3, now_ms=7_000)
    await replace(store, "alice", 3, 1, now_ms=8_000)
    assert await store.removed_device(dev(2)) == RemovedDevice(dev(2), "alice", 2, 7_000)
    assert await store.removed_device(dev(3)) == RemovedDevice(dev(3), "alice", 3, 8_000)
    assert await store.removed_device(dev(1)) is None  # still listed
    assert await store.removed_device(dev(4)) is None  # never known


async def test_a_device_listed_again_is_no_longer_removed(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await replace(store, "alice", 2, 1)
    await replace(store, "alice", 3, 1, 2)
    assert await store.removed_device(dev(2)) is None
    found = await store.get_device(dev(2))
    assert found == device(2, "alice") and found.list_version == 3
    await replace(store, "alice", 4, 1, now_ms=9_000)
    assert await store.removed_device(dev(2)) == RemovedDevice(dev(2), "alice", 4, 9_000)


async def test_a_removed_device_registered_again_is_no_longer_removed(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await replace(store, "alice", 2, 1)
    await register(store, "bob", 2)
    assert await store.removed_device(dev(2)) is None
    assert await store.get_device(dev(2)) == device(2, "bob")


async def test_staying_devices_keep_their_last_seen(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await store.touch_devices({dev(1): 4_000, dev(2): 4_500})
    renewed = DeviceRow(dev(1), "alice", b"new-sign-key")
    await store.replace_devices("alice", 1, 2, b"list-2", [renewed, device(3, "alice")], now_ms=NOW)
    assert await store.devices_seen("alice") == {dev(1): 4_000, dev(3): None}


async def test_replace_devices_stale_version_changes_nothing(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await replace(store, "alice", 2, 1, 2)
    with pytest.raises(StaleDeviceList):
        await store.replace_devices("alice", 1, 3, b"list-3", [device(1, "alice")], now_ms=NOW)
    stored = await store.get_account("alice")
    assert stored is not None
    assert (stored.list_version, stored.device_list) == (2, b"list-2")
    assert await store.devices_of(["alice"]) == {"alice": AccountDevices(2, {dev(1), dev(2)})}
    assert await store.list_history("alice", 1, 10) == [b"list-2"]
    assert await store.removed_device(dev(2)) is None


@pytest.mark.parametrize("new_version", [1, 0])
async def test_replace_devices_must_move_the_version_forward(store: Storage, new_version: int) -> None:
    await register(store, "alice", 1, 2)
    with pytest.raises(InputError):
        await store.replace_devices("alice", 1, new_version, b"again", [device(1, "alice")], now_ms=NOW)
    assert await store.get_account("alice") == account("alice")
    assert await store.list_history("alice", 0, 10) == [account("alice").device_list]
    assert await store.removed_device(dev(2)) is None


async def test_replace_devices_of_unknown_handle(store: Storage) -> None:
    with pytest.raises(UnknownHandle):
        await store.replace_devices("nobody", 1, 2, b"list", [device(1, "nobody")], now_ms=NOW)
    assert await store.list_history("nobody", 0, 10) == []


async def test_replace_devices_with_another_accounts_device_changes_nothing(store: Storage) -> None:
    await register(store, "alice", 1, 3)
    await register(store, "bob", 2)
    with pytest.raises(ConflictError):
        await replace(store, "alice", 2, 1, 2)
    assert await store.get_account("alice") == account("alice")
    assert await store.get_device(dev(2)) == device(2, "bob")
    assert await store.get_device(dev(3)) == device(3, "alice")
    assert await store.removed_device(dev(3)) is None
    assert await store.list_history("alice", 0, 10) == [account("alice").device_list]


async def test_replace_devices_drops_departed_queues_and_orphan_bodies(store: Storage) -> None:
    await register(store, "alice", 1, 2, 3)
    await store.store_message(message(1, 2, 3), BIG_QUEUE)  # shared with a staying device
    await store.store_message(message(2, 3), BIG_QUEUE)  # held only by the departing one
    removed = await replace(store, "alice", 2, 1, 2)
    assert removed == [dev(3)]
    assert await store.queue_depth(dev(3)) == 0
    assert await store.fetch_queue(dev(3), 0, 10) == []
    assert await queued_ids(store, 2) == [mid(1)]
    assert await store.message_exists(mid(1))
    assert not await store.message_exists(mid(2))


# --- recovery ------------------------------------------------------------------------------------
async def test_recover_account(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await store.store_message(message(1, 1, 2), BIG_QUEUE)
    removed = await store.recover_account(
        "alice", 1, b"new-account-key", 2, b"list-2", [device(7, "alice")], now_ms=NOW
    )
    assert removed == [dev(1), dev(2)]
    stored = await store.get_account("alice")
    assert stored is not None
    assert (stored.account_key, stored.list_version, stored.device_list) == (b"new-account-key", 2, b"list-2")
    assert (stored.created_at_ms, stored.disabled) == (1_000, False)
    assert await store.devices_of(["alice"]) == {"alice": AccountDevices(2, {dev(7)})}
    assert await store.list_history("alice", 1, 10) == [b"list-2"]
    assert await store.removed_device(dev(1)) == RemovedDevice(dev(1), "alice", 2, NOW)
    assert await store.removed_device(dev(2)) == RemovedDevice(dev(2), "alice", 2, NOW)
    assert await store.queue_depth(dev(1)) == 0
    assert not await store.message_exists(mid(1))
    assert await store.devices_seen("alice") == {dev(7): None}


async def test_recover_account_may_keep_devices(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await store.touch_devices({dev(2): 3_000})
    removed = await store.recover_account(
        "alice", 1, b"new-account-key", 2, b"list-2", devices("alice", 2, 7), now_ms=NOW
    )
    assert removed == [dev(1)]
    assert await store.devices_seen("alice") == {dev(2): 3_000, dev(7): None}


async def test_recover_account_errors_change_nothing(store: Storage) -> None:
    await register(store, "alice", 1)
    await register(store, "bob", 2)
    with pytest.raises(StaleDeviceList):
        await store.recover_account("alice", 2, b"new-key", 3, b"list-3", devices("alice", 7), now_ms=NOW)
    with pytest.raises(ConflictError):
        await store.recover_account("alice", 1, b"new-key", 2, b"list-2", devices("alice", 2), now_ms=NOW)
    with pytest.raises(InputError):
        await store.recover_account("alice", 1, b"new-key", 1, b"list-1", devices("alice", 7), now_ms=NOW)
    with pytest.raises(UnknownHandle):
        await store.recover_account("nobody", 1, b"new-key", 2, b"list-2", devices("nobody", 8), now_ms=NOW)
    assert await store.get_account("alice") == account("alice")
    assert await store.devices_of(["alice"]) == {"alice": AccountDevices(1, {dev(1)})}
    assert await store.removed_device(dev(1)) is None
    assert await store.get_device(dev(7)) is None
    assert await store.list_history("alice", 0, 10) == [account("alice").device_list]


# --- history -------------------------------------------------------------------------------------
async def test_list_history_pages_in_version_order(store: Storage) -> None:
    await register(store, "alice", 1)
    await register(store, "bob", 2)
    for version in range(2, 7):
        await replace(store, "alice", version, 1)
    await replace(store, "bob", 2, 2)
    first = account("alice").device_list
    assert await store.list_history("alice", 0, 3) == [first, b"list-2", b"list-3"]
    assert await store.list_history("alice", 3, 3) == [b"list-4", b"list-5", b"list-6"]
    assert await store.list_history("alice", 6, 3) == []
    assert await store.list_history("alice", 0, 0) == []
    assert await store.list_history("nobody", 0, 10) == []


# --- last seen -----------------------------------------------------------------------------------
async def test_touch_devices_keeps_the_latest_time(store: Storage) -> None:
    await register(store, "alice", 1, 2, 3)
    await register(store, "bob", 4)
    assert await store.devices_seen("alice") == {dev(1): None, dev(2): None, dev(3): None}
    await store.touch_devices({dev(1): 5_000, dev(2): 6_000, dev(4): 7_000, dev(9): 8_000})
    await store.touch_devices({dev(1): 4_000, dev(2): 6_500})  # an older time changes nothing
    assert await store.devices_seen("alice") == {dev(1): 5_000, dev(2): 6_500, dev(3): None}
    assert await store.devices_seen("bob") == {dev(4): 7_000}
    await store.touch_devices({})
    assert await store.devices_seen("nobody") == {}


async def test_touch_devices_ignores_unknown_and_removed_devices(store: Storage) -> None:
    await register(store, "alice", 1, 2)
    await replace(store, "alice", 2, 1)
    await store.touch_devices({dev(2): 5_000, dev(8): 5_000})
    assert await store.devices_seen("alice") == {dev(1): None}
    await replace(store, "alice", 3, 1, 2)  # added back: never seen since
    assert await store.devices_seen("alice") == {dev(1): None, dev(2): None}


async def test_concurrent_touches_keep_the_latest_time(store: Storage) -> None:
    numbers = range(1, 9)
    await register(store, "alice", *numbers)
    touches = [
        store.touch_devices({dev(n): 1_000 * t + n for n in (numbers if t % 2 else reversed(numbers))})
        for t in range(1, 11)
    ]
    await asyncio.gather(*touches)
    assert await store.devices_seen("alice") == {dev(n): 10_000 + n for n in numbers}
