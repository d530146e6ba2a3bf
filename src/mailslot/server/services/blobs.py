"""Blobs: encrypted attachments of any size, uploaded in pieces, read by their random address.

Rules held here (docs/protocol.md, "Blobs"):

* a device creates a blob by declaring its exact size; the server refuses a size over
  ``max_blob_bytes`` (``TooLarge``) or one that would take the account's live blobs past
  ``account_blob_quota_bytes`` (``QuotaExceeded``) before any byte is stored, and names the
  blob with 32 random bytes of its own, never with anything the client chose;
* only devices of the owning account read a blob's upload state or upload to it;
* a piece starts exactly at the committed offset (else ``ConflictError`` with
  ``details.offset``), holds at most ``blob_piece_bytes`` and never passes the declared size
  (else ``TooLarge``, before the first byte when the length is declared up front, otherwise
  as soon as the excess arrives);
* a piece is committed (the offset advanced) only once its bytes are durable and the request
  signature over their hash verifies; a piece that is refused, forged, cut off or stalled is
  truncated away and the offset stays where it was;
* one piece at a time per blob: a per-blob lock in this process, and the store's
  compare-and-set on the offset behind it;
* a blob is readable, by anyone holding its id, once complete and until it expires; expiry
  deletes the metadata first and the bytes after, so nothing is served half-deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

from mailslot.errors import (
    ConflictError,
    ForbiddenError,
    InputError,
    MailslotError,
    NotFoundError,
    ServerError,
    TooLarge,
)
from mailslot.protocol import crypto
from mailslot.server.blobs import BLOB_ID_SIZE, BlobStore
from mailslot.server.config import ServerConfig
from mailslot.server.metrics import Metrics
from mailslot.server.storage.base import BlobRow, DeviceRow, Storage

log = logging.getLogger("mailslot.server.blobs")

PIECE_IDLE_TIMEOUT_S = 60.0  # a piece whose sender sends nothing for this long is dropped

Verifier = Callable[[bytes], None]  # checks the request signature given the piece's SHA-256
_BLOB_ID_HEX = re.compile(f"[0-9a-f]{{{2 * BLOB_ID_SIZE}}}")


def parse_blob_id(text: str) -> bytes:
    """A blob id as written in a path: exactly 64 lowercase hex digits."""
    if _BLOB_ID_HEX.fullmatch(text) is None:
        raise InputError(f"a blob id is {2 * BLOB_ID_SIZE} lowercase hex digits")
    return bytes.fromhex(text)


@dataclass(frozen=True)
class Piece:
    """One upload request: where it claims to start, and its length if declared up front."""

    blob_id: bytes
    offset: int
    length: int | None = None


class _KeyedLocks:
    """One ``asyncio.Lock`` per key, kept only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: bytes) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def _metered(
    chunks: AsyncIterable[bytes], digest: hashlib._Hash, limit: int, idle_s: float
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, hashing them, refusing the piece as soon as it passes ``limit``
    bytes (the excess is never passed on) or its sender is silent for ``idle_s`` seconds."""
    iterator = aiter(chunks)
    received = 0
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise InputError(f"the upload piece stalled for {idle_s:g} s") from None
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"this piece may hold at most {limit} bytes")
        digest.update(chunk)
        yield chunk


class Blobs:
    def __init__(
        self,
        store: Storage,
        blob_store: BlobStore,
        config: ServerConfig,
        *,
        idle_timeout_s: float = PIECE_IDLE_TIMEOUT_S,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._bytes = blob_store
        self._config = config
        self._idle_s = idle_timeout_s
        self._metrics = metrics or Metrics()
        self._locks = _KeyedLocks()

    async def create(self, owner: DeviceRow, size: int, now_ms: int) -> BlobRow:
        """Reserve a blob of exactly ``size`` bytes for the device's account."""
        if size < 0:
            raise InputError("a blob size is not negative")
        if size > self._config.max_blob_bytes:
            raise TooLarge(
                f"a blob may hold at most {self._config.max_blob_bytes} bytes",
                details={"max_blob_bytes": self._config.max_blob_bytes},
            )
        expires = now_ms + self._config.blob_ttl_s * 1000
        blob = BlobRow(crypto.random_bytes(BLOB_ID_SIZE), owner.handle, size, 0, now_ms, expires)
        await self._store.create_blob(blob, self._config.account_blob_quota_bytes)
        try:
            await self._bytes.create(blob.blob_id)
        except BaseException:
            await self._store.delete_blob(blob.blob_id)
            raise
        self._metrics.blob_created()
        return blob

    async def status(self, device: DeviceRow, blob_id: bytes, now_ms: int) -> BlobRow:
        """The blob's upload state, for a device of the owning account (the resume point)."""
        return await self._owned(device, blob_id, now_ms)

    async def upload(
        self, device: DeviceRow, piece: Piece, chunks: AsyncIterable[bytes], verify: Verifier, now_ms: int
    ) -> BlobRow:
        """Append one piece and commit it; ``verify`` gets the piece's SHA-256 once all of it
        is stored and raises if the request signature does not cover it."""
        await self._owned(device, piece.blob_id, now_ms)  # refuse strangers before they queue
        async with self._locks.hold(piece.blob_id):
            blob = await self._owned(device, piece.blob_id, now_ms)
            limit = self._piece_limit(blob, piece)
            return await self._write_piece(blob, chunks, limit, verify)

    async def readable(self, blob_id: bytes, now_ms: int) -> BlobRow:
        """A complete, unexpired blob; ``NotFoundError`` for anything else."""
        blob = await self._store.get_blob(blob_id, now_ms)
        if blob is None or not blob.complete:
            raise NotFoundError("no such blob, or it is incomplete or expired")
        stored = await self._bytes.size(blob_id)
        if stored is None or stored < blob.size:
            log.error("blob %s: metadata says %d bytes, store holds %s", blob_id.hex(), blob.size, stored)
            raise ServerError("the blob's bytes are missing")
        return blob

    def read(self, blob: BlobRow, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of a blob ``readable`` returned."""
        return self._bytes.read(blob.blob_id, start, end)

    async def expire(self, now_ms: int) -> int:
        """Delete expired blobs, metadata first and then bytes; how many."""
        expired = await self._store.expire_blobs(now_ms)
        for blob_id in expired:
            await self._bytes.delete(blob_id)
        return len(expired)

    # --- helpers -----------------------------------------------------------------------------
    async def _owned(self, device: DeviceRow, blob_id: bytes, now_ms: int) -> BlobRow:
        blob = await self._store.get_blob(blob_id, now_ms)
        if blob is None:
            raise NotFoundError("no such blob, or it expired")
        if blob.owner != device.handle:
            raise ForbiddenError("only the account that created a blob may upload to it")
        return blob

    def _piece_limit(self, blob: BlobRow, piece: Piece) -> int:
        """How many bytes this piece may hold; refuses a wrong offset or a declared length
        over the limit before any byte is read."""
        if piece.offset != blob.offset:
            raise ConflictError(
                f"the upload is at offset {blob.offset}, not {piece.offset}", details={"offset": blob.offset}
            )
        limit = min(self._config.blob_piece_bytes, blob.size - blob.offset)
        if piece.length is not None and piece.length > limit:
            raise TooLarge(
                f"this piece may hold at most {limit} bytes",
                details={
                    "offset": blob.offset,
                    "size": blob.size,
                    "blob_piece_bytes": self._config.blob_piece_bytes,
                },
            )
        return limit

    async def _write_piece(
        self, blob: BlobRow, chunks: AsyncIterable[bytes], limit: int, verify: Verifier
    ) -> BlobRow:
        digest = hashlib.sha256()
        try:
            metered = _metered(chunks, digest, limit, self._idle_s)
            end = await self._bytes.append(blob.blob_id, blob.offset, metered)
            verify(digest.digest())
            committed = await self._store.advance_blob(blob.blob_id, blob.offset, end)
        except BaseException:
            await self._discard(blob)
            raise
        self._metrics.blob_bytes(committed.offset - blob.offset)
        return committed

    async def _discard(self, blob: BlobRow) -> None:
        """Truncate an uncommitted piece away; the blob may have expired meanwhile."""
        try:
            await self._bytes.truncate(blob.blob_id, blob.offset)
        except NotFoundError:
            pass
        except (MailslotError, OSError):
            log.exception("could not truncate blob %s back to %d", blob.blob_id.hex(), blob.offset)
