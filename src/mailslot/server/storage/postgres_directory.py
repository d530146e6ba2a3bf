"""The SQL of the account, device and invite transactions, for ``PostgresStorage`` (postgres.py).

Each function is the body of one transaction (or one statement) and takes the connection
first; ``PostgresStorage`` opens and commits the transaction and translates psycopg errors.
The semantics are those of ``sqlite_directory.py``. Row locks are taken in the order the rest
of the store uses, so that nodes sharing the database wait for each other rather than
deadlock: an invite row, then the account row, then the account's device rows by id, then
queue depths and message bodies by id (``drop_devices``), then removed-device rows.

* ``create_account`` spends the invite with a conditional ``UPDATE`` (which locks its row): a
  concurrent registration with the same invite waits, then sees the use already taken.
* ``replace_devices`` and ``recover_account`` are a compare-and-set on the account row: a
  concurrent update waits for the row lock, then sees the version moved and raises
  ``StaleDeviceList``. They then lock the account's device rows in id order.
* ``touch_devices`` is one statement that locks the rows it moves forward in id order.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailslot.errors import InviteRequired, StaleDeviceList, UnknownHandle
from mailslot.server.storage.base import AccountDevices, AccountRow, DeviceRow, InviteRow, RemovedDevice
from mailslot.server.storage.list_versions import check_versions
from mailslot.server.storage.postgres_shared import Conn, delete_orphans, fetch_all, fetch_one

__all__ = [
    "create_account",
    "create_invite",
    "devices_of",
    "devices_seen",
    "get_account",
    "get_device",
    "list_accounts",
    "list_history",
    "list_invites",
    "recover_account",
    "removed_device",
    "replace_devices",
    "revoke_invite",
    "set_disabled",
    "touch_devices",
]


# --- accounts ----------------------------------------------------------------------------------
async def create_account(
    conn: Conn, account: AccountRow, devices: list[DeviceRow], invite_hash: bytes | None
) -> None:
    if invite_hash is not None:
        await _spend_invite(conn, invite_hash, account.created_at_ms)
    await conn.execute(
        "INSERT INTO accounts (handle, account_key, list_version, device_list, created_at_ms, disabled)"
        " VALUES (%s, %b, %s, %b, %s, %s)",
        (
            account.handle,
            account.account_key,
            account.list_version,
            account.device_list,
            account.created_at_ms,
            account.disabled,
        ),
    )
    await _record_list(conn, account.handle, account.list_version, account.device_list, account.created_at_ms)
    await _insert_devices(conn, devices)


async def _spend_invite(conn: Conn, token_hash: bytes, now_ms: int) -> None:
    """Use up one use of an invite; ``InviteRequired`` if it is unknown, expired or used up."""
    spent = await fetch_one(
        conn,
        "UPDATE invites SET uses_left = uses_left - 1"
        " WHERE token_hash = %b AND uses_left > 0 AND expires_at_ms > %s RETURNING token_hash",
        (token_hash, now_ms),
    )
    if spent is None:
        raise InviteRequired("the invite is unknown, expired or used up")


async def get_account(conn: Conn, handle: str) -> AccountRow | None:
    row = await fetch_one(
        conn,
        "SELECT handle, account_key, list_version, device_list, created_at_ms, disabled"
        " FROM accounts WHERE handle = %s",
        (handle,),
    )
    return None if row is None else AccountRow(*row)


async def list_accounts(conn: Conn) -> list[tuple[AccountRow, int]]:
    rows = await fetch_all(
        conn,
        "SELECT a.handle, a.account_key, a.list_version, a.device_list, a.created_at_ms, a.disabled,"
        " (SELECT COUNT(*) FROM devices d WHERE d.handle = a.handle)"
        ' FROM accounts a ORDER BY a.handle COLLATE "C"',
    )
    return [(AccountRow(*row[:6]), int(row[6])) for row in rows]


async def set_disabled(conn: Conn, handle: str, disabled: bool) -> None:
    cursor = await conn.execute("UPDATE accounts SET disabled = %s WHERE handle = %s", (disabled, handle))
    if not cursor.rowcount:
        raise UnknownHandle(f"no account {handle!r}")


# --- device lists ------------------------------------------------------------------------------
async def replace_devices(
    conn: Conn,
    handle: str,
    expected_version: int,
    new_version: int,
    device_list: bytes,
    devices: list[DeviceRow],
    now_ms: int,
) -> list[bytes]:
    return await _swap_list(conn, handle, expected_version, None, new_version, device_list, devices, now_ms)


async def recover_account(
    conn: Conn,
    handle: str,
    expected_version: int,
    account_key: bytes,
    new_version: int,
    device_list: bytes,
    devices: list[DeviceRow],
    now_ms: int,
) -> list[bytes]:
    return await _swap_list(
        conn, handle, expected_version, account_key, new_version, device_list, devices, now_ms
    )


async def _swap_list(
    conn: Conn,
    handle: str,
    expected_version: int,
    account_key: bytes | None,
    new_version: int,
    device_list: bytes,
    devices: list[DeviceRow],
    now_ms: int,
) -> list[bytes]:
    """Compare-and-set the account's list (and key, unless None), record it in the history,
    and make ``devices`` the account's devices; the ids of the removed ones, sorted."""
    check_versions(expected_version, new_version)
    # A concurrent update holds the row lock; once it commits, PostgreSQL re-checks our WHERE
    # on the new row, the version no longer matches and we change nothing.
    swapped = await fetch_one(
        conn,
        "UPDATE accounts SET list_version = %s, device_list = %b,"
        " account_key = COALESCE(%b::bytea, account_key)"
        " WHERE handle = %s AND list_version = %s RETURNING handle",
        (new_version, device_list, account_key, handle, expected_version),
    )
    if swapped is None:
        row = await fetch_one(conn, "SELECT list_version FROM accounts WHERE handle = %s", (handle,))
        if row is None:
            raise UnknownHandle(f"no account {handle!r}")
        raise StaleDeviceList(f"device list is at version {row[0]}, not {expected_version}")
    await _record_list(conn, handle, new_version, device_list, now_ms)
    rows = await fetch_all(
        conn, "SELECT device_id FROM devices WHERE handle = %s ORDER BY device_id FOR UPDATE", (handle,)
    )
    current = {device_id for (device_id,) in rows}
    removed = sorted(current - {d.device_id for d in devices})
    if removed:
        await _drop_devices(conn, removed)
    kept = [d for d in devices if d.device_id in current]
    if kept:
        await conn.execute(
            "UPDATE devices SET sign_key = new.sign_key"
            " FROM unnest(%b::bytea[], %b::bytea[]) AS new (device_id, sign_key)"
            " WHERE devices.device_id = new.device_id",
            ([d.device_id for d in kept], [d.sign_key for d in kept]),
        )
    await _insert_devices(conn, [d for d in devices if d.device_id not in current])
    if removed:
        await conn.execute(
            "INSERT INTO removed_devices (device_id, handle, version, removed_at_ms)"
            " SELECT device_id, %s, %s, %s FROM unnest(%b::bytea[]) AS device_id",
            (handle, new_version, now_ms, removed),
        )
    return removed


