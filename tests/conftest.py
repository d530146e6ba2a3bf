"""Shared fixtures: a real mailslot server with real TLS on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailslot.server.config import ServerConfig, write_config
from mailslot.server.runner import ServerThread
from mailslot.server.tls import write_self_signed


@dataclass(frozen=True)
class LiveServer:
    url: str
    ca: Path
    data_dir: Path
    config: ServerConfig
    metrics_url: str | None = None  # the node's Prometheus listener (plain HTTP, loopback)


def make_data_dir(path: Path, **settings: object) -> ServerConfig:
    """A data directory as `mailslot server init` makes it, with ``settings`` overridden; both
    listeners on free ports, so nodes can run side by side."""
    path.mkdir(parents=True, exist_ok=True)
    settings = {"metrics_port": 0, **settings}
    config = ServerConfig(data_dir=path, port=0, **settings)  # type: ignore[arg-type]
    write_self_signed(config.cert_path, config.key_path)
    write_config(config)
    return config


@pytest.fixture
def server_settings() -> dict[str, object]:
    """Override in a test module to change the live server's limits."""
    return {}


@pytest.fixture
def live_server(tmp_path: Path, server_settings: dict[str, object]) -> Iterator[LiveServer]:
    config = make_data_dir(tmp_path / "server", **server_settings)
    with ServerThread(config) as thread:
        yield LiveServer(thread.url, config.cert_path, config.data_dir, config, thread.metrics_url)
