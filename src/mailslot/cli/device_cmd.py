"""``mailslot device link|approve|list``: adding devices to an account and listing them."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import segno

from mailslot.cli.account_cmd import CA_HELP
from mailslot.client import Client
from mailslot.protocol.device_list import DeviceList, DeviceRecord
from mailslot.protocol.identity import MAX_DEVICE_NAME, check_device_name, check_handle

if TYPE_CHECKING:
    from mailslot.cli.main import Settings


def _default_name() -> str:
    name = socket.gethostname().split(".")[0][:MAX_DEVICE_NAME]
    return name if name and name.isprintable() else "device"


@click.group("device")
def device() -> None:
    """Link, approve and list this account's devices."""


def show_code(code: str) -> None:
    """The code alone on stdout's first line (flushed), and as a QR code on a terminal's stderr."""
    click.echo(code)
    sys.stdout.flush()
    if sys.stderr.isatty():
        segno.make(code, error="m").terminal(out=sys.stderr, compact=True)
    click.echo(
        f"Waiting for approval. On a device of the account, run:\n  mailslot device approve '{code}'",
        err=True,
    )


@device.command("link")
@click.option("--server", required=True, metavar="URL", help="The account's server, https://host[:port].")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help=CA_HELP)
@click.option("--name", default=_default_name, show_default="host name", help="A name for this device.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds to wait for an approval.",
)
@click.pass_obj
def link(settings: Settings, server: str, ca: Path | None, name: str, timeout: float) -> None:
    """Make this a new device of an existing account.

    Prints a one-time link code (first line of standard output; a QR code on a terminal), then
    waits until an existing device runs `mailslot device approve CODE`.
    """
    check_device_name(name)
    passphrase = settings.passphrase(new=True)

    async def run() -> Client:
        pending = await Client.start_link(
            settings.home, server, passphrase=passphrase, ca=ca, device_name=name
        )
        async with pending:
            show_code(pending.code)
            client = await pending.wait(timeout)
        await client.close()
        return client

    client = asyncio.run(run())
    settings.output.result(
        {"handle": client.handle, "device_id": client.device_id, "server": client.server},
        f"linked: this device ({client.device_id}) now belongs to {client.handle}",
    )


@device.command("approve")
@click.argument("code")
@click.pass_obj
def approve(settings: Settings, code: str) -> None:
    """Add the new device that shows CODE to this account."""
    passphrase = settings.passphrase()

    async def run() -> tuple[str, DeviceRecord]:
        async with settings.open_client(passphrase) as client:
            return client.handle, await client.approve(code)

    handle, record = asyncio.run(run())
    settings.output.result(
        {"handle": handle, "device_id": record.device_id.hex(), "name": record.name},
        f"approved device {record.name!r} ({record.device_id.hex()}) for {handle}",
    )


@device.command("list")
@click.argument("handle", required=False)
@click.pass_obj
def list_devices(settings: Settings, handle: str | None) -> None:
    """Show the verified device list of HANDLE (default: your own account)."""
    if handle is not None:
        check_handle(handle)
    passphrase = settings.passphrase()

    async def run() -> tuple[DeviceList, str]:
        async with settings.open_client(passphrase) as client:
            return await client.device_list(handle), client.device_id

    device_list, this_device = asyncio.run(run())
    settings.output.device_list(device_list, this_device)
