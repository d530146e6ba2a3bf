"""Delivery latency at a steady send rate, recipients on the WebSocket.

Sends leave on a fixed schedule (open loop: a slow answer does not delay the next send), and
each delivery's latency is measured from its message's *scheduled* send time to the moment the
recipient's WebSocket frame is read, on one clock (sender and recipients share this process).
Measuring from the schedule rather than from when the request actually left means a stalled
load generator shows up as latency instead of hiding it. Each recipient acks every message as it
arrives, as a client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field

import msgspec
from _load import Connections, Prepared, authorization
from websockets.asyncio.client import ClientConnection, connect

from mailslot.protocol import wire
from mailslot.protocol.identity import DeviceKeys

SETTLE_S = 10.0  # how long to wait for the last deliveries after the last send
_frames = msgspec.json.Decoder(wire.WsServerFrame)


@dataclass
class LatencyResult:
    rate: float
    sent: int
    expected: int
    statuses: dict[int, int] = field(default_factory=dict)
    delivery_ms: list[float] = field(default_factory=list)  # scheduled send -> frame read
    accept_ms: list[float] = field(default_factory=list)  # scheduled send -> 201 read
    errors: list[str] = field(default_factory=list)


class _Receivers:
    """One WebSocket per recipient device, all reading into the same result."""

    def __init__(self, result: LatencyResult, scheduled: dict[str, float]) -> None:
        self.result = result
        self.scheduled = scheduled
        self.all_in = asyncio.Event()
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.acks_sent = 0
        self.acks_answered = 0
        self.acks_settled = asyncio.Event()

    async def connect(self, url: str, context: ssl.SSLContext, devices: list[DeviceKeys]) -> None:
        ws_url = url.replace("https://", "wss://") + "/v1/ws"
        for keys in devices:
            headers = {"Authorization": authorization(keys, "GET", "/v1/ws", b"")}
            ws = await connect(ws_url, ssl=context, additional_headers=headers, max_size=2**24)
            self.sockets.append(ws)
            self.tasks.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):  # the socket closing ends the reader
            async for text in ws:
                arrived = time.perf_counter()
                frame = _frames.decode(text)
                if isinstance(frame, wire.WsDevices):
                    continue  # the account's list version, announced at connect: not mail
                if isinstance(frame, wire.WsError):
                    self.result.errors.append(f"{frame.error}: {frame.message}")
                if not isinstance(frame, wire.WsDeliver):
                    self.acks_answered += 1  # an ack's answer: acked, or an error
                    if self.acks_answered >= self.acks_sent:
                        self.acks_settled.set()
                    continue
                message_id = frame.delivery.message_id
                sent_at = self.scheduled.get(message_id)
                if sent_at is not None:  # else left over from an earlier phase: just ack it
                    self.result.delivery_ms.append((arrived - sent_at) * 1000)
                    if len(self.result.delivery_ms) >= self.result.expected:
                        self.all_in.set()
                self.acks_sent += 1
                self.acks_settled.clear()
                await ws.send(wire.encode(wire.WsAck([message_id])).decode())

    async def close(self) -> None:
        """Wait (a little) for the answers to every ack, as a client would, then hang up."""
        if self.acks_answered < self.acks_sent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acks_settled.wait(), SETTLE_S)
        for ws in self.sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _send_on_schedule(
    conns: Connections,
    requests: list[Prepared],
    rate: float,
    scheduled: dict[str, float],
    result: LatencyResult,
) -> None:
    async def post(req: Prepared, at: float) -> None:
        response = await conns.send(req)
        result.accept_ms.append((time.perf_counter() - at) * 1000)
        result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1

    start = time.perf_counter() + 0.05
    tasks = []
    for i, req in enumerate(requests):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled[req.key] = at
        tasks.append(asyncio.create_task(post(req, at)))
    await asyncio.gather(*tasks)


async def measure(
    conns: Connections,
    context: ssl.SSLContext,
    devices: list[DeviceKeys],
    requests: list[Prepared],
    rate: float,
) -> LatencyResult:
    """Connect every recipient device, send ``requests`` at ``rate`` per second, collect."""
    result = LatencyResult(rate, len(requests), len(requests) * len(devices))
    scheduled: dict[str, float] = {}
    receivers = _Receivers(result, scheduled)
    try:
        await receivers.connect(conns.url, context, devices)
        await asyncio.sleep(0.2)  # let each session subscribe and find its queue empty
        await _send_on_schedule(conns, requests, rate, scheduled, result)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receivers.all_in.wait(), SETTLE_S)
    finally:
        await receivers.close()
    return result
