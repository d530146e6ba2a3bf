"""The load generator: accounts, pre-sealed and pre-signed sends, a closed loop, queue draining.

Everything a timed run sends is built before the clock starts: messages are sealed
(``seal_message``) and requests signed (``sign_request``) up front, so the timed part costs the
client only what httpx costs per request, and that cost is the same for the baseline and the
relay (same ``run_closed`` code, same header and body bytes, only the port differs).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from mailslot.protocol import crypto, wire
from mailslot.protocol.auth import NONCE_SIZE, sign_request
from mailslot.protocol.device_list import DeviceList, DeviceRecord, sign_device_list
from mailslot.protocol.identity import AccountKey, DeviceKeys
from mailslot.protocol.message import KIND_TEXT, Content, members_of, seal_message

PAGE = 100
REQUEST_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 120.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def authorization(keys: DeviceKeys, method: str, target: str, body: bytes) -> str:
    sig = sign_request(keys, method, target, body, now_ms=now_ms(), nonce=os.urandom(NONCE_SIZE))
    return sig.to_header()


@dataclass
class Account:
    handle: str
    devices: list[DeviceKeys]
    key: AccountKey = field(default_factory=AccountKey.generate)

    @classmethod
    def generate(cls, handle: str, devices: int) -> Account:
        return cls(handle, [DeviceKeys.generate() for _ in range(devices)])

    def signed_list(self) -> bytes:
        records = [
            DeviceRecord(k.device_id, k.sign_public, crypto.SUITE, k.enc_public, f"dev{i}", 1)
            for i, k in enumerate(self.devices)
        ]
        listed = DeviceList.build(
            self.handle, self.key.public, 1, now_ms(), records,
            approver=self.devices[0].device_id, recovery_key=AccountKey.generate().public,
        )
        return sign_device_list(listed, self.key, self.devices[0]).to_bytes()


def _fail_sniffio_fast() -> None:
    """Make httpcore's per-request ``import sniffio`` fail at once when sniffio is missing.

    httpcore 1.0 imports sniffio on every request to learn the async library and falls back to
    asyncio when it is absent (anyio 4.11+ no longer installs it). A failed import is not cached,
    so each request searched ``sys.path`` again: about 100 µs of client CPU per request. A
    ``None`` entry in ``sys.modules`` gives the same ImportError without the search.
    """
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


class Connections:
    """``count`` keep-alive HTTP/1.1 connections to one server, each its own httpx.AsyncClient.

    One AsyncClient with a pool of ``count`` would do, but httpcore walks every pooled connection
    (asking each TLS stream whether it is readable) on every request, which at 16 connections
    costs the load generator more CPU than the bare server spends per request. A client per
    connection keeps the generator's cost flat; the server sees the same 16 connections.
    """

    def __init__(self, url: str, context: ssl.SSLContext, count: int) -> None:
        _fail_sniffio_fast()
        self.url = url
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.clients = [
            httpx.AsyncClient(verify=context, limits=limits, timeout=REQUEST_TIMEOUT_S) for _ in range(count)
        ]
        self._free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self.clients:
            self._free.put_nowait(client)

    async def warm_up(self) -> None:
        """Open every connection (TLS handshakes are not part of any timed run)."""
        for _ in range(3):
            await asyncio.gather(*(c.get(self.url + "/health") for c in self.clients))

    async def send(self, req: Prepared) -> httpx.Response:
        """Send on the first free connection, waiting for one if all are busy."""
        client = await self._free.get()
        try:
            return await self.send_on(client, req)
        finally:
            self._free.put_nowait(client)

    async def send_on(self, client: httpx.AsyncClient, req: Prepared) -> httpx.Response:
        return await client.request(req.method, self.url + req.path, content=req.body, headers=req.headers)

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))


async def register(conns: Connections, account: Account) -> None:
    body = wire.encode(wire.RegisterRequest(account.handle, account.signed_list()))
    headers = {
        "content-type": "application/json",
        "authorization": authorization(account.devices[0], "POST", "/v1/accounts", body),
    }
    response = await conns.clients[0].post(conns.url + "/v1/accounts", content=body, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(f"registering {account.handle}: {response.status_code} {response.text}")


@dataclass
class Send:
    """One sealed message, ready to sign: who sends it and the exact JSON body."""

    message_id: str
    sender: DeviceKeys
    body: bytes


def seal_sends(senders: list[Account], recipients: list[Account], count: int, size: int) -> list[Send]:
    """``count`` messages of ``size`` bytes of text, round-robin over the (one-device) senders."""
    targets = {k.device_id: k.enc_public for a in recipients for k in a.devices}
    handles = sorted(a.handle for a in recipients)
    text = b"x" * size
    sends = []
    for i in range(count):
        sender = senders[i % len(senders)]
        keys = sender.devices[0]
        content = Content(
            sender.handle,
            keys.device_id,
            members_of(sender.handle, handles),
            os.urandom(16),
            now_ms(),
            KIND_TEXT,
            text,
        )
        sealed = seal_message(content, keys, targets)
        request = wire.SendRequest(
            content.message_id.hex(),
            handles,
            sealed.body,
            {dev.hex(): key for dev, key in sealed.wrapped_keys.items()},
            {h: 1 for h in members_of(sender.handle, handles)},  # every list is still version 1
        )
        sends.append(Send(content.message_id.hex(), keys, wire.encode(request)))
    return sends


@dataclass(frozen=True)
class Prepared:
    """A request with its headers signed: sent as is, to the relay or to the baseline."""

    key: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def presign(sends: list[Send]) -> list[Prepared]:
    """Sign every send now; the signatures stay fresh for the protocol's five minutes."""
    return [
        Prepared(
            s.message_id,
            "POST",
            "/v1/messages",
            {
                "content-type": "application/json",
                "authorization": authorization(s.sender, "POST", "/v1/messages", s.body),
            },
            s.body,
        )
        for s in sends
    ]


