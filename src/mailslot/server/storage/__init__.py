"""Where the server keeps its data, behind one interface chosen by URL.

``open_storage("memory://")`` gives a store for tests; ``open_storage("sqlite:///<path>")`` the
embedded default. Everything after ``sqlite:///`` is the file path, as in SQLAlchemy:
``sqlite:////var/lib/mailslot/mailslot.db`` is absolute, ``sqlite:///mailslot.db`` is relative
to the working directory. ``open_storage("postgresql://user@host:5432/dbname")`` (or
``postgres://``; any libpq URL) gives the scale-out store several nodes share; psycopg is
imported only then.
"""

from __future__ import annotations

from typing import Any

from mailslot.errors import ConfigError
from mailslot.server.storage.base import (
    AccountRow,
    DeviceRow,
    NewMessage,
    QueueEntry,
    Storage,
    StoredSend,
)
from mailslot.server.storage.memory import MemoryStorage
from mailslot.server.storage.migrations import LATEST_VERSION
from mailslot.server.storage.sqlite import SqliteStorage

__all__ = [
    "LATEST_VERSION",
    "AccountRow",
    "DeviceRow",
    "MemoryStorage",
    "NewMessage",
    "QueueEntry",
    "SqliteStorage",
    "Storage",
    "StoredSend",
    "open_storage",
]

# Options each engine takes. One server configuration serves every URL, so an option meant for
# another engine is ignored; a name no engine knows is a mistake.
_OPTIONS: dict[str, frozenset[str]] = {
    "memory": frozenset(),
    "sqlite": frozenset({"synchronous", "busy_timeout_ms"}),
    "postgresql": frozenset({"min_connections", "max_connections", "connect_timeout_s"}),
}
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(url: str, **options: Any) -> Storage:
    """The store a URL names, not yet opened: ``memory://``, ``sqlite:///<path>`` or
    ``postgresql://...``."""
    unknown = set(options).difference(*_OPTIONS.values())
    if unknown:
        raise ConfigError(f"unknown storage options: {', '.join(sorted(unknown))}")
    if url == "memory://":
        return MemoryStorage()
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        taken = {k: v for k, v in options.items() if k in _OPTIONS["sqlite"]}
        return SqliteStorage(url.removeprefix("sqlite:///"), **taken)
    if url.startswith(_POSTGRES_SCHEMES):
        from mailslot.server.storage.postgres import PostgresStorage  # psycopg only when used

        taken = {k: v for k, v in options.items() if k in _OPTIONS["postgresql"]}
        return PostgresStorage(url, **taken)
    raise ConfigError(
        f"unsupported storage URL {url!r}: use memory://, sqlite:///<path> "
        "(sqlite:////absolute/path.db, sqlite:///relative/path.db) or postgresql://..."
    )
