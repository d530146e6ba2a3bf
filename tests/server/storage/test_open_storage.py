"""Choosing a store by URL, and the names the package exports."""

from __future__ import annotations

import os

import pytest

import mailslot.server.storage as storage
from mailslot.errors import ConfigError
from mailslot.server.storage import MemoryStorage, SqliteStorage, open_storage


def test_memory() -> None:
    assert isinstance(open_storage("memory://"), MemoryStorage)


def test_memory_ignores_options_for_other_engines() -> None:
    assert isinstance(open_storage("memory://", synchronous="NORMAL"), MemoryStorage)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////var/lib/mailslot/mailslot.db", "/var/lib/mailslot/mailslot.db"),
        ("sqlite:///mailslot.db", "mailslot.db"),
        ("sqlite:///data/mailslot.db", "data/mailslot.db"),
    ],
)
def test_sqlite_path(url: str, path: str) -> None:
    store = open_storage(url)
    assert isinstance(store, SqliteStorage)
    assert store.path == path
    assert os.path.isabs(store.path) == path.startswith("/")


def test_sqlite_options_are_passed_on() -> None:
    with pytest.raises(ConfigError, match="synchronous"):
        open_storage("sqlite:///x.db", synchronous="OFF")


def test_unknown_option() -> None:
    with pytest.raises(ConfigError, match="cache_size"):
        open_storage("sqlite:///x.db", cache_size=10)


@pytest.mark.parametrize(
    "url", ["", "mysql://db/mailslot", "sqlite://", "sqlite:///", "sqlite:x.db", "memory://x"]
)
def test_unsupported_url(url: str) -> None:
    with pytest.raises(ConfigError, match="unsupported storage URL"):
        open_storage(url)


def test_exported_names() -> None:
    assert sorted(storage.__all__) == sorted(
        [
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
    )
    for name in storage.__all__:
        assert hasattr(storage, name)
