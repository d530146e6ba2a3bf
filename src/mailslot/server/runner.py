"""Running a node under uvicorn: in the foreground (``mailslot serve``) or in a thread.

The listening sockets are bound here, before uvicorn starts, so port 0 (any free port) works and
the caller knows the real port at once. Beside the API, on the same event loop, a second small
uvicorn server answers ``GET /metrics`` on ``metrics_host:metrics_port`` (plain HTTP, loopback by
default); it stops when the API server stops. uvicorn gets no log handlers of its own: its
records go through ``logs.configure_logging``'s handler, and its access log is off in favour of
``logs.AccessLog``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from mailslot.errors import ConfigError
from mailslot.server.app import create_app
from mailslot.server.config import ServerConfig
from mailslot.server.logs import configure_logging
from mailslot.server.metrics import MetricsEndpoint
from mailslot.server.storage import open_storage
from mailslot.server.storage.base import Storage

log = logging.getLogger("mailslot.server")


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


def bind_metrics(config: ServerConfig) -> socket.socket | None:
    """The metrics listener's socket, or None if ``metrics = false`` or it cannot be bound: a
    busy metrics port is logged as an error but does not stop the node serving mail."""
    if not config.metrics:
        return None
    try:
        return bind(config.metrics_host, config.metrics_port)
    except ConfigError as exc:
        log.error("metrics listener off: %s; set metrics_port (or metrics = false)", exc.message)
        return None


def _uvicorn_config(config: ServerConfig, app: Starlette, log_level: str) -> uvicorn.Config:
    tls: dict[str, str] = {}
    if config.tls:
        for path in (config.cert_path, config.key_path):
            if not Path(path).is_file():
                raise ConfigError(f"TLS file {path} is missing; run `mailslot server init`")
        tls = {"ssl_certfile": str(config.cert_path), "ssl_keyfile": str(config.key_path)}
    return uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
        timeout_graceful_shutdown=3,
        **tls,  # type: ignore[arg-type]
    )


class _SideServer(uvicorn.Server):
    """A uvicorn server that runs beside the API's on its loop and leaves signals to it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _metrics_server(app: Starlette, log_level: str) -> uvicorn.Server:
    endpoint = MetricsEndpoint(lambda: getattr(app.state, "node", None))
    config = uvicorn.Config(
        endpoint,
        log_level=log_level,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    return _SideServer(config)


async def _serve_node(
    api: uvicorn.Server,
    sock: socket.socket,
    metrics: uvicorn.Server | None,
    metrics_sock: socket.socket | None,
) -> None:
    """Serve the API until it stops, and the metrics beside it until then."""
    side = None
    if metrics is not None and metrics_sock is not None:
        side = asyncio.create_task(metrics.serve(sockets=[metrics_sock]))
    try:
        await api.serve(sockets=[sock])
    finally:
        if metrics is not None and side is not None:
            metrics.should_exit = True
            await side


def url_of(config: ServerConfig, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if config.tls else 'http'}://{shown}:{port}"


def metrics_url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


async def check_storage(config: ServerConfig) -> None:
    """Open and close the database once, so a bad URL or a newer schema stops the server with
    a clear error before it listens (rather than as a failed ASGI lifespan)."""
    store = open_storage(config.storage_url, synchronous=config.sqlite_synchronous)
    await store.open()
    await store.close()


def serve(config: ServerConfig, log_level: str = "info", log_format: str = "auto") -> None:
    """Serve in the foreground until interrupted, logging to stderr (``logs.configure_logging``)."""
    configure_logging(log_level, log_format)
    asyncio.run(check_storage(config))
    sock = bind(config.host, config.port)
    app = create_app(config)
    server = uvicorn.Server(_uvicorn_config(config, app, log_level))
    metrics_sock = bind_metrics(config)
    metrics = _metrics_server(app, log_level) if metrics_sock is not None else None
    url = url_of(config, sock)
    log.info("mailslot listening on %s", url, extra={"url": url})
    if metrics_sock is not None:
        url = metrics_url_of(metrics_sock)
        log.info("metrics on %s", url, extra={"metrics_url": url})
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(_serve_node(server, sock, metrics, metrics_sock))


class ServerThread:
    """A real node on a loopback socket in a background thread (tests, demo, benchmarks)."""

    def __init__(
        self, config: ServerConfig, store: Storage | None = None, log_level: str = "warning"
    ) -> None:
        self.config = config
        self._sock = bind(config.host, config.port)
        self.url = url_of(config, self._sock)
        app = create_app(config, store)
        self._server = uvicorn.Server(_uvicorn_config(config, app, log_level))
        self._server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self._metrics_sock = bind_metrics(config)
        self._metrics = _metrics_server(app, log_level) if self._metrics_sock is not None else None
        # Where Prometheus would scrape this node; None when the metrics listener is off.
        self.metrics_url = metrics_url_of(self._metrics_sock) if self._metrics_sock is not None else None
        self._thread = threading.Thread(target=self._run, name="mailslot-server", daemon=True)

    def _run(self) -> None:
        asyncio.run(_serve_node(self._server, self._sock, self._metrics, self._metrics_sock))

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
        if self._metrics_sock is not None:
            self._metrics_sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
