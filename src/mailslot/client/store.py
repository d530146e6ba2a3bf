"""The device's local database: pinned contacts, verified device lists, history, seen ids.

Plain SQLite (stdlib ``sqlite3``) in WAL mode, one file per device home, mode 0600. The rules
that guard against a lying server live here, next to the data they protect:

* pinning: each contact row holds the account key pinned for a handle and its trust level
  (``trust.py`` decides which); ``pin`` never replaces a key (a different one raises
  ``KeyChanged`` naming the handle and both fingerprints); only ``repin``, called on an explicit
  decision (``identity trust``/``verify`` or the ``always`` policy), does, and it drops the
  stored device list of the old key in the same transaction;
* no rollback: a device list with a lower version than the stored one is refused, and so is a
  different list under the same version (a server showing two faces);
* de-duplication: a received message id is recorded together with its history row, in one
  transaction, so a redelivered message is recognised even after a crash;
* device alerts: the last own list whose every step was checked (``alerts.py``) advances
  together with the alerts of that step, in one transaction;
* attachments: each message's attachment references (blob address, key, hash, sizes, name,
  media type, thumbnail) are stored with it, in the same transaction, so that a file can be
  fetched again while its blob lives; the key is as private as the message text beside it.

The schema version is ``PRAGMA user_version``, raised one numbered migration at a time
(``_MIGRATIONS``, each in its own transaction); a file written by a newer mailslot is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailslot.client.models import (
    TRUST_LEVELS,
    Attachment,
    Contact,
    DeviceAlert,
    HistoryEntry,
    TrustLevel,
)
from mailslot.errors import ConfigError, InputError, KeyChanged, SchemaTooNew, VerificationError
from mailslot.protocol.attachment import AttachmentRef
from mailslot.protocol.safety import fingerprint

_SCHEMA_1 = """
CREATE TABLE contacts (
    handle TEXT PRIMARY KEY,
    account_key BLOB NOT NULL,
    first_seen_ms INTEGER NOT NULL
);
CREATE TABLE device_lists (
    handle TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    signed BLOB NOT NULL
);
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    sender_device TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    accepted_at_ms INTEGER NOT NULL,
    text TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    stored_at_ms INTEGER NOT NULL
);
CREATE TABLE message_members (
    message_id TEXT NOT NULL REFERENCES messages(message_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    handle TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX message_members_handle ON message_members (handle, message_id);
CREATE TABLE seen_ids (
    message_id TEXT PRIMARY KEY,
    seen_at_ms INTEGER NOT NULL
);
"""

_SCHEMA_2 = """
CREATE TABLE attachments (
    message_id TEXT NOT NULL REFERENCES messages(message_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    blob_id BLOB NOT NULL,
    blob_key BLOB NOT NULL,
    sha256 BLOB NOT NULL,
    blob_size INTEGER NOT NULL,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    thumbnail BLOB NOT NULL,
    flags INTEGER NOT NULL,
    saved_path TEXT,
    error TEXT,
    PRIMARY KEY (message_id, position)
);
"""

# Contacts pinned before trust levels existed were pinned on first use: trusted-unverified.
_SCHEMA_3 = """
ALTER TABLE contacts ADD COLUMN trust TEXT NOT NULL DEFAULT 'trusted-unverified'
    CHECK (trust IN ('untrusted', 'trusted-unverified', 'trusted-verified', 'blocked'))
"""

# Device alerts (``alerts.py``); the last own list whose every step was checked (kept apart
# from ``device_lists``, which any refresh advances); and, once the server said so, that this
# device was removed (a single row).
_SCHEMA_4 = """
CREATE TABLE device_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    handle TEXT NOT NULL,
    version INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('added', 'removed', 'renamed', 'rekeyed', 'recovered')),
    device_id TEXT NOT NULL,
    device_name TEXT NOT NULL,
    approver_id TEXT NOT NULL,
    approver_name TEXT NOT NULL,
    attack INTEGER NOT NULL,
    own INTEGER NOT NULL,
    seen INTEGER NOT NULL,
    UNIQUE (handle, version, kind, device_id, own)
);
CREATE TABLE list_checkpoints (
    handle TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    signed BLOB NOT NULL
);
CREATE TABLE removal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    message TEXT NOT NULL,
    details TEXT NOT NULL
)
"""

# Migration n brings a database from schema n - 1 to n; version 0 is an empty file.
_MIGRATIONS: dict[int, str] = {1: _SCHEMA_1, 2: _SCHEMA_2, 3: _SCHEMA_3, 4: _SCHEMA_4}
SCHEMA_VERSION = max(_MIGRATIONS)

_SELECT_ATTACHMENTS = (
    "SELECT position, blob_id, blob_key, sha256, blob_size, size, name, media_type, thumbnail, "
    "flags, saved_path, error FROM attachments WHERE message_id = ? ORDER BY position"
)
_INSERT_ATTACHMENT = (
    "INSERT INTO attachments (message_id, position, blob_id, blob_key, sha256, blob_size, size, "
    "name, media_type, thumbnail, flags, saved_path, error) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment reference as stored with its message, and where it was saved."""

    message_id: str
    position: int
    ref: AttachmentRef
    path: Path | None = None
    error: str | None = None

    @property
    def id(self) -> str:
        return attachment_id(self.message_id, self.position)

    def public(self) -> Attachment:
        """What callers see: everything but the key and the hash."""
        return Attachment(
            id=self.id,
            name=self.ref.name,
            size=self.ref.size,
            media_type=self.ref.media_type,
            blob_id=self.ref.blob_id.hex(),
            has_thumbnail=bool(self.ref.thumbnail),
            path=self.path,
            error=self.error,
        )


