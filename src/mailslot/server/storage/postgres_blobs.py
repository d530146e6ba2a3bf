"""The SQL of the blob metadata transactions, for ``PostgresStorage`` (postgres.py).

Each function is the body of one transaction (or one statement) and takes the connection
first; ``PostgresStorage`` opens and commits the transaction and translates psycopg errors.
The semantics are those of ``sqlite_blobs.py``; where two nodes could race, a lock decides:
quota checks take a per-owner advisory lock, offset updates lock the blob's row.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from mailslot.errors import ConflictError, InputError, NotFoundError, QuotaExceeded
from mailslot.server.storage.base import BlobRow

__all__ = ["advance_blob", "blob_usage", "create_blob", "delete_blob", "expire_blobs", "get_blob"]

Conn = AsyncConnection[TupleRow]

_SELECT = "SELECT blob_id, owner, size, upload_offset, created_at_ms, expires_at_ms FROM blobs"
# First key of the two-key advisory lock that serialises one owner's quota checks; the second
# is the hash of the handle. Owners need not have an account row, so no row lock would do.
_QUOTA_LOCK_SPACE = int.from_bytes(b"mslq", "big") >> 1


async def create_blob(conn: Conn, blob: BlobRow, quota_bytes: int) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_QUOTA_LOCK_SPACE, blob.owner))
    cursor = await conn.execute("SELECT 1 FROM blobs WHERE blob_id = %b", (blob.blob_id,))
    if await cursor.fetchone() is not None:
        raise ConflictError("the blob id already exists")
    cursor = await conn.execute(
        "INSERT INTO blobs (blob_id, owner, size, upload_offset, created_at_ms, expires_at_ms)"
        " SELECT %b, %s, %s, %s, %s, %s"
        " WHERE (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = %s AND expires_at_ms > %s)"
        " + %s <= %s",
        (
            *(blob.blob_id, blob.owner, blob.size, blob.offset, blob.created_at_ms, blob.expires_at_ms),
            *(blob.owner, blob.created_at_ms, blob.size, quota_bytes),
        ),
    )
    if not cursor.rowcount:
        used = await blob_usage(conn, blob.owner, blob.created_at_ms)
        raise QuotaExceeded(
            f"the account's blobs would pass its quota of {quota_bytes} bytes",
            details={"quota_bytes": quota_bytes, "used_bytes": used},
        )


async def get_blob(conn: Conn, blob_id: bytes, now_ms: int) -> BlobRow | None:
    cursor = await conn.execute(
        _SELECT + " WHERE blob_id = %b AND expires_at_ms > %s", (blob_id, now_ms), binary=True
    )
    row = await cursor.fetchone()
    return None if row is None else BlobRow(*row)


async def advance_blob(conn: Conn, blob_id: bytes, expected_offset: int, new_offset: int) -> BlobRow:
    cursor = await conn.execute(_SELECT + " WHERE blob_id = %b FOR UPDATE", (blob_id,), binary=True)
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(f"no blob {blob_id.hex()}")
    blob = BlobRow(*row)
    if blob.offset != expected_offset:
        raise ConflictError(
            f"blob offset is {blob.offset}, not {expected_offset}", details={"offset": blob.offset}
        )
    if not expected_offset <= new_offset <= blob.size:
        raise InputError(f"offset {new_offset} is outside {expected_offset}..{blob.size}")
    await conn.execute("UPDATE blobs SET upload_offset = %s WHERE blob_id = %b", (new_offset, blob_id))
    return BlobRow(blob.blob_id, blob.owner, blob.size, new_offset, blob.created_at_ms, blob.expires_at_ms)


async def delete_blob(conn: Conn, blob_id: bytes) -> bool:
    cursor = await conn.execute("DELETE FROM blobs WHERE blob_id = %b", (blob_id,))
    return cursor.rowcount > 0


async def expire_blobs(conn: Conn, now_ms: int) -> list[bytes]:
    cursor = await conn.execute(
        "DELETE FROM blobs WHERE expires_at_ms <= %s RETURNING blob_id", (now_ms,), binary=True
    )
    return sorted(blob_id for (blob_id,) in await cursor.fetchall())


async def blob_usage(conn: Conn, handle: str, now_ms: int) -> int:
    cursor = await conn.execute(
        "SELECT COALESCE(SUM(size), 0)::bigint FROM blobs WHERE owner = %s AND expires_at_ms > %s",
        (handle, now_ms),
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])
