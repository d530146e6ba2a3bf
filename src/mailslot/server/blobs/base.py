"""The blob byte store interface: opaque bytes under a server-chosen 32-byte id.

The store keeps only bytes; what a blob is (owner, declared size, committed offset, expiry)
is metadata in ``server/storage`` under the same id, and the rules are in
``services/blobs.py``. Nothing here knows of HTTP, of paths the client chose, or of what the
bytes mean (they are ciphertext the server never parses). An implementation may keep the bytes
in files, in a database or in an S3-compatible service: nothing in the interface assumes a
local path. Memory stays constant whatever the size: bytes come in and go out as async
streams of chunks.

One conformance suite (tests/server/blobs/test_blob_store.py) runs against every
implementation; a new one is done when it passes.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator

from mailslot.errors import InputError
from mailslot.protocol.attachment import BLOB_ID_SIZE

__all__ = ["BLOB_ID_SIZE", "READ_CHUNK", "BlobStore", "check_blob_id", "check_range"]

READ_CHUNK = 256 * 1024  # bytes per chunk that ``read`` yields, at most


def check_blob_id(blob_id: bytes) -> bytes:
    """The id itself if it is 32 bytes, else ``InputError``: ids come from the server's own
    random source, so anything else is a bug, never a name to use."""
    if len(blob_id) != BLOB_ID_SIZE:
        raise InputError(f"a blob id is {BLOB_ID_SIZE} bytes")
    return blob_id


def check_range(start: int, end: int, size: int) -> None:
    """``InputError`` unless ``0 <= start <= end <= size``."""
    if not 0 <= start <= end <= size:
        raise InputError(f"byte range {start}..{end} is outside the blob's {size} bytes")


class BlobStore(abc.ABC):
    """Async byte storage by blob id; each method leaves a blob whole or as documented."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Get ready (create folders, connect); idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what ``open`` took; the bytes stay."""

    @abc.abstractmethod
    async def create(self, blob_id: bytes) -> None:
        """Create an empty blob; ``ConflictError`` if the id exists."""

    @abc.abstractmethod
    async def append(self, blob_id: bytes, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Write ``chunks`` from ``offset`` on, first discarding anything stored past ``offset``
        (left by a piece that was refused or cut off), and return the new length.

        The bytes are durable when this returns. ``NotFoundError`` if the blob is unknown,
        ``ConflictError`` (details: ``offset``, the stored length) if it holds fewer than
        ``offset`` bytes. If ``chunks`` raises, the error propagates and the blob holds
        anywhere from ``offset`` to ``offset`` plus the bytes consumed: the caller truncates.
        """

    @abc.abstractmethod
    async def truncate(self, blob_id: bytes, length: int) -> None:
        """Cut the blob to ``length`` bytes if it is longer (a shorter one stays as it is);
        ``NotFoundError`` if the blob is unknown."""

    @abc.abstractmethod
    async def size(self, blob_id: bytes) -> int | None:
        """The stored length, or None if the blob is unknown."""

    @abc.abstractmethod
    def read(self, blob_id: bytes, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes ``start`` (inclusive) to ``end`` (exclusive), in chunks of at most
        ``READ_CHUNK`` bytes.

        Errors come with the first chunk: ``NotFoundError`` if the blob is unknown,
        ``InputError`` unless ``0 <= start <= end <= stored length``. A read that has begun
        finishes even if the blob is deleted meanwhile, where the store allows it (files do).
        """

    @abc.abstractmethod
    async def delete(self, blob_id: bytes) -> bool:
        """Delete the blob's bytes; whether it existed."""
