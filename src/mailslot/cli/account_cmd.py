"""``mailslot account register``: create an account with this as its first device."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailslot.client import Client
from mailslot.protocol.identity import check_device_name, check_handle

if TYPE_CHECKING:
    from mailslot.cli.main import Settings

CA_HELP = "CA certificate (PEM) that signs the server's certificate, for a self-signed server."


@click.group("account")
def account() -> None:
    """Create and manage your account."""


@account.command("register")
@click.argument("handle")
@click.option("--server", required=True, metavar="URL", help="The server, https://host[:port].")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help=CA_HELP)
@click.option("--name", default="primary", show_default=True, help="A name for this device.")
@click.pass_obj
def register(settings: Settings, handle: str, server: str, ca: Path | None, name: str) -> None:
    """Register HANDLE on the server, with this as its first device.

    The keys are made here and never leave this device, except the account key, which is
    handed (encrypted) only to devices you approve later with `mailslot device approve`.
    """
    check_handle(handle)
    check_device_name(name)
    passphrase = settings.passphrase(new=True)

    async def run() -> Client:
        client = await Client.register(
            settings.home, server, handle, passphrase=passphrase, ca=ca, device_name=name
        )
        await client.close()
        return client

    client = asyncio.run(run())
    settings.output.result(
        {"handle": client.handle, "device_id": client.device_id, "server": client.server},
        f"registered {client.handle} on {client.server} (device {client.device_id})",
    )
