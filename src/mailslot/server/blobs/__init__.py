"""Where blob bytes live, behind one interface chosen by URL.

``open_blob_store("memory://")`` gives a store for tests; ``open_blob_store("file:///<path>")``
the filesystem default (an absolute path; the server's default is ``<data_dir>/blobs``). A
PostgreSQL or S3-compatible store joins here with its own scheme.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from mailslot.errors import ConfigError
from mailslot.server.blobs.base import BLOB_ID_SIZE, BlobStore
from mailslot.server.blobs.filesystem import FilesystemBlobStore
from mailslot.server.blobs.memory import MemoryBlobStore

__all__ = ["BLOB_ID_SIZE", "BlobStore", "FilesystemBlobStore", "MemoryBlobStore", "open_blob_store"]


def open_blob_store(url: str, *, fsync: bool = True) -> BlobStore:
    """The store a URL names, not yet opened: ``memory://`` or ``file:///<absolute path>``."""
    if url == "memory://":
        return MemoryBlobStore()
    parts = urlsplit(url)
    path = unquote(parts.path)
    if (
        parts.scheme == "file"
        and parts.netloc in {"", "localhost"}
        and not parts.query
        and not parts.fragment
        and PurePosixPath(path).is_absolute()
        and path != "/"
    ):
        return FilesystemBlobStore(path, fsync=fsync)
    raise ConfigError(f"unsupported blob store URL {url!r}: use memory:// or file:///<absolute path>")
