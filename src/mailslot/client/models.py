"""The values the client hands to its callers: messages, contacts and their trust.

They are plain frozen dataclasses with ids as lowercase hex and times as Unix milliseconds, so a
front end can print or serialise them without knowing anything about the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailslot.protocol.message import Content

Direction = Literal["in", "out"]

# How far this device trusts a contact's pinned account key (see ``trust.py``).
TrustLevel = Literal["untrusted", "trusted-unverified", "trusted-verified", "blocked"]
TRUST_LEVELS: tuple[TrustLevel, ...] = ("untrusted", "trusted-unverified", "trusted-verified", "blocked")
# What to do with the first key seen for a handle, and with a changed one (``trust.py``).
TrustPolicy = Literal["on-first-use", "always", "never"]
TRUST_POLICIES: tuple[TrustPolicy, ...] = ("on-first-use", "always", "never")


@dataclass(frozen=True)
class Contact:
    """A handle this device has seen, the account key pinned for it, and how far it is trusted."""

    handle: str
    account_key: str  # 64 hex digits
    fingerprint: str  # short, for recognising the key (``protocol/safety.py``)
    trust: TrustLevel
    first_seen_ms: int


@dataclass(frozen=True)
class Identity:
    """What ``Client.identity`` shows about a contact: the key the server serves now.

    ``code`` is the 60-digit safety code for this account and that key; compare it with the
    contact's own view. ``trust`` is the pinned trust level when the served key is the pinned
    one, else ``untrusted`` (``pinned_fingerprint`` then names the key pinned before).
    """

    handle: str
    account_key: str
    fingerprint: str
    trust: TrustLevel
    code: str
    pinned_fingerprint: str | None = None

    @property
    def changed(self) -> bool:
        return self.pinned_fingerprint is not None


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message, as this device knows it.

    ``id`` (``<message id>-<position>``) names it to ``Client.fetch_attachment``. ``name``
    and ``media_type`` are the sender's words, untrusted; the file is saved under a sanitised
    name, and ``path`` says where (``None``: not saved on this device). ``error`` says why
    the last download failed, if it did (the file is then not saved, nothing partial kept).
    """

    id: str
    name: str
    size: int  # plaintext bytes
    media_type: str
    blob_id: str  # 64 hex digits: the blob's address on the server
    has_thumbnail: bool
    path: Path | None = None
    error: str | None = None


@dataclass(frozen=True)
class SentMessage:
    """A message the server accepted from this device."""

    id: str
    members: tuple[str, ...]
    sent_at_ms: int
    accepted_at_ms: int
    devices: int  # how many recipient devices the server queued it for
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class ReceivedMessage:
    """A message that opened and verified for this device."""

    id: str
    sender: str
    sender_device: str
    members: tuple[str, ...]
    sent_at_ms: int
    accepted_at_ms: int
    text: str  # a long text that travelled as a blob is here, downloaded and checked
    attachments: tuple[Attachment, ...] = ()
    verified: bool = False  # the sender's account key is trusted-verified (or it is this account)


@dataclass(frozen=True)
class HistoryEntry:
    """One message in the local history, sent (``out``) or received (``in``).

    A message sent by another device of this account arrives like any other, but is recorded
    as ``out``: the account sent it.
    """

    id: str
    members: tuple[str, ...]
    sender: str
    sender_device: str
    sent_at_ms: int
    accepted_at_ms: int
    text: str
    direction: Direction
    stored_at_ms: int
    attachments: tuple[Attachment, ...] = ()

    @classmethod
    def of(
        cls,
        content: Content,
        accepted_at_ms: int,
        direction: Direction,
        stored_at_ms: int,
        *,
        text: str | None = None,
        attachments: tuple[Attachment, ...] = (),
    ) -> HistoryEntry:
        """The history entry for a message's verified (or own) content; ``text`` replaces
        the inline text when a long text came as a blob."""
        return cls(
            id=content.message_id.hex(),
            members=content.members,
            sender=content.sender,
            sender_device=content.sender_device.hex(),
            sent_at_ms=content.sent_at_ms,
            accepted_at_ms=accepted_at_ms,
            text=content.text if text is None else text,
            direction=direction,
            stored_at_ms=stored_at_ms,
            attachments=attachments,
        )


# What a device alert is about (``alerts.py``): a device that came, went, was renamed or took
# a new encryption key, or the account key itself replaced by a recovery.
AlertKind = Literal["added", "removed", "renamed", "rekeyed", "recovered"]
ALERT_KINDS: tuple[AlertKind, ...] = ("added", "removed", "renamed", "rekeyed", "recovered")


@dataclass(frozen=True)
class DeviceAlert:
    """One change to a device list that this device noticed.

    ``own``: a change to this account's devices (checked step by step: ``attack`` when no
    device of the account approved it, or when someone else recovered the account), else a
    contact's notice (a device came or went; never an attack, contacts have no approvals to
    check). ``at`` is the list's ``issued_at_ms``; ids are hex. ``seen`` once the user was
    told (``Client.mark_alerts_seen``); changes this device made itself start seen.
    """

    id: int
    handle: str
    version: int
    at: int
    kind: AlertKind
    device_id: str
    device_name: str
    approver_id: str
    approver_name: str
    attack: bool
    own: bool
    seen: bool


@dataclass(frozen=True)
class DeviceInfo:
    """One device of this account as ``Client.devices`` shows it.

    ``last_seen`` is when the server last saw the device (Unix ms, to the minute; ``None``:
    never); ``enc_key_fingerprint`` a short name for its current encryption key, which
    changes with each key rotation.
    """

    device_id: str
    name: str
    created_at: int
    last_seen: int | None
    enc_key_fingerprint: str
    this_device: bool
