"""Rendering command results as readable text (rich) or as JSON, one object per line.

Everything shown here that came from another person (message text, device names) is untrusted:
in text mode control characters are replaced before printing, so a message cannot move the
cursor, recolour the terminal or fake other output, and rich markup is never interpreted in it.
JSON output is plain ``json.dumps`` (which escapes control characters itself), flushed after
each line so a pipe sees each object at once.

Transfers (attachment uploads and downloads) draw a progress bar per file on standard error,
only in text mode and only when standard error is a terminal: never in JSON mode or a pipe.
"""

from __future__ import annotations

import contextlib
import json
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from mailslot.client import Attachment, Contact, HistoryEntry, Identity, ReceivedMessage
from mailslot.client.attachments import ProgressFor
from mailslot.client.blobs import Progress as OnProgress
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.safety import format_code

Mode = Literal["text", "json"]


def iso_time(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC, e.g. ``2025-01-31T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def human_size(size: int) -> str:
    """``size`` bytes in binary units, e.g. ``1.5 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def safe(text: str) -> str:
    """``text`` with control and format characters (other than newline and tab) made visible."""
    return "".join(
        ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs") else "\ufffd" for ch in text
    )


class Output:
    """Where and how a command prints its results."""

    def __init__(self, mode: Mode) -> None:
        self.mode: Mode = mode
        self.console = Console(highlight=False, soft_wrap=True)

    def json(self, value: Any) -> None:
        click.echo(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        sys.stdout.flush()

    def text(self, value: str | Text | Table) -> None:
        self.console.print(value)
        self.console.file.flush()

    def result(self, value: dict[str, Any], text: str) -> None:
        """One result: ``value`` as JSON, or ``text`` (trusted, no markup) in text mode."""
        if self.mode == "json":
            self.json(value)
        else:
            self.text(Text(text))

    def message(self, message: ReceivedMessage | HistoryEntry) -> None:
        """One message, as a JSON line or as a readable block."""
        if self.mode == "json":
            self.json(message_json(message))
        else:
            self.text(message_text(message))

    def messages(self, messages: Sequence[HistoryEntry]) -> None:
        for message in messages:
            self.message(message)

    def attachment(self, attachment: Attachment) -> None:
        if self.mode == "json":
            self.json(attachment_json(attachment))
        else:
            self.text(attachment_text(attachment))

    @contextlib.contextmanager
    def transfers(self, verb: str) -> Iterator[ProgressFor | None]:
        """Progress bars for the transfers inside the block, if a person is watching."""
        console = Console(stderr=True)
        if self.mode == "json" or not console.is_terminal:
            yield None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True))
        with Progress(*columns, TransferSpeedColumn(), TimeRemainingColumn(), console=console) as bars:

            def for_file(name: str) -> OnProgress:
                task = bars.add_task(f"{verb} {escape(safe(name))}", total=None)
                return lambda done, total: bars.update(task, completed=done, total=total)

            yield for_file

    def identity(self, shown: Identity) -> None:
        """A contact's key, trust and safety code (the QR code is drawn by the command)."""
        if self.mode == "json":
            self.json(identity_json(shown))
        else:
            self.text(identity_text(shown))

    def contacts(self, contacts: Sequence[Contact]) -> None:
        if self.mode == "json":
            for contact in contacts:
                self.json(contact_json(contact))
        else:
            self.text(contact_table(contacts))

    def device_list(self, device_list: DeviceList, this_device: str) -> None:
        if self.mode == "json":
            self.json(device_list_json(device_list))
        else:
            self.text(device_table(device_list, this_device))


def message_json(message: ReceivedMessage | HistoryEntry) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": message.id,
        "from": message.sender,
        "from_device": message.sender_device,
        "to": list(message.members),
        "sent_at": iso_time(message.sent_at_ms),
        "accepted_at": iso_time(message.accepted_at_ms),
        "text": message.text,
    }
    if isinstance(message, HistoryEntry):
        value["direction"] = message.direction
    else:
        value["verified"] = message.verified
    value["attachments"] = [attachment_json(a) for a in message.attachments]
    return value


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": attachment.id,
        "name": attachment.name,
        "size": attachment.size,
        "media_type": attachment.media_type,
        "path": str(attachment.path) if attachment.path is not None else None,
    }
    if attachment.error is not None:
        value["error"] = attachment.error
    return value


