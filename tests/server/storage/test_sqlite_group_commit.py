"""Group commit: concurrent writes share COMMITs, and each succeeds or fails on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailslot.errors import HandleTaken, MessageIdConflict
from mailslot.server.storage import AccountRow, DeviceRow, NewMessage
from mailslot.server.storage.sqlite import SqliteStorage


def account(i: int) -> tuple[AccountRow, list[DeviceRow]]:
    handle = f"user{i}"
    return AccountRow(handle, b"k", 1, b"list", 1), [DeviceRow(bytes([i]) * 16, handle, b"s")]


def message(message_id: bytes, sender: str, device: bytes, recipient: bytes) -> NewMessage:
    return NewMessage(message_id, sender, device, 1, 10**12, b"body", {recipient: b"key"})


async def test_concurrent_writes_are_grouped_and_fail_alone(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "db.sqlite")
    await store.open()
    try:
        accounts = [account(i) for i in range(1, 41)]
        duplicate = (AccountRow("user1", b"other", 1, b"list", 1), [DeviceRow(b"\xff" * 16, "user1", b"s")])
        results = await asyncio.gather(
            *(store.create_account(a, d) for a, d in [*accounts, duplicate]), return_exceptions=True
        )
        assert results[:40] == [None] * 40
        assert isinstance(results[40], HandleTaken)
        assert store._writer is not None
        assert store._writer.groups_committed < 41  # they did not each pay for a COMMIT
        assert (await store.get_account("user1")) == accounts[0][0]
        assert await store.get_device(b"\xff" * 16) is None  # the failed job left nothing

        sender, recipient = accounts[0][1][0], accounts[1][1][0]
        first = message(b"\x01" * 16, "user1", sender.device_id, recipient.device_id)
        stolen = message(b"\x01" * 16, "user3", accounts[2][1][0].device_id, recipient.device_id)
        others = [
            message(bytes([i]) * 16, "user1", sender.device_id, recipient.device_id) for i in range(2, 30)
        ]
        await store.store_message(first, max_queue=100)
        outcomes = await asyncio.gather(
            *(store.store_message(m, max_queue=100) for m in [stolen, *others]), return_exceptions=True
        )
        assert isinstance(outcomes[0], MessageIdConflict)
        assert all(not isinstance(o, BaseException) and o.created for o in outcomes[1:])
        assert await store.queue_depth(recipient.device_id) == 29
    finally:
        await store.close()


async def test_writes_are_visible_to_reads_once_answered(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "db.sqlite")
    await store.open()
    try:
        for i in range(1, 20):
            row, devices = account(i)
            await store.create_account(row, devices)
            assert await store.get_device(devices[0].device_id) == devices[0]
    finally:
        await store.close()
