"""What only the SQLite store has: a file that outlives it, WAL, the schema version guard."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from mailslot.errors import ConfigError, QueueFull, SchemaTooNew, ServerError
from mailslot.server.storage import (
    LATEST_VERSION,
    AccountRow,
    DeviceRow,
    NewMessage,
    StoredSend,
)
from mailslot.server.storage.sqlite import SqliteStorage

ALICE = AccountRow("alice", b"account-key", 1, b"list-1", 1_000)
PHONE = DeviceRow(b"\x01" * 16, "alice", b"sign-key")
HELLO = NewMessage(
    message_id=b"\x07" * 16,
    sender="alice",
    sender_device=PHONE.device_id,
    accepted_at_ms=2_000,
    expires_at_ms=9_000,
    body=b"hello",
    keys={PHONE.device_id: b"wrapped"},
)


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file with a plain sqlite3 connection, as an operator would."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = SqliteStorage(path)
    await first.open()
    await first.create_account(ALICE, [PHONE])
    await first.store_message(HELLO, max_queue=10)
    await first.close()

    second = SqliteStorage(path)
    await second.open()
    try:
        assert await second.get_account("alice") == ALICE
        assert await second.get_device(PHONE.device_id) == PHONE
        [entry] = await second.fetch_queue(PHONE.device_id, 0, 10)
        assert (entry.message_id, entry.body, entry.wrapped_key) == (
            HELLO.message_id,
            b"hello",
            b"wrapped",
        )
    finally:
        await second.close()


async def test_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStorage(path, synchronous="NORMAL")
    await store.open()
    await store.close()
    assert query(path, "PRAGMA journal_mode") == [("wal",)]


async def test_migrations_apply_on_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    store = SqliteStorage(path)
    await store.open()
    try:
        assert await store.schema_version() == LATEST_VERSION
    finally:
        await store.close()
    tables = {name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"accounts", "devices", "messages", "queue", "links", "schema_version"} <= tables
    assert {"device_list_history", "removed_devices", "invites"} <= tables
    versions = query(path, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, LATEST_VERSION + 1)]


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    for _ in range(2):
        store = SqliteStorage(path)
        await store.open()
        await store.close()
    assert query(path, "SELECT COUNT(*) FROM schema_version") == [(LATEST_VERSION,)]


async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStorage(path)
    await store.open()
    await store.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "INSERT INTO schema_version (version, name) VALUES (?, 'from_the_future')",
            (LATEST_VERSION + 1,),
        )

    newer = SqliteStorage(path)
    with pytest.raises(SchemaTooNew) as caught:
        await newer.open()
    assert caught.value.details == {"database": LATEST_VERSION + 1, "known": LATEST_VERSION}
    with pytest.raises(ServerError):  # it did not stay half-open
        await newer.schema_version()


async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file, it is just text" * 100)
    with pytest.raises(ConfigError):
        await SqliteStorage(path).open()


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "store.db")
    await store.open()
    try:
        with pytest.raises(ServerError):  # a device of an account that does not exist
            await store.create_account(ALICE, [DeviceRow(b"\x02" * 16, "nobody", b"key")])
        assert await store.get_account("alice") is None
    finally:
        await store.close()


async def test_two_stores_on_one_file_serialise_writes(tmp_path: Path) -> None:
    """Two connections (as two server processes would be) wait for each other's write lock."""
    stores = [SqliteStorage(tmp_path / "store.db") for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        sends = [
            stores[n % 2].store_message(
                NewMessage(
                    bytes([n]) * 16, "alice", PHONE.device_id, 2_000, 9_000, b"hi", {PHONE.device_id: b"key"}
                ),
                max_queue=10,
            )
            for n in range(20)
        ]
        results = await asyncio.gather(*sends, return_exceptions=True)
        assert sum(isinstance(r, QueueFull) for r in results) == 10
        assert all(isinstance(r, QueueFull | StoredSend) for r in results)
        assert await stores[0].queue_depth(PHONE.device_id) == 10
    finally:
        for store in stores:
            await store.close()


def test_synchronous_must_be_full_or_normal(tmp_path: Path) -> None:
    assert SqliteStorage(tmp_path / "a.db", synchronous="normal")
    with pytest.raises(ConfigError):
        SqliteStorage(tmp_path / "a.db", synchronous="OFF")


async def test_calls_on_a_closed_store_fail_cleanly(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "store.db")
    with pytest.raises(ServerError):
        await store.queue_depth(b"x")
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(ServerError):
        await store.queue_depth(b"x")


@pytest.mark.parametrize(("mode", "level"), [("FULL", 2), ("NORMAL", 1)])
async def test_synchronous_is_applied(tmp_path: Path, mode: str, level: int) -> None:
    store = SqliteStorage(tmp_path / "store.db", synchronous=mode)
    await store.open()
    try:
        # The setting is per connection, so ask the store's own connection, on its thread.
        applied = await store._read(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        assert applied == level
    finally:
        await store.close()
