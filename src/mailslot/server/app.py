"""The ASGI application: routes, error rendering, and the node's lifespan (storage, blob store,
sweeper, last-seen writer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute

from mailslot.errors import MailslotError, NotFoundError, ServerError
from mailslot.server.blobs import BlobStore, open_blob_store
from mailslot.server.bus import open_bus
from mailslot.server.config import ServerConfig
from mailslot.server.edge import error_response, json_response
from mailslot.server.logs import AccessLog
from mailslot.server.metrics import Metrics
from mailslot.server.node import Node
from mailslot.server.routes import ROUTES
from mailslot.server.storage import open_storage
from mailslot.server.storage.base import Storage
from mailslot.server.ws import websocket_endpoint

log = logging.getLogger("mailslot.server")
SEEN_FLUSH_S = 5.0  # how often the devices this node saw are written (each at most once a minute)


async def _mailslot_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MailslotError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFoundError("no such endpoint"))
    code = "method_not_allowed" if exc.status_code == 405 else "bad_request"
    return json_response({"error": code, "message": exc.detail}, exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ServerError("internal error"))


async def sweep_forever(node: Node) -> None:
    """Delete expired queue entries, bodies, link sessions and blobs (metadata first, then
    bytes), every ``sweep_interval_s``."""
    while True:
        await asyncio.sleep(node.config.sweep_interval_s)
        try:
            now = node.now_ms()
            expired = await node.store.expire(now)
            await node.store.expire_links(now)
            blobs = await node.blobs.expire(now)
            node.metrics.expired(expired, blobs)
            if expired:
                log.info("expired %d undelivered queue entries", expired)
            if blobs:
                log.info("expired %d blobs", blobs)
        except Exception:
            log.exception("sweeper failed; retrying at the next interval")


async def flush_seen_forever(node: Node) -> None:
    """Write the devices this node authenticated lately (``authn.LastSeen``), every
    ``SEEN_FLUSH_S``; last-seen times are informative, so a failure only logs."""
    while True:
        await asyncio.sleep(SEEN_FLUSH_S)
        await _flush_seen(node)


async def _flush_seen(node: Node) -> None:
    try:
        await node.authn.last_seen.flush(node.now_ms())
    except Exception:
        log.exception("writing last-seen times failed; retrying at the next interval")


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    config: ServerConfig, store: Storage | None = None, blob_store: BlobStore | None = None
) -> Starlette:
    """The app for one node; ``store`` and ``blob_store`` override the configured ones (tests).

    The running node is ``app.state.node`` (for the metrics listener, ``runner.py``)."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        storage = store or open_storage(config.storage_url, synchronous=config.sqlite_synchronous)
        blobs = blob_store or open_blob_store(config.blob_store_url)
        bus = open_bus(config.bus_url)
        await storage.open()
        try:
            await blobs.open()
            await bus.open()  # an unreachable Redis does not stop the node: it polls instead
            node = Node(config, storage, blobs, bus=bus, metrics=metrics)
            app.state.node = node
            sweeper = asyncio.create_task(sweep_forever(node))
            flusher = asyncio.create_task(flush_seen_forever(node))
            try:
                yield
            finally:
                await _stop(sweeper)
                await _stop(flusher)
                await _flush_seen(node)
                await bus.close()
                await blobs.close()
        finally:
            await storage.close()

    return Starlette(
        routes=[*ROUTES, WebSocketRoute("/v1/ws", websocket_endpoint)],
        exception_handlers={
            MailslotError: _mailslot_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        middleware=[Middleware(AccessLog, observe=metrics.request)],
        lifespan=lifespan,
    )
