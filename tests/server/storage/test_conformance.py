"""The storage contract (base.py), checked against every implementation by the same tests."""

from __future__ import annotations

import asyncio

import pytest

from mailslot.errors import (
    ConflictError,
    InputError,
    MessageIdConflict,
    NotFoundError,
    QueueFull,
    QuotaExceeded,
)
from mailslot.server.storage import (
    LATEST_VERSION,
    AccountRow,
    DeviceRow,
    NewMessage,
    Storage,
)
from mailslot.server.storage.base import BlobRow

BIG_QUEUE = 1000


def dev(n: int) -> bytes:
    return bytes([n]) * 16


def mid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def account(handle: str, version: int = 1, *, disabled: bool = False) -> AccountRow:
    return AccountRow(
        handle=handle,
        account_key=b"account-key-" + handle.encode(),
        list_version=version,
        device_list=b"list-%d-" % version + handle.encode(),
        created_at_ms=1_000,
        disabled=disabled,
    )


def device(n: int, handle: str) -> DeviceRow:
    return DeviceRow(dev(n), handle, b"sign-" + dev(n))


async def register(store: Storage, handle: str, *numbers: int) -> None:
    await store.create_account(account(handle), [device(n, handle) for n in numbers])


def message(
    n: int,
    *recipients: int,
    sender: str = "alice",
    sender_device: int = 1,
    accepted_at_ms: int = 5_000,
    expires_at_ms: int = 100_000,
) -> NewMessage:
    return NewMessage(
        message_id=mid(n),
        sender=sender,
        sender_device=dev(sender_device),
        accepted_at_ms=accepted_at_ms,
        expires_at_ms=expires_at_ms,
        body=b"body-%d" % n,
        keys={dev(r): b"key-%d-for-%d" % (n, r) for r in recipients},
    )


async def queued_ids(store: Storage, device_number: int) -> list[bytes]:
    return [e.message_id for e in await store.fetch_queue(dev(device_number), 0, 1000)]


async def test_schema_is_at_the_latest_version(store: Storage) -> None:
    assert await store.schema_version() == LATEST_VERSION


# --- relay -------------------------------------------------------------------------------------
async def test_store_message_queues_one_entry_per_device(store: Storage) -> None:
    sent = message(1, 2, 3)
    stored = await store.store_message(sent, BIG_QUEUE)
    assert stored.created
    assert (stored.sender, stored.sender_device) == ("alice", dev(1))
    assert (stored.accepted_at_ms, stored.devices) == (5_000, 2)
    assert await store.message_exists(mid(1))
    [entry] = await store.fetch_queue(dev(3), 0, 10)
    assert entry.message_id == mid(1)
    assert (entry.sender, entry.sender_device, entry.accepted_at_ms) == ("alice", dev(1), 5_000)
    assert (entry.body, entry.wrapped_key) == (b"body-1", b"key-1-for-3")
    assert await store.queue_depth(dev(2)) == 1


async def test_queue_full_stores_nothing(store: Storage) -> None:
    await store.store_message(message(1, 3), max_queue=1)
    with pytest.raises(QueueFull) as caught:
        await store.store_message(message(2, 2, 3), max_queue=1)
    assert caught.value.details == {"device": dev(3).hex()}
    assert not await store.message_exists(mid(2))
    assert await store.queue_depth(dev(2)) == 0
    assert await queued_ids(store, 3) == [mid(1)]


async def test_queue_below_the_limit_accepts(store: Storage) -> None:
    await store.store_message(message(1, 2), max_queue=2)
    stored = await store.store_message(message(2, 2), max_queue=2)
    assert stored.created
    assert await store.queue_depth(dev(2)) == 2


async def test_ack_and_expire_make_room_in_a_full_queue(store: Storage) -> None:
    await store.store_message(message(1, 2, expires_at_ms=10_000), max_queue=2)
    await store.store_message(message(2, 2), max_queue=2)
    await store.ack(dev(2), [mid(2)])
    assert (await store.store_message(message(3, 2), max_queue=2)).created
    with pytest.raises(QueueFull):
        await store.store_message(message(4, 2), max_queue=2)
    await store.expire(10_000)
    assert (await store.store_message(message(4, 2), max_queue=2)).created
    assert await queued_ids(store, 2) == [mid(3), mid(4)]


async def test_restore_is_idempotent(store: Storage) -> None:
    await store.store_message(message(1, 2, 3), BIG_QUEUE)
    retry = message(1, 2, 3, accepted_at_ms=9_000)
    again = await store.store_message(retry, BIG_QUEUE)
    assert not again.created
    assert (again.accepted_at_ms, again.devices) == (5_000, 2)
    assert await store.queue_depth(dev(2)) == 1
    [entry] = await store.fetch_queue(dev(2), 0, 10)
    assert entry.accepted_at_ms == 5_000


