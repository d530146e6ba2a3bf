"""``mailslot account register|recover``: create an account, or take one back with its recovery code.

Both print the account's recovery code exactly once (text: in a box that says so; JSON: the
``recovery_code`` field). mailslot never stores it; losing it and every device loses the account.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailslot.client import Client
from mailslot.errors import InputError
from mailslot.protocol.identity import check_device_name, check_handle
from mailslot.protocol.recovery import parse_recovery_code

if TYPE_CHECKING:
    from mailslot.cli.main import Settings

CA_HELP = "CA certificate (PEM) that signs the server's certificate, for a self-signed server."
INVITE_ENV = "MAILSLOT_INVITE"


@click.group("account")
def account() -> None:
    """Create your account, or recover it with its recovery code."""


@account.command("register")
@click.argument("handle")
@click.option("--server", required=True, metavar="URL", help="The server, https://host[:port].")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help=CA_HELP)
@click.option("--name", default="primary", show_default=True, help="A name for this device.")
@click.option(
    "--invite",
    metavar="TOKEN",
    envvar=INVITE_ENV,
    help=f"The invite token the server's operator gave you (servers that require one). Env: {INVITE_ENV}.",
)
@click.pass_obj
def register(
    settings: Settings, handle: str, server: str, ca: Path | None, name: str, invite: str | None
) -> None:
    """Register HANDLE on the server, with this as its first device.

    The keys are made here and never leave this device, except the account key, which is
    handed (encrypted) only to devices you approve later with `mailslot device approve`.
    Prints the account's recovery code once: write it down.
    """
    check_handle(handle)
    check_device_name(name)
    passphrase = settings.passphrase(new=True)

    async def run() -> Client:
        client = await Client.register(
            settings.home,
            server,
            handle,
            passphrase=passphrase,
            ca=ca,
            device_name=name,
            invite=invite or None,
        )
        await client.close()
        return client

    client = asyncio.run(run())
    registered = f"registered {client.handle} on {client.server} (device {client.device_id})"
    _show_new_device(settings, client, registered)


def _show_new_device(settings: Settings, client: Client, text: str) -> None:
    """The result of a registration or a recovery, then its recovery code, shown once."""
    settings.output.result(
        {
            "handle": client.handle,
            "device_id": client.device_id,
            "server": client.server,
            "recovery_code": client.recovery_code,
        },
        text,
    )
    if client.recovery_code is not None:
        settings.output.recovery_code(client.recovery_code)


def read_code(code: str | None) -> str:
    """The recovery code: ``--code``, else a hidden prompt on a terminal, else one line of stdin.

    Checked here (letters and length) so a typo fails before anything is sent.
    """
    if code is None:
        if sys.stdin.isatty():
            code = click.prompt("Recovery code", hide_input=True, err=True)
        else:
            code = sys.stdin.readline()
    text = (code or "").strip()
    if not text:
        raise InputError("no recovery code: give --code CODE, or type it when asked")
    parse_recovery_code(text)
    return text


@account.command("recover")
@click.argument("handle")
@click.option("--server", required=True, metavar="URL", help="The account's server, https://host[:port].")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help=CA_HELP)
@click.option("--name", default="primary", show_default=True, help="A name for this (new) device.")
@click.option(
    "--code",
    metavar="CODE",
    help="The recovery code (default: asked for, hidden, on a terminal; else one line of standard input).",
)
@click.pass_obj
def recover(
    settings: Settings, handle: str, server: str, ca: Path | None, name: str, code: str | None
) -> None:
    """Take HANDLE back with its recovery code, when every device of it is lost.

    This becomes the account's only device, under a new account key: every other device is
    removed, and contacts see a new key for HANDLE that they must trust or verify again. A new
    recovery code replaces the old one and is printed once: write it down.
    """
    check_handle(handle)
    check_device_name(name)
    text = read_code(code)
    passphrase = settings.passphrase(new=True)

    async def run() -> Client:
        client = await Client.recover(
            settings.home, server, handle, text, passphrase=passphrase, ca=ca, device_name=name
        )
        await client.close()
        return client

    client = asyncio.run(run())
    _show_new_device(
        settings,
        client,
        f"recovered {client.handle} on {client.server}: this device ({client.device_id}) is now its "
        "only device, under a new account key.\nYour contacts will see that key change and must "
        f"trust or verify it again (`mailslot identity show {client.handle}` on their side).",
    )
