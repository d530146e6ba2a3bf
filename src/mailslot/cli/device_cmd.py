"""``mailslot device ...``: this account's devices.

``link`` and ``approve`` add a device; ``list`` shows them with when each was last seen;
``rename`` and ``remove`` change the signed device list (from any device of the account);
``alerts`` shows changes to the list that this device has not shown yet (an unapproved change is
an ATTACK); ``rotate-keys`` replaces this device's encryption key.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
import segno
from rich.text import Text

from mailslot.cli.account_cmd import CA_HELP
from mailslot.cli.output import safe
from mailslot.client import Client
from mailslot.client.models import DeviceAlert, DeviceInfo
from mailslot.errors import InputError, NotFoundError
from mailslot.protocol.device_list import DeviceList, DeviceRecord
from mailslot.protocol.identity import MAX_DEVICE_NAME, check_device_name, check_handle

if TYPE_CHECKING:
    from mailslot.cli.main import Settings

T = TypeVar("T")


def _with_client(settings: Settings, action: Callable[[Client], Awaitable[T]]) -> T:
    passphrase = settings.passphrase()

    async def run() -> T:
        async with settings.open_client(passphrase) as client:
            return await action(client)

    return asyncio.run(run())


def _default_name() -> str:
    name = socket.gethostname().split(".")[0][:MAX_DEVICE_NAME]
    return name if name and name.isprintable() else "device"


@click.group("device")
def device() -> None:
    """Link, approve, list, rename and remove this account's devices; alerts; key rotation."""


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
    """Show this account's devices: name, id, when added, when last seen, which is this one.

    With HANDLE, show another account's verified device list instead.
    """
    if handle is not None:
        check_handle(handle)

    async def own(client: Client) -> tuple[DeviceList, list[DeviceInfo] | None, str]:
        if handle is not None and handle != client.handle:
            return await client.device_list(handle), None, client.device_id
        return await client.device_list(), await client.devices(), client.device_id

    device_list, devices, this_device = _with_client(settings, own)
    if devices is None:
        settings.output.device_list(device_list, this_device)
    else:
        settings.output.own_devices(device_list, devices, int(time.time() * 1000))


MIN_ID_PREFIX = 4


def resolve_device_id(devices: list[DeviceInfo], text: str) -> str:
    """The full id of the account's device that ``text`` names: its 32 hex digits, or a prefix
    of at least ``MIN_ID_PREFIX`` of them that fits exactly one device (as with git commits)."""
    given = text.strip().lower()
    if len(given) < MIN_ID_PREFIX or any(c not in "0123456789abcdef" for c in given):
        raise InputError(
            f"invalid device id {text!r}: give its 32 hex digits, or at least the first "
            f"{MIN_ID_PREFIX} (mailslot device list shows them)"
        )
    found = [d.device_id for d in devices if d.device_id.startswith(given)]
    if not found:
        raise NotFoundError(f"no device {text!r} in this account (mailslot device list shows them)")
    if len(found) > 1:
        several = ", ".join(found)
        raise InputError(f"{text!r} is the start of several device ids ({several}); give more digits")
    return found[0]


def _record_result(settings: Settings, handle: str, record: DeviceRecord, text: str) -> None:
    settings.output.result({"handle": handle, "device_id": record.device_id.hex(), "name": record.name}, text)


@device.command("rename")
@click.argument("name")
@click.option(
    "--device",
    "device_id",
    metavar="ID",
    help="The device to rename: its id or a unique start of it (default: this one).",
)
@click.pass_obj
def rename(settings: Settings, name: str, device_id: str | None) -> None:
    """Rename this device (or device ID of the account) to NAME in the signed device list."""
    check_device_name(name)

    async def action(client: Client) -> tuple[str, DeviceRecord]:
        chosen = resolve_device_id(await client.devices(), device_id) if device_id is not None else None
        return client.handle, await client.rename_device(name, chosen)

    handle, record = _with_client(settings, action)
    _record_result(settings, handle, record, f"renamed device {record.device_id.hex()} to {record.name!r}")


def _confirm_removal(client: Client, devices: list[DeviceInfo], device_id: str) -> bool:
    """Ask on a terminal before removing (a removed device cannot come back by itself)."""
    names = {d.device_id: d.name for d in devices}
    name = f" {safe(names[device_id])!r}" if device_id in names else ""
    return click.confirm(
        f"Remove device{name} ({device_id}) from {client.handle}? It will receive nothing more "
        "and can rejoin only by being linked again",
        err=True,
    )


@device.command("remove")
@click.argument("device_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def remove(settings: Settings, device_id: str, yes: bool) -> None:
    """Remove device ID from the account (run it on another device of the account). ID is
    the device's 32 hex digits or a unique start of them (at least 4), as `device list` shows.

    The device gets nothing more and every later request of it is refused; contacts encrypt
    only for the devices that remain. On a terminal it asks first, unless --yes.
    """
    ask = not yes and sys.stdin.isatty()

    async def action(client: Client) -> tuple[str, DeviceRecord | None]:
        devices = await client.devices()
        chosen = resolve_device_id(devices, device_id)
        if ask and not _confirm_removal(client, devices, chosen):
            return client.handle, None
        return client.handle, await client.remove_device(chosen)

    handle, record = _with_client(settings, action)
    if record is None:
        click.echo("nothing removed", err=True)
        click.get_current_context().exit(1)
    _record_result(
        settings,
        handle,
        record,
        f"removed device {record.name!r} ({record.device_id.hex()}) from {handle}: it can no longer "
        "send or receive",
    )


@device.command("alerts")
@click.option("--all", "show_all", is_flag=True, help="Also show alerts shown before.")
@click.pass_obj
def alerts(settings: Settings, show_all: bool) -> None:
    """Check this account's device list for changes and show the alerts not shown yet.

    An ATTACK is a change that no device of the account approved: someone holds the account
    key. Contacts' device changes are shown as notices. Shown alerts are marked seen.
    """

    async def action(client: Client) -> list[DeviceAlert]:
        await client.check_devices()
        found = client.alerts(unseen_only=not show_all)
        client.mark_alerts_seen()
        return found

    found = _with_client(settings, action)
    for alert in found:
        settings.output.alert(alert)
    if not found and settings.output.mode == "text":
        settings.output.text(
            Text("no new device alerts" if not show_all else "no device alerts", style="dim")
        )


@device.command("rotate-keys")
@click.option("--force", is_flag=True, help="Rotate even if the current key is recent.")
@click.pass_obj
def rotate_keys(settings: Settings, force: bool) -> None:
    """Replace this device's encryption key if it is older than the rotation interval (7 days).

    `mailslot receive` does this by itself; the old key is kept until what was sealed to it
    has been received.
    """

    async def action(client: Client) -> tuple[str, bool]:
        return client.device_id, await client.rotate_keys(force=force)

    device_id, rotated = _with_client(settings, action)
    settings.output.result(
        {"device_id": device_id, "rotated": rotated},
        "rotated this device's encryption key"
        if rotated
        else "this device's encryption key is recent: not rotated (--force rotates it anyway)",
    )