async def _record_list(conn: Conn, handle: str, version: int, device_list: bytes, now_ms: int) -> None:
    await conn.execute(
        "INSERT INTO device_list_history (handle, version, device_list, published_at_ms)"
        " VALUES (%s, %s, %b, %s)",
        (handle, version, device_list, now_ms),
    )


async def _insert_devices(conn: Conn, devices: Sequence[DeviceRow]) -> None:
    """Add devices (never seen yet); one listed again after its removal is no longer removed."""
    if devices:
        ids = [d.device_id for d in devices]
        await conn.execute(
            "INSERT INTO devices (device_id, handle, sign_key)"
            " SELECT * FROM unnest(%b::bytea[], %s::text[], %b::bytea[])",
            (ids, [d.handle for d in devices], [d.sign_key for d in devices]),
        )
        await conn.execute("DELETE FROM removed_devices WHERE device_id = ANY(%b)", (sorted(ids),))


async def _drop_devices(conn: Conn, device_ids: list[bytes]) -> None:
    """Delete devices with their queues, and the bodies no other device still holds."""
    held = await fetch_all(
        conn,
        "WITH gone AS (DELETE FROM queue WHERE device_id = ANY(%b) RETURNING message_id)"
        " SELECT message_id FROM messages WHERE message_id IN (SELECT message_id FROM gone)"
        " ORDER BY message_id FOR UPDATE",
        (device_ids,),
    )
    await delete_orphans(conn, [message_id for (message_id,) in held])
    await conn.execute("DELETE FROM queue_depths WHERE device_id = ANY(%b)", (device_ids,))
    await conn.execute("DELETE FROM devices WHERE device_id = ANY(%b)", (device_ids,))


