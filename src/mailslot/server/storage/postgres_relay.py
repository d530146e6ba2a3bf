"""The PostgreSQL transactions of the relay (bodies and queues) and of device links.

Each function is one transaction's SQL, taking the connection first; ``postgres.py`` routes
the storage methods here and translates psycopg errors. The locking order these statements
follow is described in ``postgres.py``.
"""

from __future__ import annotations

from psycopg import AsyncClientCursor

from mailslot.errors import ConflictError, MessageIdConflict, NotFoundError, QueueFull
from mailslot.server.storage.base import NewMessage, QueueEntry, QueueStats, StoredSend
from mailslot.server.storage.postgres_shared import Conn, Vanished, fetch_all, fetch_one

__all__ = [
    "ack",
    "create_link",
    "expire",
    "expire_links",
    "fetch_queue",
    "get_link",
    "message_exists",
    "queue_depth",
    "queue_stats",
    "respond_link",
    "store_message",
]

SWEEP_LOCK = int.from_bytes(b"mailswep", "big") >> 1  # advisory lock key held by expire()


# --- relay -------------------------------------------------------------------------------------
# One statement, so one round trip and its own transaction. The CTEs run in dependency order:
# ``body`` waits on ``too_full``, which sorts all of ``locked``, so every depth row is created
# or locked (in device-id order, held to commit) before the body and the entries are inserted
# and their seq values drawn. ``DO UPDATE SET depth = depth`` changes nothing but takes the lock
# and returns the depth as it is after any transaction we waited for.
_STORE_MESSAGE = """
WITH locked AS (
    INSERT INTO queue_depths (device_id, depth)
    SELECT device_id, 0 FROM unnest(%(devices)b::bytea[]) AS device_id ORDER BY device_id
    ON CONFLICT (device_id) DO UPDATE SET depth = queue_depths.depth
    RETURNING device_id, depth
), too_full AS (
    SELECT device_id FROM locked WHERE depth >= %(max_queue)s ORDER BY device_id LIMIT 1
), body AS (
    INSERT INTO messages (message_id, sender, sender_device, accepted_at_ms, expires_at_ms,
                          device_count, body)
    SELECT %(message_id)b, %(sender)s, %(sender_device)b, %(accepted_at_ms)s, %(expires_at_ms)s,
           %(device_count)s, %(body)b
    WHERE NOT EXISTS (SELECT 1 FROM too_full)
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), entries AS (
    INSERT INTO queue (device_id, message_id, wrapped_key)
    SELECT keys.device_id, body.message_id, keys.wrapped_key
    FROM body, unnest(%(devices)b::bytea[], %(keys)b::bytea[]) AS keys (device_id, wrapped_key)
)
SELECT EXISTS (SELECT 1 FROM body), (SELECT device_id FROM too_full)
"""


async def store_message(conn: Conn, message: NewMessage, max_queue: int) -> StoredSend:
    devices = sorted(message.keys)
    row = await fetch_one(
        conn,
        _STORE_MESSAGE,
        {
            "devices": devices,
            "keys": [message.keys[d] for d in devices],
            "max_queue": max_queue,
            "message_id": message.message_id,
            "sender": message.sender,
            "sender_device": message.sender_device,
            "accepted_at_ms": message.accepted_at_ms,
            "expires_at_ms": message.expires_at_ms,
            "device_count": len(devices),
            "body": message.body,
        },
    )
    assert row is not None
    created, full = row
    if created:
        return StoredSend(True, message.sender, message.sender_device, message.accepted_at_ms, len(devices))
    # Nothing stored: the id was taken (a retry, or another sender), or a queue is full. A retry
    # is answered even when queues are full, as by the other stores.
    first = await fetch_one(
        conn,
        "SELECT sender, sender_device, accepted_at_ms, device_count FROM messages WHERE message_id = %b",
        (message.message_id,),
    )
    if first is not None:
        if (first[0], first[1]) != (message.sender, message.sender_device):
            raise MessageIdConflict(f"message id {message.message_id.hex()} is used by another sender")
        return StoredSend(False, first[0], first[1], first[2], first[3])
    if full is not None:
        raise QueueFull(
            f"device {full.hex()} has {max_queue} queued messages", details={"device": full.hex()}
        )
    raise Vanished  # the id was taken, but its body is gone by now (acknowledged): start again


