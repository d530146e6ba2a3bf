"""Rendering command results as readable text (rich) or as JSON, one object per line.

Everything shown here that came from another person (message text, device names) is untrusted:
in text mode control characters are replaced before printing, so a message cannot move the
cursor, recolour the terminal or fake other output, and rich markup is never interpreted in it.
JSON output is plain ``json.dumps`` (which escapes control characters itself), flushed after
each line so a pipe sees each object at once.

Device alerts are printed as one highlighted line each: red ``ATTACK`` for a change of this
account's device list that no device of the account approved, yellow ``ALERT`` for any other
change to this account, a dim ``NOTICE`` for a contact's devices. In JSON every object a stream
prints says what it is: ``"type": "message"`` or ``"type": "alert"``.

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
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.panel import Panel
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
from mailslot.client.models import DeviceAlert, DeviceInfo
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


def relative_time(ms: int | None, now_ms: int) -> str:
    """How long before ``now_ms`` the moment ``ms`` was, coarsely: ``just now``, ``5 min ago``,
    ``3 h ago``, ``12 days ago``; ``never`` for ``None``."""
    if ms is None:
        return "never"
    seconds = (now_ms - ms) // 1000
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


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

    def text(self, value: RenderableType) -> None:
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

    def own_devices(self, device_list: DeviceList, devices: Sequence[DeviceInfo], now_ms: int) -> None:
        """This account's devices with when each was last seen (relative in text, ms in JSON)."""
        if self.mode == "json":
            self.json(own_devices_json(device_list, devices))
        else:
            self.text(own_devices_table(device_list, devices, now_ms))

    def alert(self, alert: DeviceAlert) -> None:
        """One device alert: a JSON line, or one highlighted line."""
        if self.mode == "json":
            self.json(alert_json(alert))
        else:
            self.text(alert_text(alert))

    def recovery_code(self, code: str) -> None:
        """The recovery code in a box that says it is shown only once (text mode only: in JSON
        it is a field of the command's result)."""
        if self.mode == "text":
            self.console.print(recovery_panel(code), soft_wrap=False)  # wrapped inside the box
            self.console.file.flush()


def message_json(message: ReceivedMessage | HistoryEntry) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "message",
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


def own_devices_json(device_list: DeviceList, devices: Sequence[DeviceInfo]) -> dict[str, Any]:
    """The device list object of ``device_list_json``, each device with raw times in ms too."""
    return {
        "handle": device_list.handle,
        "version": device_list.version,
        "account_key": device_list.account_key.hex(),
        "devices": [
            {
                "id": d.device_id,
                "name": d.name,
                "created_at": iso_time(d.created_at),
                "created_at_ms": d.created_at,
                "last_seen_ms": d.last_seen,
                "enc_key_fingerprint": d.enc_key_fingerprint,
                "this_device": d.this_device,
            }
            for d in devices
        ],
    }


def own_devices_table(device_list: DeviceList, devices: Sequence[DeviceInfo], now_ms: int) -> Table:
    table = Table(title=f"{device_list.handle}: device list version {device_list.version}")
    for column in ("name", "device id", "added (UTC)", "last seen", ""):
        table.add_column(column, overflow="fold" if column == "device id" else "ellipsis")
    for d in devices:
        marker = Text("this device", style="bold green") if d.this_device else Text("")
        seen = relative_time(d.last_seen, now_ms)
        added = datetime.fromtimestamp(d.created_at / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(Text(safe(d.name)), d.device_id, added, seen, marker)
    return table


def alert_json(alert: DeviceAlert) -> dict[str, Any]:
    """Every field of the alert, times as Unix ms (``at``: when the list was issued)."""
    return {
        "type": "alert",
        "id": alert.id,
        "handle": alert.handle,
        "version": alert.version,
        "at": alert.at,
        "kind": alert.kind,
        "device_id": alert.device_id,
        "device_name": alert.device_name,
        "approver_id": alert.approver_id,
        "approver_name": alert.approver_name,
        "attack": alert.attack,
        "own": alert.own,
        "seen": alert.seen,
    }


def _own_change(alert: DeviceAlert) -> str:
    """What happened to this account's device list, in words (names made safe)."""
    device = f"'{safe(alert.device_name)}' ({alert.device_id})"
    match alert.kind:
        case "added":
            return f"device {device} was added to your account"
        case "removed":
            return f"device {device} was removed from your account"
        case "renamed":
            return f"device {alert.device_id} of your account was renamed to '{safe(alert.device_name)}'"
        case "rekeyed":
            return f"device {device} of your account got new keys"
        case "recovered":
            return f"your account was recovered with its recovery code: device {device} replaced all others"
        case _:
            return f"device {device} of your account: {alert.kind}"


def alert_text(alert: DeviceAlert) -> Text:
    """One line: ``ATTACK:`` (bold red) for an unapproved change to this account, ``ALERT:``
    (yellow) for an approved one, ``NOTICE:`` (dim blue) for a contact's devices."""
    if not alert.own:
        verb = "renamed to" if alert.kind == "renamed" else alert.kind
        line = f"NOTICE: {alert.handle}'s devices changed: {verb} '{safe(alert.device_name)}'"
        return Text(line, style="dim blue")
    when = iso_time(alert.at)
    if alert.attack:
        line = (
            f"ATTACK: {_own_change(alert)}, approved by no device of your account "
            f"(device list version {alert.version}, {when})"
        )
        return Text(line, style="bold red")
    by = f"'{safe(alert.approver_name)}'" if alert.approver_name else f"device {alert.approver_id}"
    line = f"ALERT: {_own_change(alert)} by {by} at {when} (device list version {alert.version})"
    return Text(line, style="bold yellow")


def recovery_panel(code: str) -> Panel:
    """The recovery code, boxed, with what it is for and that it is never shown again."""
    body = Text()
    body.append("Your recovery code:\n\n", style="bold")
    body.append(f"    {code}\n\n", style="bold yellow")
    body.append(
        "Write this down and keep it somewhere safe, away from your devices. It is shown only "
        "once: mailslot does not store it. If you lose every device, `mailslot account recover` "
        "with this code takes the account back."
    )
    return Panel(body, title="write this down; shown only once", border_style="yellow", expand=False)
