"""Attachments between files and blobs: what the sender uploads, what the recipient saves.

Sending: ``open_sources`` opens every file to attach before anything is uploaded (a missing or
unreadable file, or a directory, is an ``InputError`` naming it, and nothing has left the
device); ``upload`` encrypts and uploads one source (``blobs.upload_blob``) and returns the
``AttachmentRef`` that goes inside the message: the file's base name, its media type (from
its name, ``application/octet-stream`` when unknown), its size, the blob's address, key, hash
and size, and for an image a small thumbnail. A text too long to travel inline becomes a
source of its own (``long_text_source``), flagged ``FLAG_LONG_TEXT``.

Receiving: ``read_long_text`` fetches and checks a long text into memory (at most
``attachment.MAX_TEXT`` bytes, which must be UTF-8); ``save`` fetches and checks a file into
the downloads folder, under a sanitised name that is never outside it and never overwrites
(``downloads``). Neither releases anything the checks in ``blobs.download_blob`` did not pass.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mailslot.client.blobs import Progress, download_blob, upload_blob
from mailslot.client.downloads import PartialFile, cut_utf8, split_extension
from mailslot.client.thumbnails import make_thumbnail
from mailslot.client.transport import Transport
from mailslot.errors import InputError, TooLarge, VerificationError
from mailslot.protocol.attachment import (
    FLAG_LONG_TEXT,
    MAX_ATTACHMENTS,
    MAX_MEDIA_TYPE,
    MAX_NAME,
    MAX_TEXT,
    AttachmentRef,
)

ProgressFor = Callable[[str], Progress]
"""Given a file's name, the progress callback for its transfer (one per file)."""

DEFAULT_MEDIA_TYPE = "application/octet-stream"
LONG_TEXT_NAME = "message.txt"
LONG_TEXT_MEDIA_TYPE = "text/plain"
THUMBNAIL_BUDGET = 128 * 1024  # all thumbnails of one message, to keep its body small


def no_progress(name: str) -> Progress:
    """The default: no progress reports."""
    return lambda done, total: None


@dataclass
class Source:
    """One thing to upload: an open, seekable byte source of a declared size."""

    file: BinaryIO
    size: int
    name: str
    media_type: str
    path: Path | None = None  # the file on this device, if it is one
    flags: int = 0

    def close(self) -> None:
        self.file.close()


def _wire_name(path: Path) -> str:
    """The file's base name as UTF-8 text of at most ``MAX_NAME`` bytes, extension kept."""
    name = os.fsencode(path.name).decode("utf-8", errors="replace") or "attachment"
    stem, ext = split_extension(name)
    return name if len(name.encode()) <= MAX_NAME else cut_utf8(stem, MAX_NAME - len(ext.encode())) + ext


def media_type_of(name: str) -> str:
    guessed = mimetypes.guess_type(name, strict=False)[0] or DEFAULT_MEDIA_TYPE
    return guessed if len(guessed) <= MAX_MEDIA_TYPE else DEFAULT_MEDIA_TYPE


def _open_source(path: Path) -> Source:
    """Open one file to attach: it must exist, be a regular file and be readable."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # checked first: opening a FIFO would block
            raise InputError(f"the attachment {path} is not a regular file")
        file = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read the attachment {path}: {exc.strerror or exc}") from exc
    name = _wire_name(path)
    return Source(file, os.fstat(file.fileno()).st_size, name, media_type_of(name), path=path)


def open_sources(paths: Sequence[Path]) -> list[Source]:
    """Open every file to attach, or none: the first that cannot be read is an InputError."""
    if len(paths) > MAX_ATTACHMENTS:
        raise InputError(f"at most {MAX_ATTACHMENTS} attachments per message")
    opened: list[Source] = []
    try:
        for path in paths:
            opened.append(_open_source(path))
    except BaseException:
        for source in opened:
            source.close()
        raise
    return opened


def check_sources(paths: Sequence[Path]) -> None:
    """Raise the ``InputError`` that sending ``paths`` would, without sending anything."""
    for source in open_sources(paths):
        source.close()


def long_text_source(text: bytes) -> Source:
    """A text too long to travel inline, as a blob flagged ``FLAG_LONG_TEXT``."""
    if len(text) > MAX_TEXT:
        raise TooLarge(f"the message is longer than {MAX_TEXT} bytes")
    return Source(io.BytesIO(text), len(text), LONG_TEXT_NAME, LONG_TEXT_MEDIA_TYPE, flags=FLAG_LONG_TEXT)


async def upload(
    transport: Transport, source: Source, progress: Progress, *, thumbnail_room: int
) -> AttachmentRef:
    """Upload ``source`` as a new blob; its reference, with a thumbnail if it is an image
    and one fits in ``thumbnail_room`` bytes."""
    blob = await upload_blob(transport, source.file, source.size, progress)
    thumbnail = b""
    if source.path is not None and source.media_type.startswith("image/"):
        thumbnail = await asyncio.to_thread(make_thumbnail, source.path)
        thumbnail = thumbnail if len(thumbnail) <= thumbnail_room else b""
    return AttachmentRef(
        blob_id=blob.blob_id,
        key=blob.key,
        sha256=blob.sha256,
        blob_size=blob.blob_size,
        size=source.size,
        name=source.name,
        media_type=source.media_type,
        thumbnail=thumbnail,
        flags=source.flags,
    )


async def read_long_text(transport: Transport, ref: AttachmentRef, progress: Progress) -> str:
    """The checked text of a long-text attachment."""
    if ref.size > MAX_TEXT:
        raise TooLarge(f"the long text is larger than {MAX_TEXT} bytes")
    text = bytearray()
    await download_blob(transport, ref, text.extend, progress)
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("the long text is not UTF-8") from exc


async def save(transport: Transport, ref: AttachmentRef, folder: Path, progress: Progress) -> Path:
    """Fetch, check and decrypt ``ref`` into ``folder``; the path it was saved under.

    The plaintext goes to a hidden temporary file that gets its name only after every check
    passed; on any failure it is deleted and the error raised.
    """
    with PartialFile(folder) as partial:
        await download_blob(transport, ref, partial.write, progress)
        return await asyncio.to_thread(partial.commit, ref.name, ref.media_type)  # fsync: off the loop


async def save_bytes(data: bytes, name: str, folder: Path) -> Path:
    """Save ``data`` (already checked, e.g. a thumbnail from a verified message) like a file."""
    with PartialFile(folder) as partial:
        partial.write(data)
        return await asyncio.to_thread(partial.commit, name, "image/jpeg")
