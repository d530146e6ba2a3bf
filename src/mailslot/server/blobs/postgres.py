"""Blob bytes in PostgreSQL, chunked: the byte store for several nodes that share no disk.

Chosen with ``blob_url = "postgresql://..."`` (any libpq URL, usually the same database as
``database_url``). The tables come from the numbered migrations (``0003_blob_chunks``), so one
``schema_version`` covers them: ``open`` runs the PostgreSQL migration runner on the URL, as
opening the storage does, and refuses a schema newer than this code.

Layout. ``blob_bytes`` has one row per stored byte sequence (its ``length``, its
``chunk_size``, the upload lease) and ``blob_chunks`` its bytes, ``chunk_size`` (1 MiB) per
row, every chunk full but the last. Chunks are named by the row's ``file_id``, never by the
blob id, so a read is pinned to one generation of the bytes. ``append`` gathers incoming bytes
to the next chunk boundary and writes one chunk per statement (a new row, or the rest of a
partial last chunk appended to it), advancing ``length`` in the same statement; a ``read``
fetches only the chunks its range touches, one at a time with ``substring`` (the column is
stored uncompressed out of line, so only the TOAST pieces needed are read), and never holds a
connection while the caller consumes a chunk. Memory stays at one chunk per transfer.

Durability. Every write is committed before ``append`` returns; with PostgreSQL's default
``synchronous_commit = on`` that means flushed to its write-ahead log.

Deletion. ``delete`` unnames the bytes at once (``blob_id`` NULL, so the id is free again) and
records when; the rows themselves go once ``deleted_grace_s`` (an hour) has passed, purged by
later deletions and by ``open``. A download already under way finishes within that hour, as it
does on the filesystem store; past it, it fails with ``ServerError``.

Several nodes. Nodes writing different blobs never wait on each other: every statement touches
only its own blob's rows. One blob is written by one node at a time, and a node that lost a
race cannot damage bytes another committed. The service (``services/blobs.py``) serialises the
pieces of one blob within a node and commits a piece with a compare-and-set on the metadata
offset, but that alone does not protect the bytes: a losing node cuts the blob back to the
offset it read (when it starts its piece, and again when it discards its failed piece), which
may be below what the winner has since written. So the store fences writers itself, with a
lease in ``blob_bytes``:

* ``append`` claims the blob for this store (``writer``, a random id per store, so per node)
  until ``lease_s`` after its last write, on the database's clock so nodes' clocks do not
  matter. It refuses (``ConflictError`` with no offset: the client asks for the committed one)
  to cut bytes while another node's lease is live; starting at the stored length cuts nothing
  and may take the blob over at once (consecutive pieces through different nodes).
* every chunk write is conditional on this store still holding the claim and on ``length``
  being where it left it; otherwise the piece fails with ``ConflictError`` and nothing is
  written (the node that took over wins).
* ``truncate`` (the service's clean-up after a failed piece, always on the node that
  appended it) cuts only a blob this store holds the claim on, or one nobody ever claimed:
  once another node took the blob over, a late clean-up could cut its committed bytes.

A piece's bytes thus stay untouched from its last write to its metadata commit, as long as
that takes less than ``lease_s`` (a signature check and one statement in practice), and a
node that lost the blob writes nothing more to it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, TypeAlias

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mailslot.errors import ConfigError, ConflictError, NotFoundError, ServerError
from mailslot.server.blobs.base import READ_CHUNK, BlobStore, check_blob_id, check_range
from mailslot.server.storage.postgres import migrate_postgresql, open_pool

__all__ = ["CHUNK_BYTES", "DELETED_GRACE_S", "LEASE_S", "PostgresBlobStore"]

Conn: TypeAlias = AsyncConnection[TupleRow]

CHUNK_BYTES = 1024 * 1024  # bytes per blob_chunks row
# How long after its last write an upload keeps other nodes from cutting the blob. It must
# outlast the step from a piece's last write to its metadata commit (milliseconds); it is short
# so that a node that crashed mid-piece blocks the retry through another node only briefly
# (the client retries for about 15 s). A live upload that goes longer between chunk writes may
# be taken over, and then fails safely on its next write.
LEASE_S = 10.0
DELETED_GRACE_S = 3600.0  # how long deleted bytes stay for downloads already under way

# Times in the SQL below are the database's clock in milliseconds,
# (extract(epoch FROM clock_timestamp()) * 1000)::bigint, so the nodes' clocks never matter.


class PostgresBlobStore(BlobStore):
    """Blob bytes in ``blob_bytes`` and ``blob_chunks`` of the database at ``url``."""

    def __init__(
        self,
        url: str,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        lease_s: float = LEASE_S,
        deleted_grace_s: float = DELETED_GRACE_S,
        max_connections: int = 5,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if chunk_bytes < 1 or max_connections < 1 or lease_s <= 0 or deleted_grace_s < 0:
            raise ConfigError("bad PostgreSQL blob store options")
        self.url = url
        self._chunk = chunk_bytes  # for new blobs; each blob keeps the size it was created with
        self._lease_ms = round(lease_s * 1000)
        self._grace_ms = round(deleted_grace_s * 1000)
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._writer = secrets.token_bytes(16)  # this store's (this node's) upload claims
        self._pool: AsyncConnectionPool[Conn] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Migrate the database (as opening the storage does), connect a pool, purge."""
        if self._pool is not None:
            return
        await migrate_postgresql(self.url, self._connect_timeout_s)
        self._pool = await open_pool(
            self.url, 1, self._max, self._connect_timeout_s, name="mailslot-blobs", what="blob database"
        )
        async with self._connection() as conn:
            await self._purge(conn)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled autocommit connection; psycopg errors become mailslot ones."""
        if self._pool is None:
            raise ServerError("the blob store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise ServerError("the blob database is busy or unreachable; try again") from exc
        except psycopg.OperationalError as exc:
            raise ServerError("the blob database is unreachable; try again") from exc
        except psycopg.Error as exc:
            raise ServerError("the blob store failed") from exc

    # --- the interface -----------------------------------------------------------------------
    async def create(self, blob_id: bytes) -> None:
        check_blob_id(blob_id)
        async with self._connection() as conn:
            try:
                await conn.execute(
                    "INSERT INTO blob_bytes (blob_id, length, chunk_size) VALUES (%s, 0, %s::integer)",
                    (blob_id, self._chunk),
                )
            except errors.UniqueViolation as exc:
                raise ConflictError(f"blob {blob_id.hex()} already exists") from exc

    async def append(self, blob_id: bytes, offset: int, chunks: AsyncIterable[bytes]) -> int:
        check_blob_id(blob_id)
        file_id, chunk_size = await self._claim(blob_id, offset)
        position = offset
        buffer = bytearray()
        async for piece in chunks:
            buffer += piece
            while len(buffer) >= (room := chunk_size - position % chunk_size):
                position = await self._write(file_id, chunk_size, position, bytes(buffer[:room]))
                del buffer[:room]
        if buffer:
            position = await self._write(file_id, chunk_size, position, bytes(buffer))
        return position

    async def truncate(self, blob_id: bytes, length: int) -> None:
        check_blob_id(blob_id)
        async with self._connection() as conn, conn.transaction():
            file_id, stored, chunk_size, claimed, _ = await _locked(conn, blob_id, self._writer)
            if stored <= length:
                return
            if claimed:
                raise ConflictError("another node took this blob's upload over")
            await _cut(conn, file_id, chunk_size, length)
            await conn.execute("UPDATE blob_bytes SET length = %s WHERE file_id = %s", (length, file_id))

    async def size(self, blob_id: bytes) -> int | None:
        check_blob_id(blob_id)
        async with self._connection() as conn:
            cursor = await conn.execute("SELECT length FROM blob_bytes WHERE blob_id = %s", (blob_id,))
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def read(self, blob_id: bytes, start: int, end: int) -> AsyncIterator[bytes]:
        check_blob_id(blob_id)
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT file_id, length, chunk_size FROM blob_bytes WHERE blob_id = %s", (blob_id,)
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFoundError(f"no blob {blob_id.hex()}")
        file_id, length, chunk_size = int(row[0]), int(row[1]), int(row[2])
        check_range(start, end, length)
        position = start
        while position < end:
            data = await self._read_chunk(file_id, chunk_size, position, end)
            for at in range(0, len(data), READ_CHUNK):
                yield data[at : at + READ_CHUNK]
            position += len(data)

    async def delete(self, blob_id: bytes) -> bool:
        check_blob_id(blob_id)
        async with self._connection() as conn:
            cursor = await conn.execute(
                "UPDATE blob_bytes SET blob_id = NULL, writer = NULL,"
                " deleted_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
                " WHERE blob_id = %s",
                (blob_id,),
            )
            existed = cursor.rowcount == 1
            await self._purge(conn)
        return existed

    # --- helpers -----------------------------------------------------------------------------
    async def _claim(self, blob_id: bytes, offset: int) -> tuple[int, int]:
        """Cut the blob to ``offset`` and take its upload lease: (file id, chunk size)."""
        async with self._connection() as conn, conn.transaction():
            file_id, stored, chunk_size, _, busy = await _locked(conn, blob_id, self._writer)
            if stored < offset:
                raise ConflictError(f"blob holds {stored} bytes, not {offset}", details={"offset": stored})
            if stored > offset:
                if busy:
                    raise ConflictError("another node is uploading to this blob; ask for its offset")
                await _cut(conn, file_id, chunk_size, offset)
            await conn.execute(
                "UPDATE blob_bytes SET length = %s, writer = %s,"
                " writer_until_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + %s"
                " WHERE file_id = %s",
                (offset, self._writer, self._lease_ms, file_id),
            )
        return file_id, chunk_size

    async def _write(self, file_id: int, chunk_size: int, position: int, data: bytes) -> int:
        """Store ``data`` (never past a chunk boundary) at ``position``, the blob's length,
        if this store still holds the blob's lease; the new length."""
        end = position + len(data)
        params: dict[str, Any] = {
            "file": file_id,
            "at": position,
            "end": end,
            "no": position // chunk_size,
            "data": data,
            "me": self._writer,
            "lease": self._lease_ms,
        }
        async with self._connection() as conn:
            cursor = await conn.execute(_WRITE, params)
        if cursor.rowcount != 1:
            raise ConflictError("another node took over this upload, or the blob was deleted")
        return end

    async def _read_chunk(self, file_id: int, chunk_size: int, position: int, end: int) -> bytes:
        """The bytes from ``position`` to the end of its chunk or ``end``, whichever is first."""
        number, within = divmod(position, chunk_size)
        want = min(chunk_size - within, end - position)
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT substring(data FROM %s::integer FOR %s::integer) FROM blob_chunks"
                " WHERE file_id = %s AND chunk_no = %s::integer",
                (within + 1, want, file_id, number),
                binary=True,
            )
            row = await cursor.fetchone()
        if row is None or len(row[0]) != want:
            raise ServerError("the blob's bytes were removed during the read")
        return bytes(row[0])

    async def _purge(self, conn: Conn) -> None:
        """Remove deleted bytes past their grace period (their chunks go with them); rows that
        another node is purging are skipped, not waited for."""
        await conn.execute(
            "DELETE FROM blob_bytes WHERE file_id IN (SELECT file_id FROM blob_bytes"
            " WHERE deleted_at_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint - %s"
            " FOR UPDATE SKIP LOCKED)",
            (self._grace_ms,),
        )