async def list_history(conn: Conn, handle: str, after_version: int, limit: int) -> list[bytes]:
    if limit <= 0:
        return []
    rows = await fetch_all(
        conn,
        "SELECT device_list FROM device_list_history WHERE handle = %s AND version > %s"
        " ORDER BY version LIMIT %s",
        (handle, after_version, limit),
    )
    return [device_list for (device_list,) in rows]


async def removed_device(conn: Conn, device_id: bytes) -> RemovedDevice | None:
    row = await fetch_one(
        conn,
        "SELECT device_id, handle, version, removed_at_ms FROM removed_devices WHERE device_id = %b",
        (device_id,),
    )
    return None if row is None else RemovedDevice(*row)


# --- devices -----------------------------------------------------------------------------------
async def get_device(conn: Conn, device_id: bytes) -> DeviceRow | None:
    row = await fetch_one(
        conn,
        "SELECT d.device_id, d.handle, d.sign_key, a.disabled, a.list_version FROM devices d"
        " JOIN accounts a ON a.handle = d.handle WHERE d.device_id = %b",
        (device_id,),
    )
    if row is None:
        return None
    return DeviceRow(row[0], row[1], row[2], account_disabled=bool(row[3]), list_version=int(row[4]))


async def devices_of(conn: Conn, handles: list[str]) -> dict[str, AccountDevices]:
    if not handles:
        return {}
    rows = await fetch_all(
        conn,
        "SELECT a.handle, a.list_version, d.device_id FROM accounts AS a"
        " LEFT JOIN devices AS d ON d.handle = a.handle WHERE a.handle = ANY(%s::text[])",
        (list(dict.fromkeys(handles)),),
    )
    found: dict[str, AccountDevices] = {}
    for handle, version, device_id in rows:
        ids = found.setdefault(handle, AccountDevices(int(version), set())).device_ids
        if device_id is not None:
            ids.add(device_id)
    return found


# One statement: ``moving`` locks (in id order, held to commit) the rows whose time moves
# forward, re-checked against any concurrent touch it waited for; the update then writes them.
_TOUCH_DEVICES = """
WITH seen AS (
    SELECT * FROM unnest(%b::bytea[], %s::bigint[]) AS seen (device_id, at_ms)
), moving AS (
    SELECT devices.device_id, seen.at_ms FROM devices JOIN seen ON seen.device_id = devices.device_id
    WHERE devices.last_seen_ms IS NULL OR devices.last_seen_ms < seen.at_ms
    ORDER BY devices.device_id FOR UPDATE OF devices
)
UPDATE devices SET last_seen_ms = GREATEST(COALESCE(devices.last_seen_ms, moving.at_ms), moving.at_ms)
FROM moving WHERE devices.device_id = moving.device_id
"""


async def touch_devices(conn: Conn, seen: dict[bytes, int]) -> None:
    if seen:
        ids = sorted(seen)
        await conn.execute(_TOUCH_DEVICES, (ids, [seen[device_id] for device_id in ids]))


async def devices_seen(conn: Conn, handle: str) -> dict[bytes, int | None]:
    rows = await fetch_all(conn, "SELECT device_id, last_seen_ms FROM devices WHERE handle = %s", (handle,))
    return {device_id: None if last_seen is None else int(last_seen) for device_id, last_seen in rows}


# --- invites -----------------------------------------------------------------------------------
async def create_invite(conn: Conn, invite: InviteRow) -> None:
    await conn.execute(
        "INSERT INTO invites (token_hash, created_at_ms, expires_at_ms, uses_left, note)"
        " VALUES (%b, %s, %s, %s, %s)",
        (invite.token_hash, invite.created_at_ms, invite.expires_at_ms, invite.uses_left, invite.note),
    )


async def list_invites(conn: Conn) -> list[InviteRow]:
    rows = await fetch_all(
        conn,
        "SELECT token_hash, created_at_ms, expires_at_ms, uses_left, note FROM invites"
        " ORDER BY created_at_ms DESC, token_hash",
    )
    return [InviteRow(row[0], int(row[1]), int(row[2]), int(row[3]), row[4]) for row in rows]


async def revoke_invite(conn: Conn, token_hash: bytes) -> bool:
    cursor = await conn.execute("DELETE FROM invites WHERE token_hash = %b", (token_hash,))
    return cursor.rowcount > 0
