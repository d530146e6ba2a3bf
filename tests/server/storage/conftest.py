"""Fixtures for the storage tests: one opened store per implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailslot.server.storage import Storage, open_storage

# Every implementation the conformance suite must pass; a new engine adds its URL here.
ENGINES = ["memory", "sqlite"]


def storage_url(engine: str, tmp_path: Path) -> str:
    if engine == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=ENGINES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """An opened, empty store of each implementation in turn."""
    storage = open_storage(storage_url(request.param, tmp_path))
    await storage.open()
    yield storage
    await storage.close()
