"""The SQL of the account, device and invite transactions, for ``SqliteStorage`` (sqlite.py).

Each function is the body of one transaction and takes the connection first; ``SqliteStorage``
runs it on the writer (``BEGIN IMMEDIATE``, so nothing else writes meanwhile) or the reader,
rolls it back on any error and translates sqlite3 errors. The statements are portable SQL; only
the ``?`` placeholders are SQLite's.

Invariants kept here: every account has its current list in ``device_list_history`` at its
current version; a device id is either in ``devices`` or in ``removed_devices``, never both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mailslot.errors import InviteRequired, StaleDeviceList, UnknownHandle
from mailslot.server.storage.base import AccountDevices, AccountRow, DeviceRow, InviteRow, RemovedDevice
from mailslot.server.storage.list_versions import check_versions
from mailslot.server.storage.sqlite_shared import chunks, delete_orphans, with_marks

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
def create_account(
    conn: sqlite3.Connection, account: AccountRow, devices: list[DeviceRow], invite_hash: bytes | None
) -> None:
    if invite_hash is not None:
        _spend_invite(conn, invite_hash, account.created_at_ms)
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
    _record_list(conn, account.handle, account.list_version, account.device_list, account.created_at_ms)
    _insert_devices(conn, devices)


def _spend_invite(conn: sqlite3.Connection, token_hash: bytes, now_ms: int) -> None:
    """Use up one use of an invite; ``InviteRequired`` if it is unknown, expired or used up."""
    spent = conn.execute(
        "UPDATE invites SET uses_left = uses_left - 1"
        " WHERE token_hash = ? AND uses_left > 0 AND expires_at_ms > ?",
        (token_hash, now_ms),
    ).rowcount
    if not spent:
        raise InviteRequired("the invite is unknown, expired or used up")


def get_account(conn: sqlite3.Connection, handle: str) -> AccountRow | None:
    row = conn.execute(
        "SELECT handle, account_key, list_version, device_list, created_at_ms, disabled"
        " FROM accounts WHERE handle = ?",
        (handle,),
    ).fetchone()
    if row is None:
        return None
    handle, account_key, list_version, device_list, created_at_ms, disabled = row
    return AccountRow(handle, account_key, list_version, device_list, created_at_ms, bool(disabled))


def list_accounts(conn: sqlite3.Connection) -> list[tuple[AccountRow, int]]:
    rows = conn.execute(
        "SELECT a.handle, a.account_key, a.list_version, a.device_list, a.created_at_ms, a.disabled,"
        " (SELECT COUNT(*) FROM devices d WHERE d.handle = a.handle)"
        " FROM accounts a ORDER BY a.handle"
    ).fetchall()
    return [
        (AccountRow(h, key, version, dl, created, bool(disabled)), count)
        for h, key, version, dl, created, disabled, count in rows
    ]


def set_disabled(conn: sqlite3.Connection, handle: str, disabled: bool) -> None:
    changed = conn.execute("UPDATE accounts SET disabled = ? WHERE handle = ?", (disabled, handle)).rowcount
    if not changed:
        raise UnknownHandle(f"no account {handle!r}")


# --- device lists ------------------------------------------------------------------------------
def replace_devices(
    conn: sqlite3.Connection,
    handle: str,
    expected_version: int,
    new_version: int,
    device_list: bytes,
    devices: list[DeviceRow],
    now_ms: int,
) -> list[bytes]:
    return _swap_list(conn, handle, expected_version, None, new_version, device_list, devices, now_ms)


def recover_account(
    conn: sqlite3.Connection,
    handle: str,
    expected_version: int,
    account_key: bytes,
    new_version: int,
    device_list: bytes,
    devices: list[DeviceRow],
    now_ms: int,
) -> list[bytes]:
    return _swap_list(conn, handle, expected_version, account_key, new_version, device_list, devices, now_ms)


def _swap_list(
    conn: sqlite3.Connection,
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
    swapped = conn.execute(
        "UPDATE accounts SET list_version = ?, device_list = ?, account_key = COALESCE(?, account_key)"
        " WHERE handle = ? AND list_version = ?",
        (new_version, device_list, account_key, handle, expected_version),
    ).rowcount
    if not swapped:
        row = conn.execute("SELECT list_version FROM accounts WHERE handle = ?", (handle,)).fetchone()
        if row is None:
            raise UnknownHandle(f"no account {handle!r}")
        raise StaleDeviceList(f"device list is at version {row[0]}, not {expected_version}")
    _record_list(conn, handle, new_version, device_list, now_ms)
    cursor = conn.execute("SELECT device_id FROM devices WHERE handle = ?", (handle,))
    current = {device_id for (device_id,) in cursor}
    removed = sorted(current - {d.device_id for d in devices})
    _drop_devices(conn, removed)
    conn.executemany(
        "INSERT INTO removed_devices (device_id, handle, version, removed_at_ms) VALUES (?, ?, ?, ?)",
        [(device_id, handle, new_version, now_ms) for device_id in removed],
    )
    conn.executemany(
        "UPDATE devices SET sign_key = ? WHERE device_id = ?",
        [(d.sign_key, d.device_id) for d in devices if d.device_id in current],
    )
    _insert_devices(conn, [d for d in devices if d.device_id not in current])
    return removed


def _record_list(
    conn: sqlite3.Connection, handle: str, version: int, device_list: bytes, now_ms: int
) -> None:
    conn.execute(
        "INSERT INTO device_list_history (handle, version, device_list, published_at_ms) VALUES (?, ?, ?, ?)",
        (handle, version, device_list, now_ms),
    )


def _insert_devices(conn: sqlite3.Connection, devices: Sequence[DeviceRow]) -> None:
    """Add devices (never seen yet); one listed again after its removal is no longer removed."""
    conn.executemany("DELETE FROM removed_devices WHERE device_id = ?", [(d.device_id,) for d in devices])
    conn.executemany(
        "INSERT INTO devices (device_id, handle, sign_key) VALUES (?, ?, ?)",
        [(d.device_id, d.handle, d.sign_key) for d in devices],
    )


def _drop_devices(conn: sqlite3.Connection, device_ids: list[bytes]) -> None:
    """Delete devices with their queues, and the bodies no other device still holds."""
    for chunk in chunks(device_ids):
        gone = conn.execute(
            with_marks("DELETE FROM queue WHERE device_id IN ({marks}) RETURNING message_id", len(chunk)),
            chunk,
        ).fetchall()
        delete_orphans(conn, {message_id for (message_id,) in gone})
    conn.executemany("DELETE FROM queue_depths WHERE device_id = ?", [(d,) for d in device_ids])
    conn.executemany("DELETE FROM devices WHERE device_id = ?", [(d,) for d in device_ids])


def list_history(conn: sqlite3.Connection, handle: str, after_version: int, limit: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT device_list FROM device_list_history WHERE handle = ? AND version > ?"
        " ORDER BY version LIMIT ?",
        (handle, after_version, max(limit, 0)),
    )
    return [device_list for (device_list,) in rows]


def removed_device(conn: sqlite3.Connection, device_id: bytes) -> RemovedDevice | None:
    row = conn.execute(
        "SELECT device_id, handle, version, removed_at_ms FROM removed_devices WHERE device_id = ?",
        (device_id,),
    ).fetchone()
    return None if row is None else RemovedDevice(*row)


# --- devices -----------------------------------------------------------------------------------
def get_device(conn: sqlite3.Connection, device_id: bytes) -> DeviceRow | None:
    row = conn.execute(
        "SELECT d.device_id, d.handle, d.sign_key, a.disabled, a.list_version FROM devices d"
        " JOIN accounts a ON a.handle = d.handle WHERE d.device_id = ?",
        (device_id,),
    ).fetchone()
    if row is None:
        return None
    return DeviceRow(row[0], row[1], row[2], account_disabled=bool(row[3]), list_version=row[4])


def devices_of(conn: sqlite3.Connection, handles: list[str]) -> dict[str, AccountDevices]:
    found: dict[str, AccountDevices] = {}
    for chunk in chunks(list(dict.fromkeys(handles))):
        rows = conn.execute(
            with_marks(
                "SELECT a.handle, a.list_version, d.device_id FROM accounts AS a"
                " LEFT JOIN devices AS d ON d.handle = a.handle"
                " WHERE a.handle IN ({marks})",
                len(chunk),
            ),
            chunk,
        )
        for handle, version, device_id in rows:
            ids = found.setdefault(handle, AccountDevices(version, set())).device_ids
            if device_id is not None:
                ids.add(device_id)
    return found


def touch_devices(conn: sqlite3.Connection, seen: dict[bytes, int]) -> None:
    # Writes only rows that move forward: a device seen on several nodes is touched by each.
    conn.executemany(
        "UPDATE devices SET last_seen_ms = ?"
        " WHERE device_id = ? AND (last_seen_ms IS NULL OR last_seen_ms < ?)",
        [(at_ms, device_id, at_ms) for device_id, at_ms in seen.items()],
    )


def devices_seen(conn: sqlite3.Connection, handle: str) -> dict[bytes, int | None]:
    rows = conn.execute("SELECT device_id, last_seen_ms FROM devices WHERE handle = ?", (handle,))
    return {device_id: last_seen for device_id, last_seen in rows}


# --- invites -----------------------------------------------------------------------------------
def create_invite(conn: sqlite3.Connection, invite: InviteRow) -> None:
    conn.execute(
        "INSERT INTO invites (token_hash, created_at_ms, expires_at_ms, uses_left, note)"
        " VALUES (?, ?, ?, ?, ?)",
        (invite.token_hash, invite.created_at_ms, invite.expires_at_ms, invite.uses_left, invite.note),
    )


def list_invites(conn: sqlite3.Connection) -> list[InviteRow]:
    rows = conn.execute(
        "SELECT token_hash, created_at_ms, expires_at_ms, uses_left, note FROM invites"
        " ORDER BY created_at_ms DESC, token_hash"
    )
    return [InviteRow(*row) for row in rows]


def revoke_invite(conn: sqlite3.Connection, token_hash: bytes) -> bool:
    deleted: int = conn.execute("DELETE FROM invites WHERE token_hash = ?", (token_hash,)).rowcount
    return deleted > 0