async def test_restore_is_idempotent_even_when_queues_are_full(store: Storage) -> None:
    await store.store_message(message(1, 2), max_queue=1)
    again = await store.store_message(message(1, 2), max_queue=1)
    assert not again.created


@pytest.mark.parametrize(("sender", "sender_device"), [("alice", 9), ("mallory", 1), ("mallory", 9)])
async def test_message_id_from_another_sender(store: Storage, sender: str, sender_device: int) -> None:
    await store.store_message(message(1, 2), BIG_QUEUE)
    with pytest.raises(MessageIdConflict):
        await store.store_message(message(1, 3, sender=sender, sender_device=sender_device), BIG_QUEUE)
    assert await store.queue_depth(dev(3)) == 0


async def test_fetch_in_seq_order_with_paging(store: Storage) -> None:
    for n in range(1, 6):
        await store.store_message(message(n, 2, 3), BIG_QUEUE)
    first = await store.fetch_queue(dev(2), 0, 2)
    second = await store.fetch_queue(dev(2), first[-1].seq, 2)
    third = await store.fetch_queue(dev(2), second[-1].seq, 2)
    assert [e.message_id for e in first + second + third] == [mid(n) for n in range(1, 6)]
    seqs = [e.seq for e in first + second + third]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    assert await store.fetch_queue(dev(2), third[-1].seq, 2) == []
    assert {e.wrapped_key for e in first} == {b"key-1-for-2", b"key-2-for-2"}


async def test_fetch_with_zero_limit_returns_nothing(store: Storage) -> None:
    await store.store_message(message(1, 2), BIG_QUEUE)
    assert await store.fetch_queue(dev(2), 0, 0) == []


async def test_seq_never_goes_back_after_an_ack(store: Storage) -> None:
    await store.store_message(message(1, 2), BIG_QUEUE)
    [first] = await store.fetch_queue(dev(2), 0, 10)
    await store.ack(dev(2), [mid(1)])
    await store.store_message(message(2, 2), BIG_QUEUE)
    [second] = await store.fetch_queue(dev(2), first.seq, 10)
    assert second.message_id == mid(2)


async def test_ack_deletes_body_with_the_last_entry(store: Storage) -> None:
    await store.store_message(message(1, 2, 3), BIG_QUEUE)
    assert await store.ack(dev(2), [mid(1), mid(1)]) == 1
    assert await store.queue_depth(dev(2)) == 0
    assert await store.message_exists(mid(1))
    assert await queued_ids(store, 3) == [mid(1)]
    assert await store.ack(dev(3), [mid(1)]) == 1
    assert not await store.message_exists(mid(1))
    assert await store.ack(dev(3), [mid(1)]) == 0


async def test_ack_several_at_once(store: Storage) -> None:
    for n in range(1, 5):
        await store.store_message(message(n, 2), BIG_QUEUE)
    assert await store.ack(dev(2), [mid(1), mid(3), mid(99)]) == 2
    assert await queued_ids(store, 2) == [mid(2), mid(4)]
    assert not await store.message_exists(mid(3))
    assert await store.ack(dev(2), []) == 0


async def test_ack_of_another_devices_message_deletes_nothing(store: Storage) -> None:
    await store.store_message(message(1, 3), BIG_QUEUE)
    assert await store.ack(dev(2), [mid(1)]) == 0
    assert await store.message_exists(mid(1))
    assert await queued_ids(store, 3) == [mid(1)]


async def test_expire(store: Storage) -> None:
    await store.store_message(message(1, 2, 3, expires_at_ms=10_000), BIG_QUEUE)
    await store.store_message(message(2, 2, expires_at_ms=20_000), BIG_QUEUE)
    assert await store.expire(9_999) == 0
    assert await store.expire(10_000) == 2
    assert not await store.message_exists(mid(1))
    assert await store.message_exists(mid(2))
    assert await queued_ids(store, 2) == [mid(2)]
    assert await store.queue_depth(dev(3)) == 0
    assert await store.expire(10_000) == 0


async def test_queue_depth(store: Storage) -> None:
    assert await store.queue_depth(dev(2)) == 0
    for n in range(1, 4):
        await store.store_message(message(n, 2, 3), BIG_QUEUE)
    await store.ack(dev(3), [mid(2)])
    assert (await store.queue_depth(dev(2)), await store.queue_depth(dev(3))) == (3, 2)


async def test_message_exists(store: Storage) -> None:
    assert not await store.message_exists(mid(1))
    await store.store_message(message(1, 2), BIG_QUEUE)
    assert await store.message_exists(mid(1))


