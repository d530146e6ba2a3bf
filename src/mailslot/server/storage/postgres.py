"""PostgreSQL storage: psycopg 3 (async) over a connection pool, for several nodes on one database.

Each public method is one transaction on a pooled connection: an explicit one, or the implicit
one PostgreSQL gives a single statement (or ``ack``'s two statements sent as one query). The
SQL lives in module functions named after the transaction they are, each taking the connection
first (accounts, devices and invites in ``postgres_directory.py``, bodies, queues and links in
``postgres_relay.py``, blob metadata in ``postgres_blobs.py``); the class only routes calls and
translates psycopg errors into mailslot errors, here and nowhere else.

Concurrency. Several nodes write at once, so statements run at READ COMMITTED and take row
locks where two of them could race, each kind in a fixed order (device ids, message ids
ascending), so that they wait for each other rather than deadlock:

* ``store_message`` is one statement, so one round trip. It first creates or locks the
  ``queue_depths`` row of every recipient device, in device-id order, held to commit; only then
  does it insert the body and the entries. That makes the ``QueueFull`` check race-free, and as
  the entries' ``seq`` values are drawn after the lock, one device's entries commit in ``seq``
  order: a client paging with ``after_seq`` never skips an entry that committed late. The body
  goes in with ``ON CONFLICT DO NOTHING``: a concurrent send of the same id waits for ours, then
  finds it and answers as a retry.
* ``ack`` and ``replace_devices`` delete queue entries, lock the bodies they may have orphaned
  (``FOR UPDATE``, in id order), and delete those with no entry left in a later statement,
  whose fresh snapshot sees what other transactions committed meanwhile: two devices
  acknowledging a message's last two entries at once cannot both keep the body.
* ``replace_devices`` (and ``recover_account``) is a compare-and-set on the account row: a
  concurrent update waits for the row lock, then sees the version moved and raises
  ``StaleDeviceList``; it then locks the account's device rows in id order
  (``postgres_directory.py`` lists the whole order).
* ``expire`` takes an advisory lock, so the sweepers of several nodes take turns; it deletes
  the entries of expired bodies, then every expired body with no entry left.

Deadlocks and serialization failures, which this order should prevent, are retried a few times.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mailslot.errors import (
    ConfigError,
    ConflictError,
    HandleTaken,
    MailslotError,
    ServerError,
)
from mailslot.server.storage import migrations, postgres_blobs
from mailslot.server.storage import postgres_directory as directory
from mailslot.server.storage import postgres_relay as relay
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
from mailslot.server.storage.postgres_shared import Conn, Vanished, fetch_one

__all__ = ["PostgresStorage", "migrate_postgresql"]

P = ParamSpec("P")
T = TypeVar("T")
Transaction = Callable[Concatenate[Conn, P], Awaitable[T]]  # the SQL functions below

_MIN_SERVER = 110000  # PostgreSQL 11: EXECUTE FUNCTION in the triggers
_ATTEMPTS = 5  # tries of a transaction that hit a deadlock or a serialization failure
_RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure)


class PostgresStorage(Storage):
    """The scale-out store: one PostgreSQL database shared by every node.

    ``url`` is a libpq URL (``postgresql://user:password@host:port/dbname?sslmode=...``;
    ``postgres://`` works too). Each store keeps a pool of ``min_connections`` to
    ``max_connections`` connections; ``connect_timeout_s`` bounds the first connection.
    """

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 2,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not 1 <= min_connections <= max_connections:
            raise ConfigError("PostgreSQL pool sizes must satisfy 1 <= min_connections <= max_connections")
        if connect_timeout_s <= 0:
            raise ConfigError("connect_timeout_s must be positive")
        self.url = url
        self._min = int(min_connections)
        self._max = int(max_connections)
        self._connect_timeout_s = float(connect_timeout_s)
        self._pool: AsyncConnectionPool[Conn] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect once (so a wrong URL fails at once, with libpq's reason), migrate, then pool."""
        if self._pool is not None:
            return
        await migrate_postgresql(self.url, self._connect_timeout_s)
        self._pool = await open_pool(
            self.url, self._min, self._max, self._connect_timeout_s, name="mailslot", what="database"
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def schema_version(self) -> int:
        return await self._statement(_schema_version)

    async def ping(self) -> None:
        """``SELECT 1`` on a pooled connection, waiting at most ``connect_timeout_s`` for one
        (not the pool's default 30 s) and without retrying."""
        if self._pool is None:
            raise ServerError("the storage is not open")
        try:
            async with self._pool.connection(timeout=self._connect_timeout_s) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout) as exc:
            raise _translate(exc) from exc

    # --- running transactions ----------------------------------------------------------------
    async def _statement(self, fn: Transaction[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)``, which must be one statement, in autocommit."""
        return await self._run(False, lambda conn: fn(conn, *args, **kwargs))

    async def _transaction(self, fn: Transaction[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` between BEGIN and COMMIT, rolled back on any error."""
        return await self._run(True, lambda conn: fn(conn, *args, **kwargs))

    async def _run(self, atomic: bool, body: Callable[[Conn], Awaitable[T]]) -> T:
        if self._pool is None:
            raise ServerError("the storage is not open")
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self._pool.connection() as conn:
                    if not atomic:
                        return await body(conn)
                    async with conn.transaction():
                        return await body(conn)
            except (*_RETRYABLE, Vanished) as exc:
                if attempt == _ATTEMPTS:
                    raise _translate(exc) from exc
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
            except (psycopg.Error, PoolTimeout) as exc:
                raise _translate(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # --- accounts and devices ----------------------------------------------------------------
    async def create_account(
        self, account: AccountRow, devices: list[DeviceRow], *, invite_hash: bytes | None = None
    ) -> None:
        await self._transaction(directory.create_account, account, devices, invite_hash)

    async def get_account(self, handle: str) -> AccountRow | None:
        return await self._statement(directory.get_account, handle)

    async def list_accounts(self) -> list[tuple[AccountRow, int]]:
        return await self._statement(directory.list_accounts)

    async def set_disabled(self, handle: str, disabled: bool) -> None:
        await self._statement(directory.set_disabled, handle, disabled)

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
        return await self._transaction(
            directory.replace_devices, handle, expected_version, new_version, device_list, devices, now_ms
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
        return await self._transaction(
            directory.recover_account,
            *(handle, expected_version, account_key, new_version, device_list, devices, now_ms),
        )

    async def list_history(self, handle: str, after_version: int, limit: int) -> list[bytes]:
        return await self._statement(directory.list_history, handle, after_version, limit)

    async def removed_device(self, device_id: bytes) -> RemovedDevice | None:
        return await self._statement(directory.removed_device, device_id)

    async def touch_devices(self, seen: dict[bytes, int]) -> None:
        if seen:
            await self._statement(directory.touch_devices, seen)

    async def devices_seen(self, handle: str) -> dict[bytes, int | None]:
        return await self._statement(directory.devices_seen, handle)

    async def get_device(self, device_id: bytes) -> DeviceRow | None:
        return await self._statement(directory.get_device, device_id)

    async def devices_of(self, handles: list[str]) -> dict[str, AccountDevices]:
        return await self._statement(directory.devices_of, handles)

    # --- invites -----------------------------------------------------------------------------
    async def create_invite(self, invite: InviteRow) -> None:
        await self._statement(directory.create_invite, invite)

    async def list_invites(self) -> list[InviteRow]:
        return await self._statement(directory.list_invites)

    async def revoke_invite(self, token_hash: bytes) -> bool:
        return await self._statement(directory.revoke_invite, token_hash)

    # --- relay -------------------------------------------------------------------------------
    async def store_message(self, message: NewMessage, max_queue: int) -> StoredSend:
        return await self._statement(relay.store_message, message, max_queue)

    async def fetch_queue(self, device_id: bytes, after_seq: int, limit: int) -> list[QueueEntry]:
        return await self._statement(relay.fetch_queue, device_id, after_seq, limit)

    async def ack(self, device_id: bytes, message_ids: list[bytes]) -> int:
        return await self._statement(relay.ack, device_id, message_ids)

    async def queue_depth(self, device_id: bytes) -> int:
        return await self._statement(relay.queue_depth, device_id)

    async def queue_stats(self) -> QueueStats:
        return await self._statement(relay.queue_stats)

    async def message_exists(self, message_id: bytes) -> bool:
        return await self._statement(relay.message_exists, message_id)

    async def expire(self, now_ms: int) -> int:
        return await self._transaction(relay.expire, now_ms)

    # --- device linking ----------------------------------------------------------------------
    async def create_link(self, link_id: bytes, request: bytes, expires_at_ms: int) -> None:
        await self._statement(relay.create_link, link_id, request, expires_at_ms)

    async def get_link(self, link_id: bytes, now_ms: int) -> tuple[bytes, bytes | None] | None:
        return await self._statement(relay.get_link, link_id, now_ms)

    async def respond_link(self, link_id: bytes, response: bytes, now_ms: int) -> None:
        await self._transaction(relay.respond_link, link_id, response, now_ms)

    async def expire_links(self, now_ms: int) -> int:
        return await self._statement(relay.expire_links, now_ms)

    # --- blobs -------------------------------------------------------------------------------
    async def create_blob(self, blob: BlobRow, quota_bytes: int) -> None:
        await self._transaction(postgres_blobs.create_blob, blob, quota_bytes)

    async def get_blob(self, blob_id: bytes, now_ms: int) -> BlobRow | None:
        return await self._statement(postgres_blobs.get_blob, blob_id, now_ms)

    async def advance_blob(self, blob_id: bytes, expected_offset: int, new_offset: int) -> BlobRow:
        return await self._transaction(postgres_blobs.advance_blob, blob_id, expected_offset, new_offset)

    async def delete_blob(self, blob_id: bytes) -> bool:
        return await self._statement(postgres_blobs.delete_blob, blob_id)

    async def expire_blobs(self, now_ms: int) -> list[bytes]:
        return await self._statement(postgres_blobs.expire_blobs, now_ms)

    async def blob_usage(self, handle: str, now_ms: int) -> int:
        return await self._statement(postgres_blobs.blob_usage, handle, now_ms)


# --- connecting, migrating, errors -------------------------------------------------------------
async def open_pool(
    url: str, min_size: int, max_size: int, timeout_s: float, *, name: str, what: str
) -> AsyncConnectionPool[Conn]:
    """An open autocommit pool, or ``ConfigError`` naming ``what`` could not be reached."""
    pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
        url, min_size=min_size, max_size=max_size, kwargs={"autocommit": True}, open=False, name=name
    )
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except PoolTimeout as exc:
        await pool.close()
        raise ConfigError(f"cannot connect to the {what} at {redacted(url)}") from exc
    return pool


async def migrate_postgresql(url: str, connect_timeout_s: float = 10.0) -> tuple[int, int]:
    """Bring the database at ``url`` up to date on one connection: (version before, after).

    ``ConfigError`` if it cannot be reached or is older than PostgreSQL 11, ``SchemaTooNew`` if
    a newer mailslot wrote it. Concurrent callers (nodes starting together) take turns.
    """
    try:
        conn = await AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s))
        )
    except psycopg.Error as exc:
        raise ConfigError(f"cannot connect to the database at {redacted(url)}: {_reason(exc)}") from exc
    try:
        if conn.info.server_version < _MIN_SERVER:
            raise ConfigError(f"mailslot needs PostgreSQL 11 or later, not {conn.info.server_version}")
        before = await _schema_version(conn)
        return before, await migrations.upgrade_postgresql(conn)
    except psycopg.Error as exc:
        raise ConfigError(f"cannot migrate the database at {redacted(url)}: {_reason(exc)}") from exc
    finally:
        await conn.close()


