"""SQLite storage: one file in WAL mode, every call made on one dedicated worker thread.

sqlite3 calls block, so they leave the event loop; one thread runs them all, which serialises
transactions without a lock (SQLite has one writer at a time anyway) and keeps the
connection's prepared-statement cache warm. Each public method is one transaction: writes open
with ``BEGIN IMMEDIATE`` so they take the write lock up front and never fail half-way on a lock
upgrade; reads open with ``BEGIN`` and see one snapshot. sqlite3 exceptions are translated into
mailslot errors here and nowhere else.

The SQL lives in module functions named after the transaction they are (``_store_message``...),
each taking the connection first (the blob metadata ones in ``sqlite_blobs.py``); the class
only routes calls to the worker.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    StaleDeviceList,
    UnknownHandle,
)
from mailslot.server.storage import migrations, sqlite_blobs
from mailslot.server.storage.base import (
    AccountRow,
    BlobRow,
    DeviceRow,
    NewMessage,
    QueueEntry,
    QueueStats,
    Storage,
    StoredSend,
)
from mailslot.server.storage.sqlite_writer import GroupCommitWriter

__all__ = ["SYNCHRONOUS_MODES", "SqliteStorage"]

P = ParamSpec("P")
T = TypeVar("T")

SYNCHRONOUS_MODES = frozenset({"FULL", "NORMAL"})
_MIN_SQLITE = (3, 35, 0)  # DELETE ... RETURNING
_CHUNK = 500  # ids per ``IN (...)`` list, far below SQLite's limit on bound parameters

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
    async def create_account(self, account: AccountRow, devices: list[DeviceRow]) -> None:
        await self._write(_create_account, account, devices)

    async def get_account(self, handle: str) -> AccountRow | None:
        return await self._read(_get_account, handle)

    async def list_accounts(self) -> list[tuple[AccountRow, int]]:
        return await self._read(_list_accounts)

    async def set_disabled(self, handle: str, disabled: bool) -> None:
        await self._write(_set_disabled, handle, disabled)

    async def replace_devices(
        self,
        handle: str,
        expected_version: int,
        new_version: int,
        device_list: bytes,
        devices: list[DeviceRow],
    ) -> list[bytes]:
        return await self._write(
            _replace_devices, handle, expected_version, new_version, device_list, devices
        )

    async def get_device(self, device_id: bytes) -> DeviceRow | None:
        return await self._read(_get_device, device_id)

    async def devices_of(self, handles: list[str]) -> dict[str, set[bytes]]:
        return await self._read(_devices_of, handles)

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


def _with_marks(sql: str, count: int) -> str:
    """``sql`` with ``{marks}`` replaced by ``count`` ``?`` placeholders (nothing else)."""
    return sql.replace("{marks}", ", ".join("?" * count))


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    return version


# --- accounts and devices ----------------------------------------------------------------------
def _create_account(conn: sqlite3.Connection, account: AccountRow, devices: list[DeviceRow]) -> None:
    conn.execute(
        "INSERT INTO accounts (handle, account_key, list_version, device_list, created_at_ms,"
        " disabled) VALUES (?, ?, ?, ?, ?, ?)",
        (
            account.handle,
            account.account_key,
            account.list_version,
            account.device_list,
            account.created_at_ms,
            account.disabled,
        ),
    )
    _insert_devices(conn, devices)


def _insert_devices(conn: sqlite3.Connection, devices: Sequence[DeviceRow]) -> None:
    conn.executemany(
        "INSERT INTO devices (device_id, handle, sign_key) VALUES (?, ?, ?)",
        [(d.device_id, d.handle, d.sign_key) for d in devices],
    )


def _get_account(conn: sqlite3.Connection, handle: str) -> AccountRow | None:
    row = conn.execute(
        "SELECT handle, account_key, list_version, device_list, created_at_ms, disabled"
        " FROM accounts WHERE handle = ?",
        (handle,),
    ).fetchone()
    if row is None:
        return None
    handle, account_key, list_version, device_list, created_at_ms, disabled = row
    return AccountRow(handle, account_key, list_version, device_list, created_at_ms, bool(disabled))


def _list_accounts(conn: sqlite3.Connection) -> list[tuple[AccountRow, int]]:
    rows = conn.execute(
        "SELECT a.handle, a.account_key, a.list_version, a.device_list, a.created_at_ms, a.disabled,"
        " (SELECT COUNT(*) FROM devices d WHERE d.handle = a.handle)"
        " FROM accounts a ORDER BY a.handle"
    ).fetchall()
    return [
        (AccountRow(h, key, version, dl, created, bool(disabled)), count)
        for h, key, version, dl, created, disabled, count in rows
    ]


def _set_disabled(conn: sqlite3.Connection, handle: str, disabled: bool) -> None:
    changed = conn.execute("UPDATE accounts SET disabled = ? WHERE handle = ?", (disabled, handle)).rowcount
    if not changed:
        raise UnknownHandle(f"no account {handle!r}")


def _replace_devices(
    conn: sqlite3.Connection,
    handle: str,
    expected_version: int,
    new_version: int,
    device_list: bytes,
    devices: list[DeviceRow],
) -> list[bytes]:
    swapped = conn.execute(
        "UPDATE accounts SET list_version = ?, device_list = ? WHERE handle = ? AND list_version = ?",
        (new_version, device_list, handle, expected_version),
    ).rowcount
    if not swapped:
        row = conn.execute("SELECT list_version FROM accounts WHERE handle = ?", (handle,)).fetchone()
        if row is None:
            raise UnknownHandle(f"no account {handle!r}")
        raise StaleDeviceList(f"device list is at version {row[0]}, not {expected_version}")
    cursor = conn.execute("SELECT device_id FROM devices WHERE handle = ?", (handle,))
    current = {device_id for (device_id,) in cursor}
    removed = sorted(current - {d.device_id for d in devices})
    _drop_devices(conn, removed)
    conn.executemany(
        "UPDATE devices SET sign_key = ? WHERE device_id = ?",
        [(d.sign_key, d.device_id) for d in devices if d.device_id in current],
    )
    _insert_devices(conn, [d for d in devices if d.device_id not in current])
    return removed


def _drop_devices(conn: sqlite3.Connection, device_ids: list[bytes]) -> None:
    """Delete devices with their queues, and the bodies no other device still holds."""
    for chunk in _chunks(device_ids):
        gone = conn.execute(
            _with_marks("DELETE FROM queue WHERE device_id IN ({marks}) RETURNING message_id", len(chunk)),
            chunk,
        ).fetchall()
        _delete_orphans(conn, {message_id for (message_id,) in gone})
    conn.executemany("DELETE FROM queue_depths WHERE device_id = ?", [(d,) for d in device_ids])
    conn.executemany("DELETE FROM devices WHERE device_id = ?", [(d,) for d in device_ids])


def _get_device(conn: sqlite3.Connection, device_id: bytes) -> DeviceRow | None:
    row = conn.execute(
        "SELECT d.device_id, d.handle, d.sign_key, a.disabled FROM devices d"
        " JOIN accounts a ON a.handle = d.handle WHERE d.device_id = ?",
        (device_id,),
    ).fetchone()
    return None if row is None else DeviceRow(row[0], row[1], row[2], bool(row[3]))


def _devices_of(conn: sqlite3.Connection, handles: list[str]) -> dict[str, set[bytes]]:
    found: dict[str, set[bytes]] = {}
    for chunk in _chunks(list(dict.fromkeys(handles))):
        rows = conn.execute(
            _with_marks(
                "SELECT a.handle, d.device_id FROM accounts AS a"
                " LEFT JOIN devices AS d ON d.handle = a.handle"
                " WHERE a.handle IN ({marks})",
                len(chunk),
            ),
            chunk,
        )
        for handle, device_id in rows:
            ids = found.setdefault(handle, set())
            if device_id is not None:
                ids.add(device_id)
    return found


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
    for chunk in _chunks(device_ids):
        row = conn.execute(
            _with_marks(
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
    for chunk in _chunks(list(dict.fromkeys(message_ids))):
        rows = conn.execute(
            _with_marks(
                "DELETE FROM queue WHERE device_id = ? AND message_id IN ({marks}) RETURNING message_id",
                len(chunk),
            ),
            (device_id, *chunk),
        ).fetchall()
        deleted.extend(message_id for (message_id,) in rows)
    _delete_orphans(conn, deleted)
    return len(deleted)


def _delete_orphans(conn: sqlite3.Connection, message_ids: Iterable[bytes]) -> None:
    """Delete the bodies among ``message_ids`` that no queue entry refers to any more."""
    conn.executemany(
        "DELETE FROM messages WHERE message_id = ?"
        " AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.message_id)",
        [(message_id,) for message_id in message_ids],
    )


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
