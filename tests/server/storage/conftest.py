"""Fixtures for the storage tests: one opened store per implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailslot.server.storage import Storage, open_storage
from tests.server.services import empty_database, fresh_database

# Every implementation the conformance suite must pass; a new engine adds its URL here.
ENGINES = ["memory", "sqlite", "postgres"]


def storage_url(engine: str, tmp_path: Path) -> str:
    if engine == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One database for the session's PostgreSQL stores (emptied between tests), then dropped."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=ENGINES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """An opened, empty store of each implementation in turn."""
    postgres = request.param == "postgres"
    url = request.getfixturevalue("postgres_url") if postgres else storage_url(request.param, tmp_path)
    storage = open_storage(url)
    await storage.open()
    if postgres:
        empty_database(url)  # the schema stays; rows from earlier tests go
    yield storage
    await storage.close()
