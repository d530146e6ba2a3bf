"""Where blob bytes live, behind one interface chosen by URL.

``open_blob_store("memory://")`` gives a store for tests; ``open_blob_store("file:///<path>")``
the filesystem default for one node (an absolute path; the server's default is
``<data_dir>/blobs``); ``open_blob_store("postgresql://...")`` (or ``postgres://``; any libpq
URL) the chunked store in PostgreSQL for several nodes that share no disk, psycopg imported
only then. An S3-compatible store would join here with its own scheme.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from mailslot.errors import ConfigError
from mailslot.server.blobs.base import BLOB_ID_SIZE, BlobStore
from mailslot.server.blobs.filesystem import FilesystemBlobStore
from mailslot.server.blobs.memory import MemoryBlobStore

__all__ = ["BLOB_ID_SIZE", "BlobStore", "FilesystemBlobStore", "MemoryBlobStore", "open_blob_store"]


_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_blob_store(url: str, *, fsync: bool = True) -> BlobStore:
    """The store a URL names, not yet opened (nothing is connected or created here):
    ``memory://``, ``file:///<absolute path>`` or ``postgresql://...``."""
    if url == "memory://":
        return MemoryBlobStore()
    if url.startswith(_POSTGRES_SCHEMES) and len(url) > len("postgres://"):
        from mailslot.server.blobs.postgres import PostgresBlobStore  # psycopg only when used

        return PostgresBlobStore(url)
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
    raise ConfigError(
        f"unsupported blob store URL {url!r}: use memory://, file:///<absolute path> or postgresql://..."
    )
