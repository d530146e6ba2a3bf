"""The wake-up bus: one behavioural suite for every implementation, then what only Redis has
(several nodes, outages)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from mailslot.errors import ConfigError
from mailslot.server.bus import InProcessBus, WakeupBus, open_bus
from mailslot.server.bus.redis import RedisBus, parse_redis_url
from tests.server.services import CLOSED_PORT_REDIS_URL, redis_url

A, B, C = b"\x0a" * 16, b"\x0b" * 16, b"\x0c" * 16
PROMPT_S = 2.0  # a wake-up that takes longer than this is broken, not slow
QUIET_S = 0.3  # how long we watch for a wake-up that must not come
_RECONNECT_WITHIN_S = 8.0  # the subscriber notices a failed publish at its next read timeout (5 s)


async def woken(event: asyncio.Event, within: float = PROMPT_S) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), within)
    return event.is_set()


async def eventually(condition: object, within: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def settled(bus: WakeupBus, *events: asyncio.Event) -> None:
    """Wait until wake-ups from every node reach every device listened to on ``bus``, then
    forget ``events``: Redis wakes a device's listeners once when it confirms the device's
    subscription, since a wake-up published just before that was lost."""
    if isinstance(bus, RedisBus):
        assert await eventually(lambda: bus._confirmed >= set(bus._local.devices()))
    for event in events:
        event.clear()


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[WakeupBus]:
    """An opened bus of each implementation in turn (Redis with a prefix of its own)."""
    opened = open_bus("memory://" if request.param == "memory" else redis_url())
    await opened.open()
    yield opened
    await opened.close()


# --- every implementation ------------------------------------------------------------------------
async def test_connected_once_open(bus: WakeupBus) -> None:
    assert bus.connected


async def test_notify_wakes_the_listeners_of_that_device_only(bus: WakeupBus) -> None:
    with bus.listen(A) as a, bus.listen(B) as b:
        await settled(bus, a, b)
        await bus.notify([A])
        assert await woken(a)
        assert not await woken(b, QUIET_S)


async def test_many_listeners_and_many_devices(bus: WakeupBus) -> None:
    with bus.listen(A) as a1, bus.listen(A) as a2, bus.listen(B) as b, bus.listen(C) as c:
        await settled(bus, a1, a2, b, c)
        await bus.notify([A, B])
        assert all([await woken(a1), await woken(a2), await woken(b)])
        assert not await woken(c, QUIET_S)


async def test_a_listener_that_left_gets_nothing(bus: WakeupBus) -> None:
    with bus.listen(A) as gone:
        pass
    with bus.listen(A) as staying:
        await bus.notify([A])
        assert await woken(staying)
    assert not gone.is_set()


async def test_notify_with_nobody_listening(bus: WakeupBus) -> None:
    await bus.notify([])
    await bus.notify([A])
    with bus.listen(A) as a:
        await settled(bus, a)
        assert not await woken(a, QUIET_S)  # an earlier wake-up is not kept for later listeners


# --- choosing by URL -----------------------------------------------------------------------------
def test_memory_is_the_default() -> None:
    assert isinstance(open_bus(), InProcessBus)
    assert isinstance(open_bus("memory://"), InProcessBus)


def test_redis_url_and_prefix() -> None:
    bus = open_bus("redis://127.0.0.1:6379/2?prefix=site-a")
    assert isinstance(bus, RedisBus)
    assert bus.channel == "site-a:wakeup"
    assert parse_redis_url("rediss://:pw@host:6380/0?prefix=x&ssl_cert_reqs=none") == (
        "rediss://:pw@host:6380/0?ssl_cert_reqs=none",
        "x",
    )
    assert parse_redis_url("redis://host") == ("redis://host", "mailslot")


@pytest.mark.parametrize(
    "url",
    ["redis:///0", "redis://host/0?prefix=", "redis://host/0?prefix=a%20b", "kafka://host", "memory://x"],
)
def test_bad_bus_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_bus(url)


# --- Redis: several nodes ------------------------------------------------------------------------
async def test_wake_ups_cross_nodes() -> None:
    url = redis_url()
    first, second = open_bus(url), open_bus(url)
    await first.open()
    await second.open()
    try:
        with first.listen(A) as on_first, second.listen(A) as on_second, second.listen(B) as other:
            await settled(first, on_first)
            await settled(second, on_second, other)
            await first.notify([A])
            assert await woken(on_first)
            assert await woken(on_second)
            assert not await woken(other, QUIET_S)
    finally:
        await first.close()
        await second.close()


async def test_wake_ups_of_one_loop_iteration_share_a_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    url = redis_url()
    first, second = open_bus(url), open_bus(url)
    await first.open()
    await second.open()
    try:
        batches: list[list[bytes]] = []
        original = first._publish  # type: ignore[attr-defined]

        async def counting(device_ids: list[bytes]) -> None:
            batches.append(list(device_ids))
            await original(device_ids)

        monkeypatch.setattr(first, "_publish", counting)
        devices = [bytes([i]) * 16 for i in range(40)]
        with contextlib.ExitStack() as stack:
            events = [stack.enter_context(second.listen(d)) for d in devices]
            await settled(second, *events)
            for device in devices:
                await first.notify([device])
            for event in events:
                assert await woken(event)
        assert 1 <= len(batches) < len(devices)
        assert sorted(d for batch in batches for d in batch) == devices
    finally:
        await first.close()
        await second.close()


async def test_only_the_nodes_holding_a_device_hear_its_wake_ups(monkeypatch: pytest.MonkeyPatch) -> None:
    url = redis_url()
    first, second = open_bus(url), open_bus(url)
    await first.open()
    await second.open()
    try:
        heard: list[bytes] = []
        original = second._deliver  # type: ignore[attr-defined]

        def counting(channel: bytes, payload: bytes) -> None:
            heard.append(channel)
            original(channel, payload)

        monkeypatch.setattr(second, "_deliver", counting)
        await first.notify([A, B])  # nobody holds them: Redis drops both
        await asyncio.sleep(QUIET_S)  # (published before second subscribes below)
        with second.listen(B) as b:
            await settled(second, b)
            await first.notify([A, B])
            assert await woken(b)
        assert await eventually(lambda: B not in second._confirmed)  # type: ignore[attr-defined]
        await first.notify([A, B])  # the last listener of B left: unsubscribed
        with first.listen(C) as c:
            await settled(first, c)
            await first.notify([C])  # its own wake-up comes back to first, which ignores it
            await asyncio.sleep(QUIET_S)
        assert heard == [f"{second.channel}:{B.hex()}".encode()]  # type: ignore[attr-defined]
    finally:
        await first.close()
        await second.close()


async def test_a_new_listener_is_woken_once_redis_has_its_subscription() -> None:
    bus = open_bus(redis_url())
    await bus.open()
    try:
        with bus.listen(A) as a:
            assert await woken(a)  # a wake-up published before the subscription would be lost
            a.clear()
            with bus.listen(A) as again:  # the device's channel is subscribed already
                assert not await woken(again, QUIET_S)
    finally:
        await bus.close()


async def test_wake_ups_from_nodes_on_the_shared_channel() -> None:
    """Nodes of an earlier version publish every wake-up to ``PREFIX:wakeup``."""
    bus = open_bus(redis_url())
    await bus.open()
    try:
        with bus.listen(A) as a, bus.listen(B) as b:
            await settled(bus, a, b)
            client = bus._client  # type: ignore[attr-defined]
            await client.publish(bus.channel, b"0123456789abcdef " + A.hex().encode())  # type: ignore[attr-defined]
            assert await woken(a)
            assert not await woken(b, QUIET_S)
    finally:
        await bus.close()


async def test_prefixes_keep_deployments_apart() -> None:
    ours, theirs = open_bus(redis_url()), open_bus(redis_url())
    await ours.open()
    await theirs.open()
    try:
        with theirs.listen(A) as event:
            await settled(theirs, event)
            await ours.notify([A])
            assert not await woken(event, QUIET_S)
    finally:
        await ours.close()
        await theirs.close()


# --- Redis: outages ------------------------------------------------------------------------------
async def test_unreachable_redis_degrades_to_local_wake_ups(caplog: pytest.LogCaptureFixture) -> None:
    bus = RedisBus(CLOSED_PORT_REDIS_URL, backoff_min_s=0.01, backoff_max_s=0.05)
    with caplog.at_level(logging.WARNING, logger="mailslot.server.bus"):
        await bus.open()
        try:
            assert not bus.connected
            with bus.listen(A) as event:
                for _ in range(50):
                    await bus.notify([A])  # never raises
                assert await woken(event)
            await asyncio.sleep(0.3)  # several reconnect attempts fail meanwhile
        finally:
            await bus.close()
    outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outages) == 1  # once per outage, not per attempt or per message


class Proxy:
    """A TCP proxy to Redis that the test can cut and restore, to stage an outage."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