async def fetch_queue(conn: Conn, device_id: bytes, after_seq: int, limit: int) -> list[QueueEntry]:
    if limit <= 0:
        return []
    rows = await fetch_all(
        conn,
        "SELECT q.seq, q.message_id, m.sender, m.sender_device, m.accepted_at_ms, m.body, q.wrapped_key"
        " FROM queue AS q JOIN messages AS m ON m.message_id = q.message_id"
        " WHERE q.device_id = %b AND q.seq > %s ORDER BY q.seq LIMIT %s",
        (device_id, after_seq, limit),
    )
    return [QueueEntry(*row) for row in rows]


# Two statements in one round trip (client-side parameters, simple query protocol, which runs
# them as one implicit transaction): delete the entries and lock their bodies, then delete the
# bodies left with no entry, seen in the second statement's fresh snapshot. The second may look
# at every id asked for: a body with no entry at all is an orphan whoever acknowledged it.
_ACK = """
WITH gone AS (
    DELETE FROM queue WHERE device_id = %(device)s AND message_id = ANY(%(ids)s::bytea[])
    RETURNING message_id
)
SELECT message_id FROM messages WHERE message_id IN (SELECT message_id FROM gone)
ORDER BY message_id FOR UPDATE;
DELETE FROM messages WHERE message_id = ANY(%(ids)s::bytea[])
    AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.message_id)
"""


async def ack(conn: Conn, device_id: bytes, message_ids: list[bytes]) -> int:
    if not message_ids:
        return 0
    cursor = AsyncClientCursor(conn)
    await cursor.execute(_ACK, {"device": device_id, "ids": list(dict.fromkeys(message_ids))})
    return len(await cursor.fetchall())


async def queue_depth(conn: Conn, device_id: bytes) -> int:
    row = await fetch_one(conn, "SELECT depth FROM queue_depths WHERE device_id = %b", (device_id,))
    return 0 if row is None else int(row[0])


async def queue_stats(conn: Conn) -> QueueStats:
    # As in SQLite: the count from queue_depths (one row per device), the oldest entry by the
    # primary key on seq; one statement, so one snapshot.
    row = await fetch_one(
        conn,
        "SELECT (SELECT coalesce(sum(depth), 0) FROM queue_depths),"
        " (SELECT m.accepted_at_ms FROM queue AS q JOIN messages AS m ON m.message_id = q.message_id"
        " ORDER BY q.seq LIMIT 1)",
    )
    assert row is not None
    return QueueStats(int(row[0]), None if row[1] is None else int(row[1]))


async def message_exists(conn: Conn, message_id: bytes) -> bool:
    return await fetch_one(conn, "SELECT 1 FROM messages WHERE message_id = %b", (message_id,)) is not None


async def expire(conn: Conn, now_ms: int) -> int:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SWEEP_LOCK,))
    held = await fetch_all(
        conn,
        "WITH gone AS (DELETE FROM queue WHERE message_id IN"
        " (SELECT message_id FROM messages WHERE expires_at_ms <= %s) RETURNING message_id)"
        " SELECT count(*) FROM gone",
        (now_ms,),
    )
    # Bodies go once no entry refers to them; one that gained an entry meanwhile (a send whose
    # expiry was already past, from a node with a skewed clock) waits for the next sweep.
    await conn.execute(
        "DELETE FROM messages WHERE expires_at_ms <= %s"
        " AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.message_id)",
        (now_ms,),
    )
    return int(held[0][0])


# --- device linking ----------------------------------------------------------------------------
async def create_link(conn: Conn, link_id: bytes, request: bytes, expires_at_ms: int) -> None:
    await conn.execute(
        "INSERT INTO links (link_id, request, expires_at_ms) VALUES (%b, %b, %s)",
        (link_id, request, expires_at_ms),
    )


async def get_link(conn: Conn, link_id: bytes, now_ms: int) -> tuple[bytes, bytes | None] | None:
    row = await fetch_one(
        conn,
        "SELECT request, response FROM links WHERE link_id = %b AND expires_at_ms > %s",
        (link_id, now_ms),
    )
    return None if row is None else (row[0], row[1])


async def respond_link(conn: Conn, link_id: bytes, response: bytes, now_ms: int) -> None:
    answered = await fetch_one(
        conn,
        "UPDATE links SET response = %b WHERE link_id = %b AND expires_at_ms > %s AND response IS NULL"
        " RETURNING link_id",
        (response, link_id, now_ms),
    )
    if answered is None:
        if await get_link(conn, link_id, now_ms) is None:
            raise NotFoundError(f"no pending link {link_id.hex()}")
        raise ConflictError(f"link {link_id.hex()} was already answered")


async def expire_links(conn: Conn, now_ms: int) -> int:
    cursor = await conn.execute("DELETE FROM links WHERE expires_at_ms <= %s", (now_ms,))
    return cursor.rowcount
