"""``mailslot send``, ``mailslot receive``, ``mailslot history``: messages."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from mailslot.client import Client, HistoryEntry, SentMessage
from mailslot.errors import InputError
from mailslot.protocol.identity import check_handle

if TYPE_CHECKING:
    from mailslot.cli.main import Settings


def _read_text(message: str | None) -> str:
    """The message from ``-m``, else all of standard input (one trailing newline dropped)."""
    if message is not None:
        text = message
    else:
        if sys.stdin.isatty():
            click.echo("Type the message; end it with Ctrl-D on a line of its own.", err=True)
        text = sys.stdin.read().removesuffix("\n")
    if not text.strip():
        raise InputError("the message is empty")
    return text


@click.command("send")
@click.argument("handles", nargs=-1, required=True, metavar="HANDLE...")
@click.option("-m", "--message", metavar="TEXT", help="The text (default: read standard input).")
@click.pass_obj
def send(settings: Settings, handles: tuple[str, ...], message: str | None) -> None:
    """Send a message to HANDLE (several handles make a group conversation).

    It is encrypted here for every device of every recipient, and for your own other devices.
    """
    for handle in handles:
        check_handle(handle)
    passphrase = settings.passphrase()
    text = _read_text(message)

    async def run() -> SentMessage:
        async with Client.open(settings.home, passphrase=passphrase) as client:
            return await client.send(list(handles), text)

    sent = asyncio.run(run())
    settings.output.result({"id": sent.id, "devices": sent.devices}, sent.id)


@click.command("receive")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="S",
    help="After the queue is drained, keep receiving new mail for S seconds (default: stop).",
)
@click.pass_obj
def receive(settings: Settings, timeout: float | None) -> None:
    """Fetch, verify and show new messages (they are then kept in the local history)."""
    passphrase = settings.passphrase()

    async def run() -> None:
        async with Client.open(settings.home, passphrase=passphrase) as client:
            async for message in client.receive(timeout=timeout):
                settings.output.message(message)

    asyncio.run(run())


@click.command("history")
@click.argument("handle", required=False)
@click.pass_obj
def history(settings: Settings, handle: str | None) -> None:
    """Show stored messages, oldest first (only conversations with HANDLE, if given)."""
    if handle is not None:
        check_handle(handle)
    passphrase = settings.passphrase()

    async def run() -> list[HistoryEntry]:
        async with Client.open(settings.home, passphrase=passphrase) as client:
            return client.history(handle)

    settings.output.messages(asyncio.run(run()))
