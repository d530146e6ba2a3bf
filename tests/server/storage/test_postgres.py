"""What only the PostgreSQL store has: migrations on a server, the version guard, several
stores (nodes) writing to one database at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from mailslot.errors import ConfigError, InviteRequired, QueueFull, SchemaTooNew, StaleDeviceList
from mailslot.server.storage import LATEST_VERSION, Storage, migrations, open_storage
from mailslot.server.storage.base import AccountDevices, InviteRow, RemovedDevice
from mailslot.server.storage.postgres import PostgresStorage, redacted
from tests.server.services import empty_database, fresh_database
from tests.server.storage.test_conformance import account, dev, device, message, mid, register
from tests.server.storage.test_migrations import scripts_up_to

TABLES = {
    *("schema_version", "accounts", "devices", "messages", "queue", "queue_depths", "links", "blobs"),
    *("device_list_history", "removed_devices", "invites"),
}


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    """Read the database with a plain connection, as an operator would."""
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A database of its own, for tests that watch the schema being made."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def shared_url(postgres_url: str) -> str:
    """The session's database, emptied (its schema is already there)."""
    empty_database(postgres_url)
    return postgres_url


@pytest.fixture
async def two_stores(shared_url: str) -> AsyncIterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two stores with pools of their own on one database, as two nodes have."""
    first, second = (PostgresStorage(shared_url, min_connections=1, max_connections=8) for _ in range(2))
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


# --- choosing it by URL --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url", ["postgresql://db.example/mailslot", "postgres://u:p@db:5433/m?sslmode=require"]
)
def test_open_storage_chooses_postgres(url: str) -> None:
    store = open_storage(url, synchronous="NORMAL", max_connections=4)  # sqlite's option: ignored
    assert isinstance(store, PostgresStorage)
    assert store.url == url


def test_bad_pool_sizes() -> None:
    with pytest.raises(ConfigError):
        PostgresStorage("postgresql://db/x", min_connections=5, max_connections=2)


def test_passwords_stay_out_of_messages() -> None:
    assert redacted("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redacted("postgresql://me@db/x") == "postgresql://me@db/x"


async def test_unreachable_database_is_a_config_error() -> None:
    store = open_storage("postgresql://postgres@127.0.0.1:1/nothing", connect_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="cannot connect"):
        await store.open()
    assert time.monotonic() - started < 5


# --- schema ----------------------------------------------------------------------------------------
async def test_migrations_apply_on_an_empty_database(fresh_url: str) -> None:
    store = PostgresStorage(fresh_url, min_connections=1)
    await store.open()
    try:
        assert await store.schema_version() == LATEST_VERSION
    finally:
        await store.close()
    tables = {
        name for (name,) in query(fresh_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert tables >= TABLES
    versions = [v for (v,) in query(fresh_url, "SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, LATEST_VERSION + 1))


async def test_explicit_migrate(fresh_url: str) -> None:
    assert await migrations.migrate(fresh_url) == (0, LATEST_VERSION)
    assert await migrations.migrate(fresh_url) == (LATEST_VERSION, LATEST_VERSION)


async def test_explicit_migrate_of_the_other_urls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert await migrations.migrate(url) == (0, LATEST_VERSION)
    assert await migrations.migrate(url) == (LATEST_VERSION, LATEST_VERSION)
    with pytest.raises(ConfigError):
        await migrations.migrate("memory://")


async def test_nodes_starting_together_migrate_once(fresh_url: str) -> None:
    stores = [PostgresStorage(fresh_url, min_connections=1) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    for store in stores:
        await store.close()
    versions = [v for (v,) in query(fresh_url, "SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, LATEST_VERSION + 1))


async def test_a_newer_schema_is_refused_and_left_alone(fresh_url: str) -> None:
    assert await migrations.migrate(fresh_url) == (0, LATEST_VERSION)
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s, 'from_the_future')", (LATEST_VERSION + 1,))
    with pytest.raises(SchemaTooNew):
        await PostgresStorage(fresh_url).open()
    with pytest.raises(SchemaTooNew):
        await migrations.migrate(fresh_url)
    assert query(fresh_url, "SELECT MAX(version) FROM schema_version") == [(LATEST_VERSION + 1,)]


async def test_data_survives_close_and_reopen(shared_url: str) -> None:
    first = PostgresStorage(shared_url, min_connections=1)
    await first.open()
    await register(first, "alice", 1)
    await first.store_message(message(1, 1), max_queue=10)
    await first.close()
    second = PostgresStorage(shared_url, min_connections=1)
    await second.open()
    try:
        assert await second.get_account("alice") == account("alice")
        assert await second.get_device(dev(1)) == device(1, "alice")
        [entry] = await second.fetch_queue(dev(1), 0, 10)
        assert (entry.message_id, entry.body, entry.wrapped_key) == (mid(1), b"body-1", b"key-1-for-1")
    finally:
        await second.close()


# --- several nodes at once -------------------------------------------------------------------------
async def test_racing_sends_never_overfill_a_queue(
    two_stores: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two_stores
    for n in range(1, 8):
        await first.store_message(message(n, 2, 3), max_queue=10)
    sends = [(first, second)[n % 2].store_message(message(n, 2, 3), max_queue=10) for n in range(100, 140)]
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(isinstance(r, QueueFull) for r in results if isinstance(r, BaseException))
    for device_number in (2, 3):
        assert await first.queue_depth(dev(device_number)) == 10
        assert len(await first.fetch_queue(dev(device_number), 0, 100)) == 10


async def test_racing_device_list_updates_one_wins(
    two_stores: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two_stores
    await register(first, "alice", 1, 2)
    updates = [
        (first, second)[n % 2].replace_devices(
            "alice", 1, 2, b"list-from-%d" % n, [device(1, "alice"), device(n, "alice")], now_ms=5_000
        )
        for n in range(10, 20)
    ]
    results = await asyncio.gather(*updates, return_exceptions=True)
    winners = [n for n, r in zip(range(10, 20), results, strict=True) if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, StaleDeviceList) for r in results if isinstance(r, BaseException))
    stored = await second.get_account("alice")
    assert stored is not None
    assert (stored.list_version, stored.device_list) == (2, b"list-from-%d" % winners[0])
    assert await second.devices_of(["alice"]) == {"alice": AccountDevices(2, {dev(1), dev(winners[0])})}
    assert await second.list_history("alice", 1, 10) == [b"list-from-%d" % winners[0]]
    assert await second.removed_device(dev(2)) == RemovedDevice(dev(2), "alice", 2, 5_000)


async def test_a_reader_paging_by_seq_never_skips_a_late_commit(
    two_stores: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """Entries of one device commit in seq order, even when two nodes send to it at once."""
    first, second = two_stores
    count = 120
    seen: list[bytes] = []
    done = asyncio.Event()

    async def send(store: Storage, numbers: range) -> None:
        for n in numbers:
            await store.store_message(message(n, 2, 3 + n % 4), max_queue=1000)

    async def read() -> None:
        last_seq = 0
        while True:
            finished = done.is_set()
            entries = await first.fetch_queue(dev(2), last_seq, 50)
            seen.extend(e.message_id for e in entries)
            last_seq = entries[-1].seq if entries else last_seq
            if finished and not entries:
                return
            await asyncio.sleep(0)

    reader = asyncio.create_task(read())
    senders = [send((first, second)[k % 2], range(k, count, 6)) for k in range(6)]
    await asyncio.gather(*senders)
    done.set()
    await reader
    assert sorted(seen) == sorted(mid(n) for n in range(count))  # none skipped, none twice


async def test_racing_acks_of_one_message_delete_its_body(
    two_stores: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two_stores
    for n in range(1, 31):
        await first.store_message(message(n, 2, 3), max_queue=100)
    acks = [first.ack(dev(2), [mid(n)]) for n in range(1, 31)] + [
        second.ack(dev(3), [mid(n)]) for n in range(1, 31)
    ]
    assert sum(await asyncio.gather(*acks)) == 60
    assert not any([await first.message_exists(mid(n)) for n in range(1, 31)])
    assert await first.queue_depth(dev(2)) == await first.queue_depth(dev(3)) == 0


async def test_expiry_on_two_nodes_at_once(two_stores: tuple[PostgresStorage, PostgresStorage]) -> None:
    first, second = two_stores
    for n in range(1, 21):
        await first.store_message(message(n, 2, 3, expires_at_ms=10_000), max_queue=100)
    counts = await asyncio.gather(first.expire(10_000), second.expire(10_000))
    assert sum(counts) == 40
    assert await first.queue_depth(dev(2)) == 0
    assert query(first.url, "SELECT count(*) FROM messages") == [(0,)]


async def test_0004_backfills_the_history_with_the_current_lists(fresh_url: str) -> None:
    conn = await psycopg.AsyncConnection.connect(fresh_url, autocommit=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(migrations, "_SCRIPTS", scripts_up_to(3))
            patch.setattr(migrations, "LATEST_VERSION", 3)
            assert await migrations.upgrade_postgresql(conn) == 3
        await conn.execute("INSERT INTO accounts VALUES ('alice', '\\xaa', 2, '\\x0102', 1000, FALSE)")
        await conn.execute("INSERT INTO devices VALUES ('\\x01', 'alice', '\\x51')")
    finally:
        await conn.close()
    assert await migrations.migrate(fresh_url) == (3, LATEST_VERSION)
    store = PostgresStorage(fresh_url, min_connections=1)
    await store.open()
    try:
        assert await store.list_history("alice", 0, 10) == [b"\x01\x02"]
        assert await store.devices_seen("alice") == {b"\x01": None}
        found = await store.get_device(b"\x01")
        assert found is not None and found.list_version == 2
    finally:
        await store.close()
    assert query(fresh_url, "SELECT handle, version, published_at_ms FROM device_list_history") == [
        ("alice", 2, 1000)
    ]


# --- several nodes: device lists, invites, last seen ----------------------------------------------
async def test_racing_registrations_on_two_nodes_spend_an_invite_once(
    two_stores: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two_stores
    token_hash = b"\x05" * 32
    await first.create_invite(InviteRow(token_hash, 0, 10_000, 3))
    registrations = [
        (first, second)[n % 2].create_account(account(f"u{n}"), [device(n, f"u{n}")], invite_hash=token_hash)
        for n in range(1, 13)
    ]
    results = await asyncio.gather(*registrations, return_exceptions=True)
    assert sum(r is None for r in results) == 3
    assert all(isinstance(r, InviteRequired) for r in results if r is not None)
    assert [i.uses_left for i in await second.list_invites()] == [0]


async def test_touches_and_list_changes_on_two_nodes_do_not_deadlock(
    two_stores: tuple[PostgresStorage, PostgresStorage],
) -> None:
    first, second = two_stores
    numbers = list(range(1, 21))
    await register(first, "alice", *numbers)
    touches = [
        (first, second)[t % 2].touch_devices({dev(n): 1_000 * t + n for n in numbers[:: 1 if t % 2 else -1]})
        for t in range(1, 21)
    ]
    updates = [
        second.replace_devices(
            "alice", v - 1, v, b"list-%d" % v, [device(n, "alice") for n in numbers], now_ms=v
        )
        for v in range(2, 8)
    ]
    results = await asyncio.gather(*touches, *updates, return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException) and not isinstance(r, StaleDeviceList)] == []
    assert await first.devices_seen("alice") == {dev(n): 20_000 + n for n in numbers}
