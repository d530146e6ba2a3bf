"""Helpers the SQLite transaction modules share (sqlite.py, sqlite_directory.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

__all__ = ["CHUNK", "chunks", "delete_orphans", "with_marks"]

T = TypeVar("T")

CHUNK = 500  # ids per ``IN (...)`` list, far below SQLite's limit on bound parameters


def with_marks(sql: str, count: int) -> str:
    """``sql`` with ``{marks}`` replaced by ``count`` ``?`` placeholders (nothing else)."""
    return sql.replace("{marks}", ", ".join("?" * count))


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def delete_orphans(conn: sqlite3.Connection, message_ids: Iterable[bytes]) -> None:
    """Delete the bodies among ``message_ids`` that no queue entry refers to any more."""
    conn.executemany(
        "DELETE FROM messages WHERE message_id = ?"
        " AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.message_id)",
        [(message_id,) for message_id in message_ids],
    )
