"""``mailslot identity show|verify|trust|block|list``: whose keys this device trusts.

``show`` prints the safety code for you and a contact (and draws it as a QR code on a
terminal's standard error); both of you run it and compare. ``verify`` marks the contact
verified when the code typed matches, and fails loudly (exit code of a verification failure,
nothing changed) when it does not. ``trust`` accepts a contact's current key after a change or
under ``--trust-new-identities never``; ``block`` stops all traffic with a contact.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click
import segno

from mailslot.client import Client, Contact, Identity
from mailslot.protocol.identity import check_handle
from mailslot.protocol.safety import parse_code

if TYPE_CHECKING:
    from mailslot.cli.main import Settings

T = TypeVar("T")


def _with_client(settings: Settings, action: Callable[[Client], Awaitable[T]]) -> T:
    passphrase = settings.passphrase()

    async def run() -> T:
        async with settings.open_client(passphrase) as client:
            return await action(client)

    return asyncio.run(run())


def _result(settings: Settings, contact: Contact, text: str) -> None:
    settings.output.result(
        {"handle": contact.handle, "fingerprint": contact.fingerprint, "trust": contact.trust}, text
    )


@click.group("identity")
def identity() -> None:
    """Compare safety codes, and trust, verify or block contacts."""


@identity.command("show")
@click.argument("handle")
@click.pass_obj
def show(settings: Settings, handle: str) -> None:
    """Print the safety code you share with HANDLE (and a QR code on a terminal).

    HANDLE sees the same 60 digits for you; if the two differ, one of you is not talking to
    the other's real key.
    """
    check_handle(handle)

    async def action(client: Client) -> Identity:
        return await client.identity(handle)

    shown = _with_client(settings, action)
    settings.output.identity(shown)
    if settings.output.mode == "text" and sys.stderr.isatty():
        segno.make(shown.code, error="m").terminal(out=sys.stderr, compact=True)


@identity.command("verify")
@click.argument("handle")
@click.argument("code", nargs=-1, required=True)
@click.pass_obj
def verify(settings: Settings, handle: str, code: tuple[str, ...]) -> None:
    """Mark HANDLE verified if CODE is your shared safety code (spaces are ignored)."""
    check_handle(handle)
    digits = parse_code(" ".join(code))

    async def action(client: Client) -> Contact:
        return await client.verify(handle, digits)

    contact = _with_client(settings, action)
    _result(settings, contact, f"verified: {handle}'s account key {contact.fingerprint} matches the code")


@identity.command("trust")
@click.argument("handle")
@click.pass_obj
def trust(settings: Settings, handle: str) -> None:
    """Accept HANDLE's current account key (after a change, or when it is untrusted or blocked)."""
    check_handle(handle)

    async def action(client: Client) -> Contact:
        return await client.trust(handle)

    contact = _with_client(settings, action)
    _result(settings, contact, f"trusted {handle}'s account key {contact.fingerprint} ({contact.trust})")


@identity.command("block")
@click.argument("handle")
@click.pass_obj
def block(settings: Settings, handle: str) -> None:
    """Send nothing to HANDLE and drop its messages (`identity trust` undoes it)."""
    check_handle(handle)

    async def action(client: Client) -> Contact:
        return await client.block(handle)

    contact = _with_client(settings, action)
    _result(settings, contact, f"blocked {handle}")


@identity.command("list")
@click.pass_obj
def list_contacts(settings: Settings) -> None:
    """Show every contact with its account key fingerprint and trust level."""

    async def action(client: Client) -> list[Contact]:
        return client.contacts()

    settings.output.contacts(_with_client(settings, action))
