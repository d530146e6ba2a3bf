"""``mailslot attachment get``: fetch an attachment again while its blob lives."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailslot.cli.message_cmd import DOWNLOADS_HELP
from mailslot.client import Attachment
from mailslot.client.store import parse_attachment_id

if TYPE_CHECKING:
    from mailslot.cli.main import Settings


@click.group("attachment")
def attachment() -> None:
    """Files that came with messages."""


@attachment.command("get")
@click.argument("attachment_id", metavar="ID")
@click.option(
    "--downloads", type=click.Path(file_okay=False, path_type=Path), metavar="DIR", help=DOWNLOADS_HELP
)
@click.pass_obj
def get(settings: Settings, attachment_id: str, downloads: Path | None) -> None:
    """Download attachment ID (as `receive` and `history` show it) into the downloads folder.

    It is checked and decrypted again, and saved under a new name if a copy is already there.
    This works while the server keeps the blob (30 days by default).
    """
    parse_attachment_id(attachment_id)
    passphrase = settings.passphrase()

    async def run() -> Attachment:
        async with settings.open_client(passphrase) as client:
            with settings.output.transfers("download") as progress:
                return await client.fetch_attachment(attachment_id, downloads=downloads, progress=progress)

    settings.output.attachment(asyncio.run(run()))


@attachment.command("preview")
@click.argument("attachment_id", metavar="ID")
@click.option(
    "--downloads", type=click.Path(file_okay=False, path_type=Path), metavar="DIR", help=DOWNLOADS_HELP
)
@click.pass_obj
def preview(settings: Settings, attachment_id: str, downloads: Path | None) -> None:
    """Save the small JPEG preview the sender put in the message, without downloading the file.

    Only images have one. It is saved as NAME.preview.jpg in the downloads folder.
    """
    parse_attachment_id(attachment_id)
    passphrase = settings.passphrase()

    async def run() -> tuple[Attachment, Path]:
        async with settings.open_client(passphrase) as client:
            return await client.save_thumbnail(attachment_id, downloads=downloads)

    listed, path = asyncio.run(run())
    settings.output.result(
        {"id": listed.id, "name": listed.name, "path": str(path)}, f"saved the preview to {path}"
    )
