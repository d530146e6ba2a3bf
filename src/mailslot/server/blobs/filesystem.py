"""Blob bytes as files: the embedded default, under ``<data_dir>/blobs`` unless configured.

A blob's file is named only by the hex of its server-chosen random id, fanned out by its first
two hex digits (``root/ab/ab01…``, 64 digits), so no name a client chose ever reaches the
filesystem and no path trick is possible; ids that are not exactly 32 bytes are refused before
any path is built. Folders are created mode 0700, files 0600, and symlinks are not followed.

Every system call runs on a worker thread, so the event loop never waits for the disk. A write
opens, writes and closes the file within one thread call: no descriptor is ever held across an
``await``, so a cancelled upload cannot close a file under a write still running. Incoming
chunks are gathered up to ``WRITE_BUFFER`` bytes per write, and reads go out ``READ_CHUNK``
bytes at a time, so memory stays constant whatever the size. ``create`` fsyncs the new name
and ``append`` the bytes before they return (``fsync=False`` skips both, for tests and
benchmarks only), so a committed offset never points past bytes a power cut could lose.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from mailslot.errors import ConflictError, NotFoundError, ServerError
from mailslot.server.blobs.base import READ_CHUNK, BlobStore, check_blob_id, check_range

__all__ = ["WRITE_BUFFER", "FilesystemBlobStore"]

P = ParamSpec("P")
T = TypeVar("T")

WRITE_BUFFER = 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


async def _blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` on a worker thread; a missing file is ``NotFoundError``."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except FileNotFoundError as exc:
        raise NotFoundError("no such blob") from exc


class FilesystemBlobStore(BlobStore):
    """Files under ``root``, one per blob."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self._fsync = fsync

    def path_of(self, blob_id: bytes) -> Path:
        """Where a blob's bytes live: only the hex of the checked id appears in it."""
        name = check_blob_id(blob_id).hex()
        return self.root / name[:2] / name

    async def open(self) -> None:
        await asyncio.to_thread(self.root.mkdir, mode=0o700, parents=True, exist_ok=True)

    async def close(self) -> None:
        """Nothing is held open between calls."""

    async def create(self, blob_id: bytes) -> None:
        try:
            await asyncio.to_thread(_create, self.path_of(blob_id), sync=self._fsync)
        except FileExistsError as exc:
            raise ConflictError(f"blob {blob_id.hex()} already exists") from exc

    async def append(self, blob_id: bytes, offset: int, chunks: AsyncIterable[bytes]) -> int:
        path = self.path_of(blob_id)
        await _blocking(_cut_to, path, offset)
        position = offset
        buffer = bytearray()
        async for chunk in chunks:
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER:
                full, buffer = buffer, bytearray()
                position = await _blocking(_write_at, path, position, full)
        position = await _blocking(_write_at, path, position, buffer, sync=self._fsync)
        return position

    async def truncate(self, blob_id: bytes, length: int) -> None:
        await _blocking(_shorten, self.path_of(blob_id), length)

    async def size(self, blob_id: bytes) -> int | None:
        try:
            return await _blocking(lambda p: p.stat().st_size, self.path_of(blob_id))
        except NotFoundError:
            return None

    async def read(self, blob_id: bytes, start: int, end: int) -> AsyncIterator[bytes]:
        # The descriptor stays open across awaits so that a download already under way
        # survives the file's deletion by the sweeper.
        fd = await _blocking(os.open, self.path_of(blob_id), os.O_RDONLY | _NOFOLLOW)
        try:
            check_range(start, end, os.fstat(fd).st_size)
            position = start
            while position < end:
                chunk = await asyncio.to_thread(os.pread, fd, min(READ_CHUNK, end - position), position)
                if not chunk:
                    raise ServerError("blob file shorter than expected")
                position += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def delete(self, blob_id: bytes) -> bool:
        try:
            await _blocking(os.unlink, self.path_of(blob_id))
        except NotFoundError:
            return False
        return True


# --- the blocking halves, run on worker threads ---------------------------------------------
def _create(path: Path, *, sync: bool) -> None:
    """An empty file, its name made durable too when ``sync`` (and its new folder's)."""
    new_folder = not path.parent.is_dir()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    os.close(os.open(path, flags, 0o600))
    if sync:
        _sync_folder(path.parent)
        if new_folder:
            _sync_folder(path.parent.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_for_write(path: Path) -> int:
    return os.open(path, os.O_WRONLY | _NOFOLLOW)


def _cut_to(path: Path, offset: int) -> None:
    """Make the file exactly ``offset`` bytes long, refusing to grow it."""
    fd = _open_for_write(path)
    try:
        size = os.fstat(fd).st_size
        if size < offset:
            raise ConflictError(f"blob holds {size} bytes, not {offset}", details={"offset": size})
        if size > offset:
            os.ftruncate(fd, offset)
    finally:
        os.close(fd)


def _write_at(path: Path, position: int, data: bytearray, *, sync: bool = False) -> int:
    """Write all of ``data`` at ``position`` (and fsync if asked); the position after it."""
    if not data and not sync:
        return position
    fd = _open_for_write(path)
    try:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, position)
            position += written
            view = view[written:]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return position


def _shorten(path: Path, length: int) -> None:
    fd = _open_for_write(path)
    try:
        if os.fstat(fd).st_size > length:
            os.ftruncate(fd, length)
    finally:
        os.close(fd)