# One statement: advance the length if this store holds the lease and the length is where it
# left it, and only then add the bytes (a new chunk, or the rest of the partial last one).
_WRITE = """
WITH claimed AS (
    UPDATE blob_bytes
    SET length = %(end)s, writer_until_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + %(lease)s
    WHERE file_id = %(file)s AND writer = %(me)s AND length = %(at)s AND blob_id IS NOT NULL
    RETURNING file_id
)
INSERT INTO blob_chunks (file_id, chunk_no, data)
SELECT file_id, %(no)s::integer, %(data)s FROM claimed
ON CONFLICT (file_id, chunk_no) DO UPDATE SET data = blob_chunks.data || EXCLUDED.data
"""


async def _locked(conn: Conn, blob_id: bytes, writer: bytes) -> tuple[int, int, int, bool, bool]:
    """Lock the blob's row: (file id, length, chunk size, whether another store holds the
    claim, whether that claim's lease is live); ``NotFoundError`` if the blob is unknown."""
    cursor = await conn.execute(
        "SELECT file_id, length, chunk_size, writer IS NOT NULL AND writer <> %s,"
        " writer_until_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
        " FROM blob_bytes WHERE blob_id = %s FOR UPDATE",
        (writer, blob_id),
    )
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(f"no blob {blob_id.hex()}")
    claimed = bool(row[3])
    return int(row[0]), int(row[1]), int(row[2]), claimed, claimed and bool(row[4])


async def _cut(conn: Conn, file_id: int, chunk_size: int, length: int) -> None:
    """Drop the chunks past ``length`` and shorten the last one kept (``length`` is not
    written; the caller sets it in the same transaction)."""
    keep = -(-length // chunk_size)
    await conn.execute(
        "DELETE FROM blob_chunks WHERE file_id = %s AND chunk_no >= %s::integer", (file_id, keep)
    )
    if length % chunk_size:
        await conn.execute(
            "UPDATE blob_chunks SET data = substring(data FROM 1 FOR %s::integer)"
            " WHERE file_id = %s AND chunk_no = %s::integer",
            (length % chunk_size, file_id, keep - 1),
        )
