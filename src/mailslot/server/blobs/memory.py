"""Blob bytes in a dictionary, for unit tests; the same contract as the filesystem store."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from mailslot.errors import ConflictError, NotFoundError
from mailslot.server.blobs.base import READ_CHUNK, BlobStore, check_blob_id, check_range

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore(BlobStore):
    """Bytes in one process, gone with the object."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, bytearray] = {}

    async def open(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release; the bytes live as long as the object."""

    def _get(self, blob_id: bytes) -> bytearray:
        data = self._blobs.get(check_blob_id(blob_id))
        if data is None:
            raise NotFoundError(f"no blob {blob_id.hex()}")
        return data

    async def create(self, blob_id: bytes) -> None:
        if check_blob_id(blob_id) in self._blobs:
            raise ConflictError(f"blob {blob_id.hex()} already exists")
        self._blobs[blob_id] = bytearray()

    async def append(self, blob_id: bytes, offset: int, chunks: AsyncIterable[bytes]) -> int:
        data = self._get(blob_id)
        if len(data) < offset:
            raise ConflictError(f"blob holds {len(data)} bytes, not {offset}", details={"offset": len(data)})
        del data[offset:]
        async for chunk in chunks:
            data += chunk
        return len(data)

    async def truncate(self, blob_id: bytes, length: int) -> None:
        del self._get(blob_id)[length:]

    async def size(self, blob_id: bytes) -> int | None:
        data = self._blobs.get(check_blob_id(blob_id))
        return None if data is None else len(data)

    async def read(self, blob_id: bytes, start: int, end: int) -> AsyncIterator[bytes]:
        data = self._get(blob_id)
        check_range(start, end, len(data))
        for position in range(start, end, READ_CHUNK):
            yield bytes(data[position : min(position + READ_CHUNK, end)])

    async def delete(self, blob_id: bytes) -> bool:
        return self._blobs.pop(check_blob_id(blob_id), None) is not None
