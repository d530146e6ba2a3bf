"""Helpers the PostgreSQL transaction modules share (postgres.py and postgres_*.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

__all__ = ["Conn", "Params", "Vanished", "delete_orphans", "fetch_all", "fetch_one"]

Conn: TypeAlias = AsyncConnection[TupleRow]
Params: TypeAlias = Sequence[Any] | Mapping[str, Any]


class Vanished(Exception):
    """A row this transaction relied on was deleted by another one; run it again."""


async def fetch_one(conn: Conn, query: str, params: Params = ()) -> TupleRow | None:
    cursor = await conn.execute(query, params, binary=True)
    return await cursor.fetchone()


async def fetch_all(conn: Conn, query: str, params: Params = ()) -> list[TupleRow]:
    cursor = await conn.execute(query, params, binary=True)
    return await cursor.fetchall()


async def delete_orphans(conn: Conn, message_ids: list[bytes]) -> None:
    """Delete the bodies among ``message_ids`` (locked by the caller) that no entry refers to.

    A statement of its own: its snapshot sees the entries other transactions deleted and
    committed while we waited for the body locks."""
    if message_ids:
        await conn.execute(
            "DELETE FROM messages WHERE message_id = ANY(%b)"
            " AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.message_id)",
            (message_ids,),
        )