@dataclass
class RunResult:
    elapsed_s: float
    statuses: Counter[int]

    def rate(self, status: int) -> float:
        return self.statuses[status] / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def run_closed(conns: Connections, requests: list[Prepared]) -> RunResult:
    """Send every request over all connections at once, each sending its next request as soon as
    the previous answer is read (closed loop); returns the wall time and the count of each status.
    """
    statuses: Counter[int] = Counter()
    position = iter(requests)

    async def worker(client: httpx.AsyncClient) -> None:
        for req in position:  # a shared iterator: each request is taken by exactly one worker
            response = await conns.send_on(client, req)
            statuses[response.status_code] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns.clients))
    return RunResult(time.perf_counter() - start, statuses)


async def _ack(client: httpx.AsyncClient, url: str, keys: DeviceKeys, ids: list[str]) -> None:
    body = wire.encode(wire.AckRequest(ids))
    headers = {
        "content-type": "application/json",
        "authorization": authorization(keys, "POST", "/v1/queue/ack", body),
    }
    response = await client.post(url + "/v1/queue/ack", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"ack: {response.status_code} {response.text}")


async def _drain_device(
    fetcher: httpx.AsyncClient, acker: httpx.AsyncClient, url: str, keys: DeviceKeys, expected: int
) -> int:
    """Fetch pages and ack each one (on a second connection) while fetching the next, until
    ``expected`` entries arrived; returns how many did."""
    after, received, acking = 0, 0, None
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while received < expected and time.monotonic() < deadline:
        target = f"/v1/queue?after={after}&limit={PAGE}"
        headers = {"authorization": authorization(keys, "GET", target, b"")}
        response = await fetcher.get(url + target, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"fetch: {response.status_code} {response.text}")
        page = wire.decode(response.content, wire.QueueResponse).messages
        if acking is not None:
            await acking
            acking = None
        if not page:
            await asyncio.sleep(0.05)  # not expected: everything was accepted before draining
            continue
        after = page[-1].seq
        received += len(page)
        acking = asyncio.ensure_future(_ack(acker, url, keys, [d.message_id for d in page]))
    if acking is not None:
        await acking
    return received


async def drain(conns: Connections, devices: list[DeviceKeys], expected: int) -> tuple[float, int]:
    """Every device fetches and acks its whole queue, all at once; (seconds, deliveries)."""
    c = conns.clients
    start = time.perf_counter()
    counts = await asyncio.gather(
        *(
            _drain_device(c[2 * i % len(c)], c[(2 * i + 1) % len(c)], conns.url, k, expected)
            for i, k in enumerate(devices)
        )
    )
    return time.perf_counter() - start, sum(counts)
