"""Running a node under uvicorn: in the foreground (``mailslot serve``) or in a thread.

The listening socket is bound here, before uvicorn starts, so port 0 (any free port) works and
the caller knows the real port at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path

import uvicorn

from mailslot.errors import ConfigError
from mailslot.server.app import create_app
from mailslot.server.config import ServerConfig
from mailslot.server.storage import open_storage
from mailslot.server.storage.base import Storage


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(config: ServerConfig, store: Storage | None, log_level: str) -> uvicorn.Config:
    tls: dict[str, str] = {}
    if config.tls:
        for path in (config.cert_path, config.key_path):
            if not Path(path).is_file():
                raise ConfigError(f"TLS file {path} is missing; run `mailslot server init`")
        tls = {"ssl_certfile": str(config.cert_path), "ssl_keyfile": str(config.key_path)}
    return uvicorn.Config(
        create_app(config, store),
        log_level=log_level,
        lifespan="on",
        ws="websockets-sansio",
        timeout_graceful_shutdown=3,
        **tls,  # type: ignore[arg-type]
    )


def url_of(config: ServerConfig, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if config.tls else 'http'}://{shown}:{port}"


async def check_storage(config: ServerConfig) -> None:
    """Open and close the database once, so a bad URL or a newer schema stops the server with
    a clear error before it listens (rather than as a failed ASGI lifespan)."""
    store = open_storage(config.storage_url, synchronous=config.sqlite_synchronous)
    await store.open()
    await store.close()


def serve(config: ServerConfig, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    asyncio.run(check_storage(config))
    sock = bind(config.host, config.port)
    server = uvicorn.Server(_uvicorn_config(config, None, log_level))
    logging.getLogger("mailslot.server").info("mailslot listening on %s", url_of(config, sock))
    server.run(sockets=[sock])


class ServerThread:
    """A real node on a loopback socket in a background thread (tests, demo, benchmarks)."""

    def __init__(
        self, config: ServerConfig, store: Storage | None = None, log_level: str = "warning"
    ) -> None:
        self.config = config
        self._sock = bind(config.host, config.port)
        self.url = url_of(config, self._sock)
        self._server = uvicorn.Server(_uvicorn_config(config, store, log_level))
        self._server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._run, name="mailslot-server", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self, timeout: float = 15.0) -> ServerThread:
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > timeout:
                raise ConfigError("the server did not start")
            threading.Event().wait(0.02)
            waited += 0.02
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
