"""The values the client hands to its callers: sent, received and stored messages.

They are plain frozen dataclasses with ids as lowercase hex and times as Unix milliseconds, so a
front end can print or serialise them without knowing anything about the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mailslot.protocol.message import Content

Direction = Literal["in", "out"]


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