async def test_concurrent_sends_are_serialised(store: Storage) -> None:
    sends = [store.store_message(message(n, 2), max_queue=5) for n in range(1, 11)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(accepted) == 5
    assert all(isinstance(r, QueueFull) for r in refused)
    assert await store.queue_depth(dev(2)) == 5


# --- device linking ----------------------------------------------------------------------------
async def test_link_create_get_respond(store: Storage) -> None:
    await store.create_link(mid(7), b"request", expires_at_ms=1_000)
    assert await store.get_link(mid(7), now_ms=500) == (b"request", None)
    await store.respond_link(mid(7), b"response", now_ms=600)
    assert await store.get_link(mid(7), now_ms=700) == (b"request", b"response")


async def test_link_id_taken(store: Storage) -> None:
    await store.create_link(mid(7), b"first", expires_at_ms=1_000)
    with pytest.raises(ConflictError):
        await store.create_link(mid(7), b"second", expires_at_ms=2_000)
    assert await store.get_link(mid(7), now_ms=0) == (b"first", None)


async def test_link_answered_twice(store: Storage) -> None:
    await store.create_link(mid(7), b"request", expires_at_ms=1_000)
    await store.respond_link(mid(7), b"first", now_ms=500)
    with pytest.raises(ConflictError):
        await store.respond_link(mid(7), b"second", now_ms=600)
    assert await store.get_link(mid(7), now_ms=700) == (b"request", b"first")


async def test_link_unknown_or_expired(store: Storage) -> None:
    with pytest.raises(NotFoundError):
        await store.respond_link(mid(8), b"response", now_ms=0)
    await store.create_link(mid(7), b"request", expires_at_ms=1_000)
    assert await store.get_link(mid(8), now_ms=0) is None
    assert await store.get_link(mid(7), now_ms=1_000) is None
    with pytest.raises(NotFoundError):
        await store.respond_link(mid(7), b"response", now_ms=1_000)


async def test_expire_links(store: Storage) -> None:
    await store.create_link(mid(1), b"one", expires_at_ms=1_000)
    await store.create_link(mid(2), b"two", expires_at_ms=2_000)
    assert await store.expire_links(999) == 0
    assert await store.expire_links(1_000) == 1
    assert await store.get_link(mid(2), now_ms=1_500) == (b"two", None)
    await store.create_link(mid(1), b"again", expires_at_ms=3_000)
    assert await store.get_link(mid(1), now_ms=1_500) == (b"again", None)


# --- blobs ---------------------------------------------------------------------------------------
QUOTA = 1_000


def blob(
    n: int, owner: str = "alice", size: int = 100, created: int = 1_000, expires: int = 10_000
) -> BlobRow:
    return BlobRow(bytes([n]) * 32, owner, size, 0, created, expires)


async def test_create_and_get_blob(store: Storage) -> None:
    row = blob(1)
    await store.create_blob(row, QUOTA)
    assert await store.get_blob(row.blob_id, now_ms=1_000) == row
    assert await store.get_blob(blob(2).blob_id, now_ms=1_000) is None
    assert not row.complete


async def test_blob_id_taken(store: Storage) -> None:
    await store.create_blob(blob(1, size=10), QUOTA)
    with pytest.raises(ConflictError):
        await store.create_blob(blob(1, owner="bob", size=20), QUOTA)
    stored = await store.get_blob(blob(1).blob_id, now_ms=1_000)
    assert stored is not None and (stored.owner, stored.size) == ("alice", 10)


async def test_quota_counts_live_blobs_of_the_owner_only(store: Storage) -> None:
    await store.create_blob(blob(1, size=600), QUOTA)
    await store.create_blob(blob(2, owner="bob", size=900), QUOTA)  # another account's
    await store.create_blob(blob(3, size=400), QUOTA)  # exactly at the quota
    with pytest.raises(QuotaExceeded) as caught:
        await store.create_blob(blob(4, size=1), QUOTA)
    assert caught.value.details == {"quota_bytes": QUOTA, "used_bytes": 1_000}
    assert await store.get_blob(blob(4).blob_id, now_ms=1_000) is None
    assert await store.blob_usage("alice", now_ms=1_000) == 1_000
    assert await store.blob_usage("bob", now_ms=1_000) == 900


async def test_a_single_blob_over_the_quota_is_refused(store: Storage) -> None:
    with pytest.raises(QuotaExceeded):
        await store.create_blob(blob(1, size=QUOTA + 1), QUOTA)
    assert await store.blob_usage("alice", now_ms=1_000) == 0


async def test_expired_blobs_free_the_quota_before_they_are_swept(store: Storage) -> None:
    await store.create_blob(blob(1, size=800, expires=5_000), QUOTA)
    with pytest.raises(QuotaExceeded):
        await store.create_blob(blob(2, size=800, created=4_999, expires=9_000), QUOTA)
    await store.create_blob(blob(2, size=800, created=5_000, expires=9_000), QUOTA)
    assert await store.blob_usage("alice", now_ms=5_000) == 800
    assert await store.blob_usage("alice", now_ms=4_999) == 1_600


async def test_concurrent_creates_cannot_pass_the_quota_together(store: Storage) -> None:
    creates = [store.create_blob(blob(n, size=300), QUOTA) for n in range(1, 11)]
    results = await asyncio.gather(*creates, return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 3
    assert all(isinstance(r, QuotaExceeded) for r in results if isinstance(r, BaseException))
    assert await store.blob_usage("alice", now_ms=1_000) == 900


async def test_get_blob_hides_expired_blobs(store: Storage) -> None:
    await store.create_blob(blob(1, expires=5_000), QUOTA)
    assert await store.get_blob(blob(1).blob_id, now_ms=4_999) is not None
    assert await store.get_blob(blob(1).blob_id, now_ms=5_000) is None


async def test_advance_blob(store: Storage) -> None:
    await store.create_blob(blob(1, size=100), QUOTA)
    first = await store.advance_blob(blob(1).blob_id, 0, 40)
    assert (first.offset, first.complete) == (40, False)
    done = await store.advance_blob(blob(1).blob_id, 40, 100)
    assert done.complete
    assert await store.get_blob(blob(1).blob_id, now_ms=1_000) == done
    assert (await store.advance_blob(blob(1).blob_id, 100, 100)).offset == 100


async def test_advance_blob_is_a_compare_and_set(store: Storage) -> None:
    await store.create_blob(blob(1, size=100), QUOTA)
    await store.advance_blob(blob(1).blob_id, 0, 40)
    with pytest.raises(ConflictError) as caught:
        await store.advance_blob(blob(1).blob_id, 0, 50)
    assert caught.value.details == {"offset": 40}
    stored = await store.get_blob(blob(1).blob_id, now_ms=1_000)
    assert stored is not None and stored.offset == 40


async def test_concurrent_advances_from_one_offset_let_one_win(store: Storage) -> None:
    await store.create_blob(blob(1, size=100), QUOTA)
    results = await asyncio.gather(
        *(store.advance_blob(blob(1).blob_id, 0, n) for n in (10, 20, 30)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, BlobRow)]
    assert len(won) == 1
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, BlobRow))
    stored = await store.get_blob(blob(1).blob_id, now_ms=1_000)
    assert stored is not None and stored.offset == won[0].offset


