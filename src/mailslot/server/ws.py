"""The WebSocket session: push a device's queue to it as mail arrives, take its acks, and tell
it when its account's device list changes.

Right after the handshake the session announces the account's current list version
(``WsDevices``). Then it sends every queued entry after the last one it sent, waits for a
wake-up from the bus (or a periodic re-check, so a lost wake-up only delays), and repeats.
Each time it wakes it re-reads its device (one ``get_device`` lookup): a device that a list
removed, or whose account was disabled, gets a ``WsError`` and the session closes; a newer list
version is announced with another ``WsDevices``; a device still connected counts as seen.
Acks arrive as frames at any time and delete entries at once. Entries stay queued until
acked, so a dropped connection loses nothing: the next session starts from the queue again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from mailslot.errors import AuthenticationError, DeviceRemoved, InputError, MailslotError
from mailslot.protocol import wire
from mailslot.server.authn import removal_error
from mailslot.server.edge import error_response, node_of, target_of
from mailslot.server.node import Node
from mailslot.server.services.relay import delivery_of
from mailslot.server.storage.base import DeviceRow

log = logging.getLogger("mailslot.server.ws")
BATCH = 100
ROW_CHECK_S = 0.5  # how often a session re-reads its device row at most (removal, list version)
POLICY_VIOLATION = 1008  # the close code after an error frame that ends the session


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
        """Announce, deliver, wait, re-check; until the client leaves or the device is gone.

        The device row is re-read at most every ``ROW_CHECK_S`` (a wake-up in between
        delivers, and shortens the next wait so the check still comes that soon): under load a
        session wakes for nearly every message, and a removed device has lost its queue with
        its row anyway, so only the announcement and the close wait for the check."""
        last_seq = 0
        announced = self.device.list_version
        await self.send(wire.WsDevices(announced))
        loop = asyncio.get_running_loop()
        checked_at, check_owed = loop.time(), False
        while True:
            wakeup.clear()
            last_seq = await self._deliver(last_seq)
            wait_s = self.recheck_s()
            if check_owed:
                wait_s = min(wait_s, max(0.0, checked_at + ROW_CHECK_S - loop.time()))
            waiter = asyncio.ensure_future(wakeup.wait())
            await asyncio.wait({waiter, closed}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if closed.done():
                return
            if loop.time() - checked_at < ROW_CHECK_S:
                check_owed = True
                continue
            checked_at, check_owed = loop.time(), False
            still = await self._check_device(announced)
            if still is None:
                return
            announced = still

    async def _check_device(self, announced: int) -> int | None:
        """Re-read the device: close the session if it was removed or its account disabled
        (None), else announce a newer list version; the version announced now."""
        row = await self.node.store.get_device(self.device.device_id)
        if row is None or row.account_disabled:
            refusal = await _refusal(self.node, self.device.device_id, row)
            await _close_with_error(self.ws, refusal, self._send_lock)
            return None
        self.node.authn.last_seen.seen(row.device_id, self.node.now_ms())  # connected is seen
        if row.list_version > announced:
            await self.send(wire.WsDevices(row.list_version))
            return row.list_version
        return announced

    async def _deliver(self, last_seq: int) -> int:
        """Send every entry after ``last_seq``; the last one sent."""
        while True:
            entries = await self.node.store.fetch_queue(self.device.device_id, last_seq, BATCH)
            for entry in entries:
                await self.send(wire.WsDeliver(delivery_of(entry)))
                last_seq = entry.seq
            if len(entries) < BATCH:
                return last_seq

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


async def _close_with_error(ws: WebSocket, exc: MailslotError, send_lock: asyncio.Lock) -> None:
    """Send one ``WsError`` frame saying why the session ends, then close the socket."""
    log.info("websocket closed: %s", exc.message)
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        async with send_lock:
            await ws.send_text(wire.encode(wire.WsError(exc.code, exc.message)).decode())
        await ws.close(POLICY_VIOLATION)


async def _refusal(node: Node, device_id: bytes, row: DeviceRow | None) -> MailslotError:
    """Why a session's device may no longer be served: removed by a list, or account disabled."""
    if row is not None:
        return AuthenticationError("account disabled")
    removed = await node.store.removed_device(device_id)
    return removal_error(removed) if removed is not None else AuthenticationError("unknown device")


async def _authenticate(ws: WebSocket) -> DeviceRow | None:
    """The device that signed the handshake, or None once the socket was refused: with an HTTP
    error for most failures, with an accepted socket, a ``WsError`` frame and a close for a
    removed device (so its client reads why, as on any other request)."""
    node = node_of(ws)
    try:
        device = await node.authn.device(
            ws.headers.get("authorization"), "GET", target_of(ws), b"", node.now_ms()
        )
        node.device_limiter.check(device.device_id, node.now_ms() / 1000)
    except DeviceRemoved as exc:
        await ws.accept()
        await _close_with_error(ws, exc, asyncio.Lock())
        return None
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