def attachment_text(attachment: Attachment) -> Text:
    """One readable line: name, type, size, and where it is (or why not, or how to get it)."""
    line = Text("attachment ", style="dim")
    line.append(safe(attachment.name), style="bold")
    line.append(f"  {safe(attachment.media_type)}, {human_size(attachment.size)}  ", style="dim")
    if attachment.path is not None:
        line.append("saved to ")
        line.append(safe(str(attachment.path)), style="green")
    elif attachment.error is not None:
        line.append("not saved: " + safe(attachment.error), style="red")
    else:
        line.append(f"not downloaded: mailslot attachment get {attachment.id}", style="yellow")
        return line
    line.append(f"  id {attachment.id}", style="dim")
    return line


def message_text(message: ReceivedMessage | HistoryEntry) -> Text:
    others = [m for m in message.members if m != message.sender]
    line = Text()
    line.append(iso_time(message.sent_at_ms), style="dim")
    line.append("  ")
    line.append(message.sender, style="bold cyan")
    if isinstance(message, ReceivedMessage) and message.verified:
        line.append(" ✓", style="bold green")
    line.append(" → " + ", ".join(others), style="cyan")
    if message.text:
        line.append("\n")
        line.append(safe(message.text))
    for attachment in message.attachments:
        line.append("\n")
        line.append_text(attachment_text(attachment))
    return line


def device_list_json(device_list: DeviceList) -> dict[str, Any]:
    return {
        "handle": device_list.handle,
        "version": device_list.version,
        "account_key": device_list.account_key.hex(),
        "devices": [
            {
                "id": d.device_id.hex(),
                "name": d.name,
                "created_at": iso_time(d.created_at_ms),
            }
            for d in device_list.devices
        ],
    }


def device_table(device_list: DeviceList, this_device: str) -> Table:
    table = Table(title=f"{device_list.handle}: device list version {device_list.version}")
    for column in ("device id", "name", "added", ""):
        table.add_column(column)
    for d in device_list.devices:
        marker = "this device" if d.device_id.hex() == this_device else ""
        table.add_row(d.device_id.hex(), Text(safe(d.name)), iso_time(d.created_at_ms), marker)
    return table


def identity_json(shown: Identity) -> dict[str, Any]:
    value: dict[str, Any] = {
        "handle": shown.handle,
        "code": shown.code,
        "fingerprint": shown.fingerprint,
        "trust": shown.trust,
    }
    if shown.pinned_fingerprint is not None:
        value["pinned_fingerprint"] = shown.pinned_fingerprint
    return value


def identity_text(shown: Identity) -> Text:
    """The code in 12 groups of 5 (three lines of four), then what to do with it."""
    groups = format_code(shown.code).split(" ")
    text = Text(f"Safety code with {shown.handle}:\n", style="bold")
    for row in range(0, len(groups), 4):
        text.append("  " + "  ".join(groups[row : row + 4]) + "\n")
    text.append(f"{shown.handle}'s account key: {shown.fingerprint}   trust: {shown.trust}\n")
    if shown.pinned_fingerprint is not None:
        text.append(
            f"This key CHANGED: the key pinned before was {shown.pinned_fingerprint}.\n", style="bold red"
        )
    text.append(
        f"Compare the code with {shown.handle} in person or on a call; if it is the same, run "
        f"`mailslot identity verify {shown.handle} CODE`.",
        style="dim",
    )
    return text


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "handle": contact.handle,
        "fingerprint": contact.fingerprint,
        "trust": contact.trust,
        "first_seen": iso_time(contact.first_seen_ms),
    }


def contact_table(contacts: Sequence[Contact]) -> Table:
    table = Table(title="contacts")
    for column in ("handle", "account key", "trust", "first seen"):
        table.add_column(column)
    for c in contacts:
        style = {"trusted-verified": "green", "blocked": "red", "untrusted": "yellow"}.get(c.trust, "")
        table.add_row(c.handle, c.fingerprint, Text(c.trust, style=style), iso_time(c.first_seen_ms))
    return table