def attachment_id(message_id: str, position: int) -> str:
    """``<message id>-<position>``: how callers name one attachment of one message."""
    return f"{message_id}-{position}"


def parse_attachment_id(text: str) -> tuple[str, int]:
    """The message id and position in an attachment id; ``InputError`` if malformed."""
    message_id, dash, position = text.strip().lower().partition("-")
    valid_id = len(message_id) == 32 and all(c in "0123456789abcdef" for c in message_id)
    if not (dash and valid_id and position.isdecimal() and len(position) <= 3):
        raise InputError(f"invalid attachment id {text!r}: expected <message id>-<number>")
    return message_id, int(position)


class Store:
    """One device's SQLite database; every public method is one transaction."""

    FILENAME = "store.sqlite3"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, home: Path) -> Store:
        """Open (creating if needed) the store in ``home`` and bring its schema up to date."""
        path = home / cls.FILENAME
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                store = cls(conn)
                store._migrate()
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the local database {path}: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot open the local database {path}: {exc.strerror}") from exc
        return store

    def close(self) -> None:
        self._conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the local database has schema {version}; this mailslot knows {SCHEMA_VERSION}"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx() as conn:
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")

    # --- contacts ----------------------------------------------------------------------------

    def pinned_key(self, handle: str) -> bytes | None:
        row = self._conn.execute("SELECT account_key FROM contacts WHERE handle = ?", (handle,)).fetchone()
        return bytes(row[0]) if row else None

    def contact(self, handle: str) -> Contact | None:
        """The pinned key and trust level of ``handle``, if this device has seen it."""
        row = self._conn.execute(_SELECT_CONTACTS + " WHERE handle = ?", (handle,)).fetchone()
        return _contact(row) if row else None

    def contacts(self) -> list[Contact]:
        """Every contact, by handle."""
        return [_contact(row) for row in self._conn.execute(_SELECT_CONTACTS + " ORDER BY handle")]

    def pin(
        self, handle: str, account_key: bytes, now_ms: int, trust: TrustLevel = "trusted-unverified"
    ) -> None:
        """Pin ``account_key`` for ``handle`` at ``trust`` on first sight; a pinned key is kept
        as it is (trust too), and a different one raises ``KeyChanged``."""
        _check_level(trust)
        with self._tx() as conn:
            row = conn.execute("SELECT account_key FROM contacts WHERE handle = ?", (handle,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO contacts (handle, account_key, first_seen_ms, trust) VALUES (?, ?, ?, ?)",
                    (handle, account_key, now_ms, trust),
                )
            elif bytes(row[0]) != account_key:
                raise key_changed(handle, bytes(row[0]), account_key)

    def repin(self, handle: str, account_key: bytes, now_ms: int, trust: TrustLevel) -> None:
        """Pin ``account_key`` at ``trust`` whatever was pinned before (an explicit decision).

        A new key also drops the stored device list, which the old key signed: the new
        account's list starts its own version sequence.
        """
        _check_level(trust)
        with self._tx() as conn:
            row = conn.execute("SELECT account_key FROM contacts WHERE handle = ?", (handle,)).fetchone()
            if row is not None and bytes(row[0]) == account_key:
                conn.execute("UPDATE contacts SET trust = ? WHERE handle = ?", (trust, handle))
                return
            conn.execute("DELETE FROM device_lists WHERE handle = ?", (handle,))
            conn.execute(
                "INSERT INTO contacts (handle, account_key, first_seen_ms, trust) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (handle) DO UPDATE SET account_key = excluded.account_key, "
                "first_seen_ms = excluded.first_seen_ms, trust = excluded.trust",
                (handle, account_key, now_ms, trust),
            )

    # --- device lists ------------------------------------------------------------------------

    def device_list(self, handle: str) -> tuple[int, bytes] | None:
        """The stored (version, signed list bytes) of ``handle``, if any."""
        row = self._conn.execute(
            "SELECT version, signed FROM device_lists WHERE handle = ?", (handle,)
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def save_device_list(self, handle: str, version: int, signed: bytes) -> None:
        """Store a verified list; refuse a lower version, or other bytes under the same one."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT version, signed FROM device_lists WHERE handle = ?", (handle,)
            ).fetchone()
            if row is not None:
                _check_not_rollback(handle, int(row[0]), bytes(row[1]), version, signed)
            conn.execute(
                "INSERT INTO device_lists (handle, version, signed) VALUES (?, ?, ?) "
                "ON CONFLICT (handle) DO UPDATE SET version = excluded.version, "
                "signed = excluded.signed",
                (handle, version, signed),
            )

    # --- history and de-duplication ----------------------------------------------------------

    def is_seen(self, message_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM seen_ids WHERE message_id = ?", (message_id,)).fetchone()
        return row is not None

    def add_message(self, entry: HistoryEntry, attachments: Sequence[StoredAttachment] = ()) -> bool:
        """Record a message (with its attachment references) in history and as seen; False
        (and no change) if already seen."""
        with self._tx() as conn:
            seen = conn.execute("SELECT 1 FROM seen_ids WHERE message_id = ?", (entry.id,)).fetchone()
            if seen is not None:
                return False
            conn.execute(
                "INSERT INTO seen_ids (message_id, seen_at_ms) VALUES (?, ?)",
                (entry.id, entry.stored_at_ms),
            )
            _insert_message(conn, entry)
            for stored in attachments:
                _insert_attachment(conn, stored)
        return True

    def attachment(self, attachment_id: str) -> StoredAttachment | None:
        """The stored attachment ``<message id>-<position>``, if this device has it."""
        message_id, position = parse_attachment_id(attachment_id)
        found = [a for a in self.attachments(message_id) if a.position == position]
        return found[0] if found else None

    def attachments(self, message_id: str) -> list[StoredAttachment]:
        """The attachment references stored with a message, in message order."""
        rows = self._conn.execute(_SELECT_ATTACHMENTS, (message_id,)).fetchall()
        return [_stored_attachment(message_id, row) for row in rows]

    def set_attachment_result(self, attachment_id: str, path: Path | None, error: str | None) -> None:
        """Record where an attachment was saved, or why its download failed."""
        message_id, position = parse_attachment_id(attachment_id)
        with self._tx() as conn:
            conn.execute(
                "UPDATE attachments SET saved_path = ?, error = ? WHERE message_id = ? AND position = ?",
                (str(path) if path is not None else None, error, message_id, position),
            )

    def history(self, handle: str | None = None) -> list[HistoryEntry]:
        """Messages oldest first; with ``handle``, only conversations that include it."""
        query = "SELECT * FROM messages"
        args: tuple[str, ...] = ()
        if handle is not None:
            query += " WHERE message_id IN (SELECT message_id FROM message_members WHERE handle = ?)"
            args = (handle,)
        query += " ORDER BY sent_at_ms, accepted_at_ms, stored_at_ms, message_id"
        rows = self._conn.execute(query, args).fetchall()
        return [self._entry(row) for row in rows]

    def _entry(self, row: tuple[object, ...]) -> HistoryEntry:
        message_id, sender, device, sent, accepted, text, direction, stored = row
        members = self._conn.execute(
            "SELECT handle FROM message_members WHERE message_id = ? ORDER BY position",
            (message_id,),
        ).fetchall()
        return HistoryEntry(
            id=str(message_id),
            members=tuple(str(m[0]) for m in members),
            sender=str(sender),
            sender_device=str(device),
            sent_at_ms=int(str(sent)),
            accepted_at_ms=int(str(accepted)),
            text=str(text),
            direction="out" if direction == "out" else "in",
            stored_at_ms=int(str(stored)),
            attachments=tuple(a.public() for a in self.attachments(str(message_id))),
        )


    # --- device alerts, the checked own list, removal --------------------------------------

    def checkpoint(self, handle: str) -> tuple[int, bytes] | None:
        """The (version, signed bytes) of the last list of ``handle`` whose steps were checked."""
        row = self._conn.execute(
            "SELECT version, signed FROM list_checkpoints WHERE handle = ?", (handle,)
        ).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def record_step(
        self, handle: str, version: int, signed: bytes, alerts: Sequence[DeviceAlert] = ()
    ) -> list[DeviceAlert]:
        """Advance the checkpoint of ``handle`` to ``version`` and record the alerts of that
        step, in one transaction (so a crash neither loses nor repeats them); returns the
        alerts with their ids. A checkpoint never moves back."""
        with self._tx() as conn:
            row = conn.execute("SELECT version FROM list_checkpoints WHERE handle = ?", (handle,)).fetchone()
            if row is not None and int(row[0]) >= version:
                return []
            conn.execute(
                "INSERT INTO list_checkpoints (handle, version, signed) VALUES (?, ?, ?) "
                "ON CONFLICT (handle) DO UPDATE SET version = excluded.version, signed = excluded.signed",
                (handle, version, signed),
            )
            return _insert_alerts(conn, alerts)

    def add_alerts(self, alerts: Sequence[DeviceAlert]) -> list[DeviceAlert]:
        """Record alerts (contact notices); one already recorded is skipped. Returns the new ones."""
        with self._tx() as conn:
            return _insert_alerts(conn, alerts)

    def alerts(self, unseen_only: bool = True) -> list[DeviceAlert]:
        """Recorded alerts, oldest first."""
        query = _SELECT_ALERTS + (" WHERE seen = 0" if unseen_only else "") + " ORDER BY id"
        return [_alert(row) for row in self._conn.execute(query)]

    def mark_alerts_seen(self) -> int:
        """Mark every alert seen; returns how many were not."""
        with self._tx() as conn:
            return conn.execute("UPDATE device_alerts SET seen = 1 WHERE seen = 0").rowcount

    def removal(self) -> tuple[str, dict[str, Any]] | None:
        """The message and details of this device's removal, once recorded."""
        row = self._conn.execute("SELECT message, details FROM removal WHERE id = 1").fetchone()
        return (str(row[0]), json.loads(row[1])) if row else None

    def set_removal(self, message: str, details: dict[str, Any]) -> None:
        """Record that this device was removed (the best explanation found so far)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO removal (id, message, details) VALUES (1, ?, ?) ON CONFLICT (id) "
                "DO UPDATE SET message = excluded.message, details = excluded.details",
                (message, json.dumps(details, sort_keys=True)),
            )


_SELECT_CONTACTS = "SELECT handle, account_key, trust, first_seen_ms FROM contacts"
_SELECT_ALERTS = (
    "SELECT id, handle, version, at_ms, kind, device_id, device_name, approver_id, approver_name, "
    "attack, own, seen FROM device_alerts"
)
_INSERT_ALERT = (
    "INSERT OR IGNORE INTO device_alerts (handle, version, at_ms, kind, device_id, device_name, "
    "approver_id, approver_name, attack, own, seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert_alerts(conn: sqlite3.Connection, alerts: Sequence[DeviceAlert]) -> list[DeviceAlert]:
    added: list[DeviceAlert] = []
    for a in alerts:
        cursor = conn.execute(
            _INSERT_ALERT,
            (
                a.handle, a.version, a.at, a.kind, a.device_id, a.device_name, a.approver_id,
                a.approver_name, int(a.attack), int(a.own), int(a.seen),
            ),
        )
        if cursor.rowcount == 1 and cursor.lastrowid is not None:
            added.append(dataclasses.replace(a, id=cursor.lastrowid))
    return added


def _alert(row: tuple[Any, ...]) -> DeviceAlert:
    alert_id, handle, version, at, kind, device, name, approver, approver_name, attack, own, seen = row
    return DeviceAlert(
        int(alert_id), str(handle), int(version), int(at), kind, str(device), str(name),
        str(approver), str(approver_name), bool(attack), bool(own), bool(seen),
    )


def _contact(row: tuple[Any, ...]) -> Contact:
    handle, key, trust, first_seen = row
    return Contact(str(handle), bytes(key).hex(), fingerprint(bytes(key)), trust, int(first_seen))


def _check_level(trust: str) -> None:
    if trust not in TRUST_LEVELS:
        raise InputError(f"unknown trust level {trust!r}")


def key_changed(handle: str, pinned: bytes, served: bytes) -> KeyChanged:
    """The error that stops use of ``handle`` after its account key changed: names both keys."""
    return KeyChanged(
        f"the account key of {handle!r} changed from {fingerprint(pinned)} (pinned) to "
        f"{fingerprint(served)}; nothing is sent to {handle!r} until you compare safety codes "
        f"(mailslot identity show {handle}) and accept the new key (mailslot identity trust "
        f"{handle}, or identity verify {handle} CODE)",
        details={"handle": handle, "pinned": fingerprint(pinned), "served": fingerprint(served)},
    )


def _check_not_rollback(handle: str, stored_version: int, stored: bytes, version: int, signed: bytes) -> None:
    if version < stored_version:
        raise VerificationError(
            f"the server offered version {version} of {handle!r}'s device list, older than "
            f"version {stored_version} already seen; refusing the rollback"
        )
    if version == stored_version and signed != stored:
        raise VerificationError(
            f"the server offered a different device list for {handle!r} under the same "
            f"version {version}; refusing it"
        )


def _insert_message(conn: sqlite3.Connection, entry: HistoryEntry) -> None:
    conn.execute(
        "INSERT INTO messages (message_id, sender, sender_device, sent_at_ms, accepted_at_ms, "
        "text, direction, stored_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.id,
            entry.sender,
            entry.sender_device,
            entry.sent_at_ms,
            entry.accepted_at_ms,
            entry.text,
            entry.direction,
            entry.stored_at_ms,
        ),
    )
    conn.executemany(
        "INSERT INTO message_members (message_id, position, handle) VALUES (?, ?, ?)",
        [(entry.id, i, member) for i, member in enumerate(entry.members)],
    )


def _insert_attachment(conn: sqlite3.Connection, stored: StoredAttachment) -> None:
    ref = stored.ref
    conn.execute(
        _INSERT_ATTACHMENT,
        (
            stored.message_id,
            stored.position,
            ref.blob_id,
            ref.key,
            ref.sha256,
            ref.blob_size,
            ref.size,
            ref.name,
            ref.media_type,
            ref.thumbnail,
            ref.flags,
            str(stored.path) if stored.path is not None else None,
            stored.error,
        ),
    )


def _stored_attachment(message_id: str, row: tuple[Any, ...]) -> StoredAttachment:
    position, blob_id, key, digest, blob_size, size, name, media_type, thumbnail, flags, path, error = row
    ref = AttachmentRef(
        bytes(blob_id), bytes(key), bytes(digest), blob_size, size, name, media_type, bytes(thumbnail), flags
    )
    return StoredAttachment(message_id, position, ref, Path(path) if path is not None else None, error)
