"""Shared fixtures: a real mailslot server with real TLS on a loopback port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from mailslot.server.config import ServerConfig, write_config
from mailslot.server.runner import ServerThread
from mailslot.server.services.directory import new_invite
from mailslot.server.storage import Storage, open_storage
from mailslot.server.tls import write_self_signed

T = TypeVar("T")
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class LiveServer:
    url: str
    ca: Path
    data_dir: Path
    config: ServerConfig
    metrics_url: str | None = None  # the node's Prometheus listener (plain HTTP, loopback)


def make_data_dir(path: Path, **settings: object) -> ServerConfig:
    """A data directory as `mailslot server init` makes it, with ``settings`` overridden; both
    listeners on free ports, so nodes can run side by side. Registration is open unless
    ``settings`` say otherwise (``INVITE_ONLY``), so tests register without invites."""
    path.mkdir(parents=True, exist_ok=True)
    settings = {"metrics_port": 0, "registration": "open", **settings}
    config = ServerConfig(data_dir=path, port=0, **settings)  # type: ignore[arg-type]
    write_self_signed(config.cert_path, config.key_path)
    write_config(config)
    return config


INVITE_ONLY: dict[str, object] = {"registration": "invite"}  # the default of a real server


@pytest.fixture
def server_settings() -> dict[str, object]:
    """Override in a test module to change the live server's limits."""
    return {}


@pytest.fixture
def live_server(tmp_path: Path, server_settings: dict[str, object]) -> Iterator[LiveServer]:
    config = make_data_dir(tmp_path / "server", **server_settings)
    with ServerThread(config) as thread:
        yield LiveServer(thread.url, config.cert_path, config.data_dir, config, thread.metrics_url)


def on_store(server: LiveServer, job: Callable[[Storage], Awaitable[T]]) -> T:
    """Run ``job`` on the live server's database, as `mailslot admin` does beside a running node."""

    async def run() -> T:
        store = open_storage(server.config.storage_url)
        await store.open()
        try:
            return await job(store)
        finally:
            await store.close()

    return asyncio.run(run())


def make_invite(server: LiveServer, *, uses: int = 1, expires_in_ms: int = DAY_MS) -> str:
    """An invite token stored in the live server's database, as `admin invite create` makes it."""
    made = new_invite(time.time_ns() // 10**6, uses=uses, expires_in_ms=expires_in_ms)
    on_store(server, lambda store: store.create_invite(made.row))
    return made.token
