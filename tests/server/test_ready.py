"""``GET /ready``: 200 while the database answers, 503 ``not_ready`` when it does not; ``/health``
stays pure liveness either way."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from mailslot.errors import ServerError
from mailslot.server import routes
from mailslot.server.runner import ServerThread
from mailslot.server.storage import MemoryStorage, SqliteStorage
from mailslot.server.storage.postgres import PostgresStorage
from tests.conftest import LiveServer, make_data_dir
from tests.server.rawapi import tls_context
from tests.server.services import POSTGRES_URL, fresh_database


class UnreachableStorage(MemoryStorage):
    """A store whose database stopped answering."""

    async def ping(self) -> None:
        raise ServerError("the database is unreachable; try again")


class StalledStorage(MemoryStorage):
    """A store whose database never answers."""

    async def ping(self) -> None:
        await asyncio.sleep(60)


def get(url: str, ca: Path, path: str) -> httpx.Response:
    return httpx.get(url + path, verify=tls_context(ca), timeout=10)


def test_ready_on_a_live_server(live_server: LiveServer) -> None:
    ready = get(live_server.url, live_server.ca, "/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert get(live_server.url, live_server.ca, "/health").json() == {"status": "ok"}


def test_both_are_in_the_openapi_document(live_server: LiveServer) -> None:
    paths = get(live_server.url, live_server.ca, "/openapi.json").json()["paths"]
    assert "security" not in paths["/health"]["get"] and "security" not in paths["/ready"]["get"]
    assert set(paths["/ready"]["get"]["responses"]) >= {"200", "503"}


def test_not_ready_when_the_database_fails(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "server")
    with ServerThread(config, store=UnreachableStorage()) as server:
        ready = get(server.url, config.cert_path, "/ready")
        assert ready.status_code == 503
        assert ready.json()["error"] == "not_ready"
        assert "unreachable" in ready.json()["message"]
        assert get(server.url, config.cert_path, "/health").status_code == 200


def test_not_ready_when_the_database_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "READY_TIMEOUT_S", 0.2)
    config = make_data_dir(tmp_path / "server")
    with ServerThread(config, store=StalledStorage()) as server:
        started = time.monotonic()
        ready = get(server.url, config.cert_path, "/ready")
        assert ready.status_code == 503 and time.monotonic() - started < 5
        assert "no answer in 0.2 s" in ready.json()["message"]


async def test_sqlite_ping(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "db.sqlite")
    await store.open()
    await store.ping()
    await store.close()
    with pytest.raises(ServerError):
        await store.ping()


def test_postgres_ready_then_not_when_its_database_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "READY_TIMEOUT_S", 1.0)
    with fresh_database() as url:
        config = make_data_dir(tmp_path / "server", database_url=url)
        with ServerThread(config) as server:
            assert get(server.url, config.cert_path, "/ready").status_code == 200
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            statuses = [get(server.url, config.cert_path, "/ready").status_code for _ in range(3)]
            assert statuses == [503, 503, 503]
            assert get(server.url, config.cert_path, "/health").status_code == 200


async def test_postgres_ping_without_a_pool() -> None:
    with pytest.raises(ServerError, match="not open"):
        await PostgresStorage(POSTGRES_URL).ping()
