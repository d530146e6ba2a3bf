"""SQLite storage: one file in WAL mode, every call made on one dedicated worker thread.

sqlite3 calls block, so they leave the event loop; one thread runs them all, which serialises
transactions without a lock (SQLite has one writer at a time anyway) and keeps the
connection's prepared-statement cache warm. Each public method is one transaction: writes open
with ``BEGIN IMMEDIATE`` so they take the write lock up front and never fail half-way on a lock
upgrade; reads open with ``BEGIN`` and see one snapshot. sqlite3 exceptions are translated into
mailslot errors here and nowhere else.

The SQL lives in module functions named after the transaction they are (``_store_message``...),
each taking the connection first (accounts, devices and invites in ``sqlite_directory.py``, blob
metadata in ``sqlite_blobs.py``); the class only routes calls to the worker.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from mailslot.errors import (
    ConfigError,
    ConflictError,
    HandleTaken,
    MailslotError,
    MessageIdConflict,
    NotFoundError,
    QueueFull,
    ServerError,
)
from mailslot.server.storage import migrations, sqlite_blobs
from mailslot.server.storage import sqlite_directory as directory
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
from mailslot.server.storage.sqlite_shared import chunks, delete_orphans, with_marks
from mailslot.server.storage.sqlite_writer import GroupCommitWriter

__all__ = ["SYNCHRONOUS_MODES", "SqliteStorage"]

P = ParamSpec("P")
T = TypeVar("T")

SYNCHRONOUS_MODES = frozenset({"FULL", "NORMAL"})
_MIN_SQLITE = (3, 35, 0)  # DELETE ... RETURNING

Body = Callable[[sqlite3.Connection], T]
Transaction = Callable[Concatenate[sqlite3.Connection, P], T]  # the SQL functions below


class SqliteStorage(Storage):
    """The embedded default: a single SQLite file.

    ``synchronous`` is ``"FULL"`` (an accepted message survives power loss) or ``"NORMAL"``
    (faster; in WAL mode a crash loses nothing, a power cut may lose the last commits).
    ``busy_timeout_ms`` is how long to wait for another process holding the write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ConfigError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        if busy_timeout_ms < 0:
            raise ConfigError("busy_timeout_ms must not be negative")
        self.path = os.fspath(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._executor: ThreadPoolExecutor | None = None  # the reader thread
        self._conn: sqlite3.Connection | None = None  # the reader's connection
        self._writer: GroupCommitWriter | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise ConfigError(f"mailslot needs SQLite 3.35 or later, not {sqlite3.sqlite_version}")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailslot-sqlite-reader")
        try:
            writer_conn = await self._submit(self._connect)
            self._writer = GroupCommitWriter(writer_conn, _translate)
            self._writer.start()
            self._conn = await self._submit(self._connect_reader)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        executor, conn, writer = self._executor, self._conn, self._writer
        self._executor, self._conn, self._writer = None, None, None
        if executor is None:
            return
        if writer is not None:
            await asyncio.to_thread(writer.stop)
            writer.connection.close()
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)  # the queue is drained: the join returns at once

    async def schema_version(self) -> int:
        return await self._read(_schema_version)

    async def ping(self) -> None:
        await self._read(_schema_version)  # reads the file, on the reader thread

    def _connect(self) -> sqlite3.Connection:
        """Open, configure and migrate the database for the writer thread."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the database {self.path}: {exc}") from exc
        try:
            self._configure(conn)
            migrations.upgrade_sqlite(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise ConfigError(f"cannot use the database {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        """A second connection for reads: in WAL mode they never wait behind the writer."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            self._configure(conn)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot use the database {self.path}: {exc}") from exc
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        # Both values are validated in __init__; PRAGMA takes no bound parameters. The busy
        # timeout comes first: switching to WAL may wait for another process's lock.
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise ConfigError(f"{self.path}: SQLite could not switch to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")

    # --- running transactions on the worker --------------------------------------------------
    async def _submit(self, job: Callable[[], T]) -> T:
        if self._executor is None:
            raise ServerError("the storage is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def _read(self, fn: Transaction[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` as one read transaction on the reader thread."""
        conn = self._connection()
        return await self._submit(lambda: _transaction(conn, "BEGIN", lambda c: fn(c, *args, **kwargs)))

    async def _write(self, fn: Transaction[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(conn, ...)`` atomically in the writer's next group commit."""
        if self._writer is None:
            raise ServerError("the storage is not open")
        result: T = await self._writer.run(lambda c: fn(c, *args, **kwargs))
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ServerError("the storage is not open")
        return self._conn

    # --- accounts and devices ----------------------------------------------------------------
    async def create_account(
        self, account: AccountRow, devices: list[DeviceRow], *, invite_hash: bytes | None = None
    ) -> None:
        await self._write(directory.create_account, account, devices, invite_hash)

    async def get_account(self, handle: str) -> AccountRow | None:
        return await self._read(directory.get_account, handle)

    async def list_accounts(self) -> list[tuple[AccountRow, int]]:
        return await self._read(directory.list_accounts)

    async def set_disabled(self, handle: str, disabled: bool) -> None:
        await self._write(directory.set_disabled, handle, disabled)

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
        return await self._write(
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
        return await self._write(
            directory.recover_account,
            *(handle, expected_version, account_key, new_version, device_list, devices, now_ms),
        )

    async def list_history(self, handle: str, after_version: int, limit: int) -> list[bytes]:
        return await self._read(directory.list_history, handle, after_version, limit)

    async def removed_device(self, device_id: bytes) -> RemovedDevice | None:
        return await self._read(directory.removed_device, device_id)

    async def touch_devices(self, seen: dict[bytes, int]) -> None:
        if seen:
            await self._write(directory.touch_devices, seen)

    async def devices_seen(self, handle: str) -> dict[bytes, int | None]:
        return await self._read(directory.devices_seen, handle)

    async def get_device(self, device_id: bytes) -> DeviceRow | None:
        return await self._read(directory.get_device, device_id)

    async def devices_of(self, handles: list[str]) -> dict[str, AccountDevices]:
        return await self._read(directory.devices_of, handles)

    # --- invites -----------------------------------------------------------------------------
    async def create_invite(self, invite: InviteRow) -> None:
        await self._write(directory.create_invite, invite)

    async def list_invites(self) -> list[InviteRow]:
        return await self._read(directory.list_invites)

    async def revoke_invite(self, token_hash: bytes) -> bool:
        return await self._write(directory.revoke_invite, token_hash)

    # --- relay -------------------------------------------------------------------------------
    async def store_message(self, message: NewMessage, max_queue: int) -> StoredSend:
        return await self._write(_store_message, message, max_queue)

    async def fetch_queue(self, device_id: bytes, after_seq: int, limit: int) -> list[QueueEntry]:
        return await self._read(_fetch_queue, device_id, after_seq, limit)

    async def ack(self, device_id: bytes, message_ids: list[bytes]) -> int:
        return await self._write(_ack, device_id, message_ids)

    async def queue_depth(self, device_id: bytes) -> int:
        return await self._read(_queue_depth, device_id)

    async def queue_stats(self) -> QueueStats:
        return await self._read(_queue_stats)

    async def message_exists(self, message_id: bytes) -> bool:
        return await self._read(_message_exists, message_id)

    async def expire(self, now_ms: int) -> int:
        return await self._write(_expire, now_ms)

    # --- device linking ----------------------------------------------------------------------
    async def create_link(self, link_id: bytes, request: bytes, expires_at_ms: int) -> None:
        await self._write(_create_link, link_id, request, expires_at_ms)

    async def get_link(self, link_id: bytes, now_ms: int) -> tuple[bytes, bytes | None] | None:
        return await self._read(_get_link, link_id, now_ms)

    async def respond_link(self, link_id: bytes, response: bytes, now_ms: int) -> None:
        await self._write(_respond_link, link_id, response, now_ms)

    async def expire_links(self, now_ms: int) -> int:
        return await self._write(_expire_links, now_ms)

    # --- blobs -------------------------------------------------------------------------------
    async def create_blob(self, blob: BlobRow, quota_bytes: int) -> None:
        await self._write(sqlite_blobs.create_blob, blob, quota_bytes)

    async def get_blob(self, blob_id: bytes, now_ms: int) -> BlobRow | None:
        return await self._read(sqlite_blobs.get_blob, blob_id, now_ms)

    async def advance_blob(self, blob_id: bytes, expected_offset: int, new_offset: int) -> BlobRow:
        return await self._write(sqlite_blobs.advance_blob, blob_id, expected_offset, new_offset)

    async def delete_blob(self, blob_id: bytes) -> bool:
        return await self._write(sqlite_blobs.delete_blob, blob_id)

    async def expire_blobs(self, now_ms: int) -> list[bytes]:
        return await self._write(sqlite_blobs.expire_blobs, now_ms)

    async def blob_usage(self, handle: str, now_ms: int) -> int:
        return await self._read(sqlite_blobs.blob_usage, handle, now_ms)


# --- transactions and errors -------------------------------------------------------------------
def _transaction(conn: sqlite3.Connection, begin: str, body: Body[T]) -> T:
    """``body(conn)`` between ``begin`` and COMMIT, rolled back on any error."""
    try:
        conn.execute(begin)
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise _translate(exc) from exc
    return result


# UNIQUE violations a caller can cause, by the column SQLite names in its message.
_UNIQUE_ERRORS: dict[str, Callable[[], MailslotError]] = {
    "accounts.handle": lambda: HandleTaken("the handle is already registered"),
    "devices.device_id": lambda: ConflictError("a device id belongs to another account"),
    "links.link_id": lambda: ConflictError("the link id already exists"),
    "blobs.blob_id": lambda: ConflictError("the blob id already exists"),
    "invites.token_hash": lambda: ConflictError("the invite already exists"),
}


def _translate(exc: sqlite3.Error) -> MailslotError:
    """The mailslot error for a sqlite3 one: a conflict the caller caused, or our failure."""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError) and text.startswith("UNIQUE constraint failed: "):
        make = _UNIQUE_ERRORS.get(text.removeprefix("UNIQUE constraint failed: "))
        if make is not None:
            return make()
    # The sqlite3 text stays in __cause__ for the operator's log, out of the client's answer.
    if getattr(exc, "sqlite_errorname", "") in {"SQLITE_BUSY", "SQLITE_LOCKED"}:
        return ServerError("the database is busy; try again")
    return ServerError("the database failed")


def _schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    return version


# --- relay -------------------------------------------------------------------------------------
def _store_message(conn: sqlite3.Connection, message: NewMessage, max_queue: int) -> StoredSend:
    first = conn.execute(
        "SELECT sender, sender_device, accepted_at_ms, device_count FROM messages WHERE message_id = ?",
        (message.message_id,),
    ).fetchone()
    if first is not None:
        if (first[0], first[1]) != (message.sender, message.sender_device):
            raise MessageIdConflict(f"message id {message.message_id.hex()} is used by another sender")
        return StoredSend(False, *first)
    full = _full_device(conn, list(message.keys), max_queue)
    if full is not None:
        raise QueueFull(
            f"device {full.hex()} has {max_queue} queued messages", details={"device": full.hex()}
        )
    conn.execute(
        "INSERT INTO messages (message_id, sender, sender_device, accepted_at_ms, expires_at_ms,"
        " device_count, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            message.message_id,
            message.sender,
            message.sender_device,
            message.accepted_at_ms,
            message.expires_at_ms,
            len(message.keys),
            message.body,
        ),
    )
    conn.executemany(
        "INSERT INTO queue (device_id, message_id, wrapped_key) VALUES (?, ?, ?)",
        [(device_id, message.message_id, key) for device_id, key in message.keys.items()],
    )
    return StoredSend(True, message.sender, message.sender_device, message.accepted_at_ms, len(message.keys))


def _full_device(conn: sqlite3.Connection, device_ids: list[bytes], max_queue: int) -> bytes | None:
    """A device among ``device_ids`` that already holds ``max_queue`` entries, if any."""
    for chunk in chunks(device_ids):
        row = conn.execute(
            with_marks(
                "SELECT device_id FROM queue_depths WHERE device_id IN ({marks}) AND depth >= ? LIMIT 1",
                len(chunk),
            ),
            (*chunk, max_queue),
        ).fetchone()
        if row is not None:
            device_id: bytes = row[0]
            return device_id
    return None


def _fetch_queue(conn: sqlite3.Connection, device_id: bytes, after_seq: int, limit: int) -> list[QueueEntry]:
    rows = conn.execute(
        "SELECT q.seq, q.message_id, m.sender, m.sender_device, m.accepted_at_ms, m.body,"
        " q.wrapped_key FROM queue AS q JOIN messages AS m ON m.message_id = q.message_id"
        " WHERE q.device_id = ? AND q.seq > ? ORDER BY q.seq LIMIT ?",
        (device_id, after_seq, max(limit, 0)),
    )
    return [QueueEntry(*row) for row in rows]


def _ack(conn: sqlite3.Connection, device_id: bytes, message_ids: list[bytes]) -> int:
    deleted: list[bytes] = []
    for chunk in chunks(list(dict.fromkeys(message_ids))):
        rows = conn.execute(
            with_marks(
                "DELETE FROM queue WHERE device_id = ? AND message_id IN ({marks}) RETURNING message_id",
                len(chunk),
            ),
            (device_id, *chunk),
        ).fetchall()
        deleted.extend(message_id for (message_id,) in rows)
    delete_orphans(conn, deleted)
    return len(deleted)


def _queue_depth(conn: sqlite3.Connection, device_id: bytes) -> int:
    row = conn.execute("SELECT depth FROM queue_depths WHERE device_id = ?", (device_id,)).fetchone()
    return 0 if row is None else int(row[0])


def _queue_stats(conn: sqlite3.Connection) -> QueueStats:
    # One row per device for the count (kept by triggers); the oldest entry is the first by seq,
    # the primary key, so neither subquery reads the backlog.
    entries, oldest = conn.execute(
        "SELECT (SELECT coalesce(sum(depth), 0) FROM queue_depths),"
        " (SELECT m.accepted_at_ms FROM queue AS q JOIN messages AS m ON m.message_id = q.message_id"
        " ORDER BY q.seq LIMIT 1)"
    ).fetchone()
    return QueueStats(int(entries), None if oldest is None else int(oldest))


def _message_exists(conn: sqlite3.Connection, message_id: bytes) -> bool:
    row = conn.execute("SELECT 1 FROM messages WHERE message_id = ?", (message_id,)).fetchone()
    return row is not None


def _expire(conn: sqlite3.Connection, now_ms: int) -> int:
    entries = conn.execute(
        "DELETE FROM queue WHERE message_id IN (SELECT message_id FROM messages WHERE expires_at_ms <= ?)",
        (now_ms,),
    ).rowcount
    conn.execute("DELETE FROM messages WHERE expires_at_ms <= ?", (now_ms,))
    return entries


# --- device linking ----------------------------------------------------------------------------
def _create_link(conn: sqlite3.Connection, link_id: bytes, request: bytes, expires_at_ms: int) -> None:
    conn.execute(
        "INSERT INTO links (link_id, request, expires_at_ms) VALUES (?, ?, ?)",
        (link_id, request, expires_at_ms),
    )


def _get_link(conn: sqlite3.Connection, link_id: bytes, now_ms: int) -> tuple[bytes, bytes | None] | None:
    row = conn.execute(
        "SELECT request, response FROM links WHERE link_id = ? AND expires_at_ms > ?",
        (link_id, now_ms),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _respond_link(conn: sqlite3.Connection, link_id: bytes, response: bytes, now_ms: int) -> None:
    answered = conn.execute(
        "UPDATE links SET response = ? WHERE link_id = ? AND expires_at_ms > ? AND response IS NULL",
        (response, link_id, now_ms),
    ).rowcount
    if not answered:
        if _get_link(conn, link_id, now_ms) is None:
            raise NotFoundError(f"no pending link {link_id.hex()}")
        raise ConflictError(f"link {link_id.hex()} was already answered")


def _expire_links(conn: sqlite3.Connection, now_ms: int) -> int:
    deleted: int = conn.execute("DELETE FROM links WHERE expires_at_ms <= ?", (now_ms,)).rowcount
    return deleted