@pytest.mark.parametrize("new_offset", [9, 101])
async def test_advance_blob_stays_within_the_declared_size(store: Storage, new_offset: int) -> None:
    await store.create_blob(blob(1, size=100), QUOTA)
    await store.advance_blob(blob(1).blob_id, 0, 10)
    with pytest.raises(InputError):
        await store.advance_blob(blob(1).blob_id, 10, new_offset)
    stored = await store.get_blob(blob(1).blob_id, now_ms=1_000)
    assert stored is not None and stored.offset == 10


async def test_advance_unknown_blob(store: Storage) -> None:
    with pytest.raises(NotFoundError):
        await store.advance_blob(blob(1).blob_id, 0, 1)


async def test_delete_blob(store: Storage) -> None:
    await store.create_blob(blob(1, size=QUOTA), QUOTA)
    assert await store.delete_blob(blob(1).blob_id)
    assert not await store.delete_blob(blob(1).blob_id)
    assert await store.get_blob(blob(1).blob_id, now_ms=1_000) is None
    await store.create_blob(blob(2, size=QUOTA), QUOTA)  # the quota is free again


async def test_expire_blobs(store: Storage) -> None:
    await store.create_blob(blob(2, expires=5_000), QUOTA)
    await store.create_blob(blob(1, owner="bob", expires=5_000), QUOTA)
    await store.create_blob(blob(3, expires=6_000), QUOTA)
    await store.advance_blob(blob(2).blob_id, 0, 100)  # complete blobs expire too
    assert await store.expire_blobs(4_999) == []
    assert await store.expire_blobs(5_000) == [blob(1).blob_id, blob(2).blob_id]
    assert await store.expire_blobs(5_000) == []
    with pytest.raises(NotFoundError):
        await store.advance_blob(blob(2).blob_id, 100, 100)
    assert await store.get_blob(blob(3).blob_id, now_ms=5_000) is not None
    await store.create_blob(blob(1, created=5_000), QUOTA)  # the id is free once swept


async def test_blob_usage_of_an_account_with_no_blobs(store: Storage) -> None:
    assert await store.blob_usage("nobody", now_ms=0) == 0
