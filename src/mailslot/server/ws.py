"""The WebSocket session: push a device's queue to it as mail arrives, take its acks.

The session sends every queued entry after the last one it sent, then waits for a wake-up from
the bus (or a periodic re-check, so a lost wake-up only delays), and repeats. Acks arrive as
frames at any time and delete entries at once. Entries stay queued until acked, so a dropped
connection loses nothing: the next session starts from the queue again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from mailslot.errors import InputError, MailslotError
from mailslot.protocol import wire
from mailslot.server.edge import error_response, node_of, target_of
from mailslot.server.node import Node
from mailslot.server.services.relay import delivery_of
from mailslot.server.storage.base import DeviceRow

log = logging.getLogger("mailslot.server.ws")
BATCH = 100


class _Session:
    def __init__(self, ws: WebSocket, node: Node, device: DeviceRow) -> None:
        self.ws = ws
        self.node = node
        self.device = device
        self._send_lock = asyncio.Lock()

    async def send(self, frame: wire.WsServerFrame) -> None:
        async with self._send_lock:
            await self.ws.send_text(wire.encode(frame).decode())

    async def push(self, wakeup: asyncio.Event, closed: asyncio.Task[None]) -> None:
        last_seq = 0
        while not closed.done():
            wakeup.clear()
            entries = await self.node.store.fetch_queue(self.device.device_id, last_seq, BATCH)
            for entry in entries:
                await self.send(wire.WsDeliver(delivery_of(entry)))
                last_seq = entry.seq
            if len(entries) == BATCH:
                continue
            waiter = asyncio.ensure_future(wakeup.wait())
            wait_s = self.recheck_s()
            await asyncio.wait({waiter, closed}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    def recheck_s(self) -> float:
        """How long to wait for a wake-up before looking anyway: shorter while the bus is down."""
        config = self.node.config
        return config.queue_recheck_s if self.node.bus.connected else config.queue_recheck_bus_down_s

    async def read_acks(self) -> None:
        """Take ack frames until the client goes away (then return, never raise)."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                await self._answer(await self.ws.receive_text())

    async def _answer(self, text: str) -> None:
        try:
            frame = wire.decode(text, wire.WsAck)
            deleted = await self.node.relay.ack(self.device, wire.AckRequest(frame.message_ids))
        except InputError as exc:
            await self.send(wire.WsError(exc.code, exc.message))
            return
        await self.send(wire.WsAcked(deleted))


async def _authenticate(ws: WebSocket) -> DeviceRow | None:
    node = node_of(ws)
    try:
        device = await node.authn.device(
            ws.headers.get("authorization"), "GET", target_of(ws), b"", node.now_ms()
        )
        node.device_limiter.check(device.device_id, node.now_ms() / 1000)
    except MailslotError as exc:
        log.info("websocket refused: %s", exc.message)
        await ws.send_denial_response(error_response(exc))
        return None
    return device


async def websocket_endpoint(ws: WebSocket) -> None:
    device = await _authenticate(ws)
    if device is None:
        return
    await ws.accept()
    node = node_of(ws)
    session = _Session(ws, node, device)
    with node.bus.listen(device.device_id) as wakeup, node.metrics.websocket():
        reader = asyncio.create_task(session.read_acks())
        try:
            await session.push(wakeup, reader)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away; its entries stay queued
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
