"""``mailslot send``, ``mailslot receive``, ``mailslot history``: messages."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailslot.cli.output import Output, attachment_json
from mailslot.client import Client, HistoryEntry, SentMessage
from mailslot.client.attachments import check_sources
from mailslot.client.models import DeviceAlert
from mailslot.errors import InputError, MailslotError
from mailslot.protocol.identity import check_handle

if TYPE_CHECKING:
    from mailslot.cli.main import Settings

DOWNLOADS_HELP = "Save attachments into DIR (default: the downloads folder in --home)."


def _read_text(message: str | None, *, attaching: bool) -> str:
    """The message from ``-m``, else all of standard input (one trailing newline dropped).

    With attachments and no ``-m`` there is no text (standard input is not read); without
    attachments the text must not be blank.
    """
    if message is not None:
        text = message
    elif attaching:
        text = ""
    else:
        if sys.stdin.isatty():
            click.echo("Type the message; end it with Ctrl-D on a line of its own.", err=True)
        text = sys.stdin.read().removesuffix("\n")
    if not attaching and not text.strip():
        raise InputError("the message is empty")
    return text


@click.command("send")
@click.argument("handles", nargs=-1, required=True, metavar="HANDLE...")
@click.option("-m", "--message", metavar="TEXT", help="The text (default: standard input, unless -a).")
@click.option(
    "-a",
    "--attach",
    "attachments",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Attach FILE (repeat for several files).",
)
@click.pass_obj
def send(
    settings: Settings, handles: tuple[str, ...], message: str | None, attachments: tuple[Path, ...]
) -> None:
    """Send a message to HANDLE (several handles make a group conversation).

    It is encrypted here for every device of every recipient, and for your own other devices.
    Attached files, and a text too long to travel inline, are encrypted here too and uploaded
    first; the server never sees their names, types or contents.
    """
    for handle in handles:
        check_handle(handle)
    check_sources(attachments)  # a missing or unreadable file stops here, before anything else
    passphrase = settings.passphrase()
    text = _read_text(message, attaching=bool(attachments))

    async def run() -> SentMessage:
        async with settings.open_client(passphrase) as client:
            with settings.output.transfers("upload") as progress:
                return await client.send(list(handles), text, list(attachments), progress=progress)

    sent = asyncio.run(run())
    attached = [attachment_json(a) for a in sent.attachments]
    settings.output.result({"id": sent.id, "devices": sent.devices, "attachments": attached}, sent.id)


@click.command("receive")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="S",
    help="After the queue is drained, keep receiving new mail for S seconds (default: stop).",
)
@click.option(
    "--downloads", type=click.Path(file_okay=False, path_type=Path), metavar="DIR", help=DOWNLOADS_HELP
)
@click.option(
    "--no-download",
    is_flag=True,
    help="List attachments without downloading them (later: mailslot attachment get ID).",
)
@click.pass_obj
def receive(settings: Settings, timeout: float | None, downloads: Path | None, no_download: bool) -> None:
    """Fetch, verify and show new messages (they are then kept in the local history).

    Attachments are downloaded, checked and decrypted into the downloads folder, under
    sanitised names that never overwrite a file; a long text arrives as ordinary text.
    Changes to your account's devices, and to contacts' devices, are shown as they are found
    (an ATTACK is a change no device of your account approved).
    """
    passphrase = settings.passphrase()

    async def run() -> None:
        async with settings.open_client(passphrase) as client:
            alerts = AlertPrinter(client, settings.output)
            alerts.show_unseen()
            try:
                with settings.output.transfers("download") as progress:
                    async for message in client.receive(
                        timeout=timeout,
                        download=not no_download,
                        downloads=downloads,
                        progress=progress,
                        on_alert=alerts.show,
                    ):
                        settings.output.message(message)
                        alerts.show_unseen()
            except BaseException:
                with contextlib.suppress(MailslotError):  # the error on its way matters more
                    alerts.finish()
                raise
            alerts.finish()

    asyncio.run(run())


class AlertPrinter:
    """Prints each device alert once: those the client reports while receiving (``on_alert``)
    and those recorded on the way (a contact's list refreshed for a message) or earlier by a
    command that prints none (``send``); at the end every alert is marked seen."""

    def __init__(self, client: Client, output: Output) -> None:
        self._client = client
        self._output = output
        self._shown: set[int] = set()

    def show(self, alert: DeviceAlert) -> None:
        if alert.id not in self._shown:
            self._shown.add(alert.id)
            self._output.alert(alert)

    def show_unseen(self) -> None:
        for alert in self._client.alerts(unseen_only=True):
            self.show(alert)

    def finish(self) -> None:
        """Show what is left, then mark everything seen (shown here, so not shown again)."""
        self.show_unseen()
        self._client.mark_alerts_seen()


@click.command("history")
@click.argument("handle", required=False)
@click.pass_obj
def history(settings: Settings, handle: str | None) -> None:
    """Show stored messages, oldest first (only conversations with HANDLE, if given)."""
    if handle is not None:
        check_handle(handle)
    passphrase = settings.passphrase()

    async def run() -> list[HistoryEntry]:
        async with settings.open_client(passphrase) as client:
            return client.history(handle)

    settings.output.messages(asyncio.run(run()))
