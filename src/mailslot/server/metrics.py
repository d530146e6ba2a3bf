"""Prometheus metrics of one node, and the tiny ASGI app that serves them on their own listener.

``Metrics`` holds the node's own ``CollectorRegistry`` (never the global one, so several nodes
in one process keep separate counts). Services call one method of it where the event happens
(``relay.send``, ``relay.ack``, the sweeper, ``services/blobs.py``, ``ws.py``); each is an
increment, cheap enough for the relay's hot path. The queue gauges are read from storage only
when Prometheus scrapes (``Metrics.exposition``).

Labels hold only names chosen here (a route template, a status class, ``new``/``retry``):
never message content, keys, handles, device ids or anything else a client chose.

The listener (``MetricsEndpoint``) answers ``GET /metrics`` and nothing else; the runner serves
it on ``metrics_host:metrics_port`` (loopback by default), never on the API's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.exposition import choose_encoder
from starlette.types import Message, Receive, Scope, Send

from mailslot.server.storage.base import Storage

__all__ = ["Metrics", "MetricsEndpoint", "Observed"]

log = logging.getLogger("mailslot.server.metrics")

SCRAPE_STORAGE_TIMEOUT_S = 5.0  # a scrape waits this long for the queue gauges, then reports NaN


class Metrics:
    """The counters and gauges of one node, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        ProcessCollector(registry=reg)  # process_cpu_seconds_total, memory, open fds
        self._queue_entries = Gauge(
            "mailslot_queue_entries",
            "Queue entries not yet acknowledged, all devices (at scrape).",
            registry=reg,
        )
        self._queue_oldest = Gauge(
            "mailslot_queue_oldest_age_seconds",
            "Age of the oldest unacknowledged queue entry, 0 when the queues are empty (at scrape).",
            registry=reg,
        )
        sends = Counter(
            "mailslot_sends", "Sends accepted: new, or a retry of one already stored.", ["kind"], registry=reg
        )
        self._sends_new = sends.labels("new")
        self._sends_retry = sends.labels("retry")
        self._queued = Counter(
            "mailslot_queued_entries",
            "Queue entries created by new sends (one per recipient device).",
            registry=reg,
        )
        self._delivered = Counter(
            "mailslot_deliveries",
            "Queue entries acknowledged by their device (HTTP or WebSocket).",
            registry=reg,
        )
        self._expired = Counter(
            "mailslot_expired_entries", "Queue entries deleted unacknowledged by the sweeper.", registry=reg
        )
        self._expired_blobs = Counter("mailslot_expired_blobs", "Blobs deleted by the sweeper.", registry=reg)
        self._blobs_created = Counter(
            "mailslot_blobs_created", "Blobs created (size reserved).", registry=reg
        )
        self._blob_bytes = Counter(
            "mailslot_blob_upload_bytes",
            "Blob bytes committed by upload pieces (refused or cut-off pieces not counted).",
            registry=reg,
        )
        self._websockets = Gauge("mailslot_websocket_connections", "Open WebSocket sessions.", registry=reg)
        self._requests = Counter(
            "mailslot_http_requests",
            "Requests by route template and status class (WebSocket handshakes included).",
            ["route", "status"],
            registry=reg,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}

    # --- events, one call each where they happen ---------------------------------------------
    def sent(self, created: bool, entries: int) -> None:
        """A send was accepted: ``created`` with ``entries`` queue entries, or a retry."""
        if created:
            self._sends_new.inc()
            self._queued.inc(entries)
        else:
            self._sends_retry.inc()

    def delivered(self, entries: int) -> None:
        self._delivered.inc(entries)

    def expired(self, entries: int, blobs: int) -> None:
        self._expired.inc(entries)
        self._expired_blobs.inc(blobs)

    def blob_created(self) -> None:
        self._blobs_created.inc()

    def blob_bytes(self, committed: int) -> None:
        self._blob_bytes.inc(committed)

    @contextlib.contextmanager
    def websocket(self) -> Iterator[None]:
        """Count one open WebSocket session for the duration of the block."""
        self._websockets.inc()
        try:
            yield
        finally:
            self._websockets.dec()

    def request(self, route: str, status: int) -> None:
        """One HTTP request (or WebSocket session) finished; ``route`` is a template, ``status``
        0 if the client went away before an answer (label ``closed``)."""
        key = (route, status // 100)
        child = self._request_children.get(key)
        if child is None:
            label = f"{key[1]}xx" if status else "closed"
            child = self._request_children[key] = self._requests.labels(route, label)
        child.inc()

    # --- scrape ------------------------------------------------------------------------------
    async def refresh_queue(self, store: Storage, now_ms: int) -> None:
        """Set the queue gauges from storage; NaN (unknown) if it cannot answer in time."""
        try:
            async with asyncio.timeout(SCRAPE_STORAGE_TIMEOUT_S):
                entries, oldest = await store.queue_stats()
        except Exception as exc:
            log.warning("metrics: queue statistics unavailable: %s", type(exc).__name__)
            self._queue_entries.set(math.nan)
            self._queue_oldest.set(math.nan)
            return
        self._queue_entries.set(entries)
        self._queue_oldest.set(0.0 if oldest is None else max(0, now_ms - oldest) / 1000)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format ``accept`` asks for (Prometheus text by default)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class Observed(Protocol):
    """What the metrics listener needs of a running node (``Node`` has it)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def store(self) -> Storage: ...

    def now_ms(self) -> int: ...


class MetricsEndpoint:
    """ASGI app for the metrics listener: ``GET /metrics`` (and ``HEAD``), 404 elsewhere.

    ``find_node`` returns the running node, or None while it starts or after it stopped (then
    the answer is 503)."""

    def __init__(self, find_node: Callable[[], Observed | None]) -> None:
        self._find_node = find_node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        node = self._find_node()
        if scope["path"] != "/metrics":
            await _respond(send, 404, b"not found; metrics are at /metrics\n")
        elif scope["method"] not in {"GET", "HEAD"}:
            await _respond(send, 405, b"method not allowed\n")
        elif node is None:
            await _respond(send, 503, b"the node is not running\n")
        else:
            await node.metrics.refresh_queue(node.store, node.now_ms())
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            body, content_type = node.metrics.render(accept)
            await _respond(send, 200, body if scope["method"] == "GET" else b"", content_type, len(body))


async def _respond(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    length: int | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body) if length is None else length).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
