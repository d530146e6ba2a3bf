"""The SQL of the blob metadata transactions, for ``SqliteStorage`` (sqlite.py).

Each function is the body of one transaction and takes the connection first; ``SqliteStorage``
opens and commits the transaction on its worker thread and translates sqlite3 errors. The
statements are portable SQL; only the ``?`` placeholders are SQLite's.
"""

from __future__ import annotations

import sqlite3

from mailslot.errors import ConflictError, InputError, NotFoundError, QuotaExceeded
from mailslot.server.storage.base import BlobRow

__all__ = ["advance_blob", "blob_usage", "create_blob", "delete_blob", "expire_blobs", "get_blob"]

_SELECT = "SELECT blob_id, owner, size, upload_offset, created_at_ms, expires_at_ms FROM blobs"


def create_blob(conn: sqlite3.Connection, blob: BlobRow, quota_bytes: int) -> None:
    if conn.execute("SELECT 1 FROM blobs WHERE blob_id = ?", (blob.blob_id,)).fetchone() is not None:
        raise ConflictError("the blob id already exists")
    # One statement inserts only under the quota. SQLite's write lock (BEGIN IMMEDIATE)
    # serialises it against other creates; PostgreSQL will lock the owner's account row first.
    inserted = conn.execute(
        "INSERT INTO blobs (blob_id, owner, size, upload_offset, created_at_ms, expires_at_ms)"
        " SELECT ?, ?, ?, ?, ?, ?"
        " WHERE (SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = ? AND expires_at_ms > ?)"
        " + ? <= ?",
        (
            *(blob.blob_id, blob.owner, blob.size, blob.offset, blob.created_at_ms, blob.expires_at_ms),
            *(blob.owner, blob.created_at_ms, blob.size, quota_bytes),
        ),
    ).rowcount
    if not inserted:
        used = blob_usage(conn, blob.owner, blob.created_at_ms)
        raise QuotaExceeded(
            f"the account's blobs would pass its quota of {quota_bytes} bytes",
            details={"quota_bytes": quota_bytes, "used_bytes": used},
        )


def get_blob(conn: sqlite3.Connection, blob_id: bytes, now_ms: int) -> BlobRow | None:
    row = conn.execute(_SELECT + " WHERE blob_id = ? AND expires_at_ms > ?", (blob_id, now_ms)).fetchone()
    return None if row is None else BlobRow(*row)


def advance_blob(conn: sqlite3.Connection, blob_id: bytes, expected_offset: int, new_offset: int) -> BlobRow:
    row = conn.execute(_SELECT + " WHERE blob_id = ?", (blob_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no blob {blob_id.hex()}")
    blob = BlobRow(*row)
    if blob.offset != expected_offset:
        raise ConflictError(
            f"blob offset is {blob.offset}, not {expected_offset}", details={"offset": blob.offset}
        )
    if not expected_offset <= new_offset <= blob.size:
        raise InputError(f"offset {new_offset} is outside {expected_offset}..{blob.size}")
    conn.execute(
        "UPDATE blobs SET upload_offset = ? WHERE blob_id = ? AND upload_offset = ?",
        (new_offset, blob_id, expected_offset),
    )
    return BlobRow(blob.blob_id, blob.owner, blob.size, new_offset, blob.created_at_ms, blob.expires_at_ms)


def delete_blob(conn: sqlite3.Connection, blob_id: bytes) -> bool:
    deleted: int = conn.execute("DELETE FROM blobs WHERE blob_id = ?", (blob_id,)).rowcount
    return deleted > 0


def expire_blobs(conn: sqlite3.Connection, now_ms: int) -> list[bytes]:
    rows = conn.execute("DELETE FROM blobs WHERE expires_at_ms <= ? RETURNING blob_id", (now_ms,))
    return sorted(blob_id for (blob_id,) in rows)


def blob_usage(conn: sqlite3.Connection, handle: str, now_ms: int) -> int:
    (used,) = conn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE owner = ? AND expires_at_ms > ?", (handle, now_ms)
    ).fetchone()
    return int(used)
