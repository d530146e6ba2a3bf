"""Rendering command results as readable text (rich) or as JSON, one object per line.

Everything shown here that came from another person (message text, device names) is untrusted:
in text mode control characters are replaced before printing, so a message cannot move the
cursor, recolour the terminal or fake other output, and rich markup is never interpreted in it.
JSON output is plain ``json.dumps`` (which escapes control characters itself), flushed after
each line so a pipe sees each object at once.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailslot.client import HistoryEntry, ReceivedMessage
from mailslot.protocol.device_list import DeviceList

Mode = Literal["text", "json"]


def iso_time(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC, e.g. ``2025-01-31T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    return value


def message_text(message: ReceivedMessage | HistoryEntry) -> Text:
    others = [m for m in message.members if m != message.sender]
    line = Text()
    line.append(iso_time(message.sent_at_ms), style="dim")
    line.append("  ")
    line.append(message.sender, style="bold cyan")
    line.append(" → " + ", ".join(others), style="cyan")
    line.append("\n")
    line.append(safe(message.text))
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