def redacted(url: str) -> str:
    """``url`` with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _reason(exc: psycopg.Error) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# UNIQUE violations a caller can cause, by the constraint PostgreSQL names.
_UNIQUE_ERRORS: dict[str, Callable[[], MailslotError]] = {
    "accounts_pkey": lambda: HandleTaken("the handle is already registered"),
    "devices_pkey": lambda: ConflictError("a device id belongs to another account"),
    "links_pkey": lambda: ConflictError("the link id already exists"),
    "blobs_pkey": lambda: ConflictError("the blob id already exists"),
    "invites_pkey": lambda: ConflictError("the invite already exists"),
}


def _translate(exc: BaseException) -> MailslotError:
    """The mailslot error for a psycopg one: a conflict the caller caused, or our failure."""
    if isinstance(exc, errors.UniqueViolation):
        make = _UNIQUE_ERRORS.get(exc.diag.constraint_name or "")
        if make is not None:
            return make()
    # The driver's text stays in __cause__ for the operator's log, out of the client's answer.
    if isinstance(exc, (*_RETRYABLE, Vanished, PoolTimeout)):
        return ServerError("the database is busy; try again")
    if isinstance(exc, psycopg.OperationalError):
        return ServerError("the database is unreachable; try again")
    return ServerError("the database failed")


async def _schema_version(conn: Conn) -> int:
    row = await fetch_one(conn, "SELECT to_regclass('schema_version') IS NOT NULL")
    if row is None or not row[0]:
        return 0
    row = await fetch_one(conn, "SELECT COALESCE(MAX(version), 0) FROM schema_version")
    return 0 if row is None else int(row[0])