async def test_outage_and_recovery(caplog: pytest.LogCaptureFixture) -> None:
    url = redis_url()
    proxy = Proxy(url)
    await proxy.start()
    query = urlsplit(url).query
    behind_proxy = RedisBus(
        f"redis://127.0.0.1:{proxy.port}/0?{query}", backoff_min_s=0.02, backoff_max_s=0.1
    )
    direct = open_bus(url)
    await behind_proxy.open()
    await direct.open()
    try:
        with behind_proxy.listen(A) as event, caplog.at_level(logging.WARNING, logger="mailslot.server.bus"):
            assert behind_proxy.connected
            await proxy.cut()
            assert await eventually(lambda: not behind_proxy.connected)
            assert await woken(event)  # the outage wakes sessions, so they switch to fast polling
            event.clear()
            await direct.notify([A])  # lost: nobody carries it to the cut-off node
            await behind_proxy.notify([B])  # does not raise
            await proxy.start()  # same port
            assert await eventually(lambda: behind_proxy.connected)
            assert await woken(event)  # catching up on whatever was lost meanwhile
            await settled(behind_proxy, event)
            await direct.notify([A])
            assert await woken(event)
            with direct.listen(B) as on_direct:
                await settled(direct, on_direct)
                await behind_proxy.notify([B])  # its publishing connection was cut too: a new one
                assert await woken(on_direct)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("unreachable" in m for m in messages) == 1
        assert sum("reachable again" in m for m in messages) == 1
    finally:
        await behind_proxy.close()
        await direct.close()
        with contextlib.suppress(AssertionError):
            await proxy.cut()


async def test_a_failed_publish_is_an_outage_until_the_subscriber_reconnects(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bus = RedisBus(redis_url(), backoff_min_s=0.02, backoff_max_s=0.1)
    await bus.open()
    try:
        original = bus._publish

        async def failing(device_ids: list[bytes]) -> None:
            monkeypatch.setattr(bus, "_publish", original)
            raise OSError("connection reset")

        monkeypatch.setattr(bus, "_publish", failing)
        with bus.listen(A) as event, caplog.at_level(logging.WARNING, logger="mailslot.server.bus"):
            await settled(bus, event)
            await bus.notify([B])
            assert await eventually(lambda: not bus.connected)
            assert await woken(event)  # sessions switch to fast polling
            assert await eventually(lambda: bus.connected, within=_RECONNECT_WITHIN_S)
            await settled(bus, event)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("unreachable" in m for m in messages) == 1
        assert sum("reachable again" in m for m in messages) == 1
    finally:
        await bus.close()
