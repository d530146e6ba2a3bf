"""The Redis bus: wake-ups across the nodes of one deployment, over Redis pub/sub.

URL: ``redis://[:password@]host:port/db?prefix=NAME`` (or ``rediss://`` for TLS). ``NAME``
defaults to ``mailslot``; deployments or test runs sharing a Redis use different prefixes.

One channel per device, ``NAME:wakeup:<device id in hex>``: a node subscribes to a device's
channel while it holds at least one socket of that device and unsubscribes when the last one
closes, so Redis itself is the registry of which node holds which device and a wake-up reaches
only those nodes. Most devices are offline most of the time: their wake-ups cost the sending
node one ``PUBLISH`` and no other node anything. A wake-up message is the publishing bus's
random id, so a node ignores its own when they come back (it wakes its own listeners directly).
The wake-ups of one event-loop iteration, and every one queued while a publish is on its way,
go out together: one pipeline of one ``PUBLISH`` per device (redis-py, one round trip).

Subscribing takes a round trip, and a wake-up published before Redis has the subscription
reaches nobody; so when Redis confirms a device's subscription, the bus wakes that device's
listeners once ("look now"), and a session that looked at its queue too early looks again.

Every node also subscribes to ``NAME:wakeup`` itself: its confirmation says the connection
works, and it still carries the wake-ups of nodes from before per-device channels (payload: the
publisher's id, then the devices' hex ids, separated by spaces).

Redis keeps nothing here, so an outage loses only wake-ups. While Redis is unreachable the bus
says ``connected = False`` (WebSocket sessions then re-check their queues more often), does
not try to publish, reconnects with jittered exponential backoff, logs once when the outage
starts and once when it ends, and then wakes every local listener, since wake-ups published
meanwhile were lost. A failed publish counts as an outage too: the subscriber then reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mailslot.errors import ConfigError
from mailslot.server.bus.base import WakeupBus
from mailslot.server.bus.memory import InProcessBus

__all__ = ["RedisBus", "parse_redis_url"]

log = logging.getLogger("mailslot.server.bus")

DEFAULT_PREFIX = "mailslot"
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_READ_TIMEOUT_S = 5.0  # how long one read waits for a message before looping (health checks)
_CHANNELS_PER_COMMAND = 1000  # (un)subscribing many devices at once, e.g. after a reconnect


def parse_redis_url(url: str) -> tuple[str, str]:
    """(the URL for the Redis client, the channel prefix) of a bus URL."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ConfigError(f"unsupported Redis bus URL {redacted(url)!r}: use redis://host:port/db?prefix=...")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for key, value in query if key == "prefix"]
    prefix = prefixes[-1] if prefixes else DEFAULT_PREFIX
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError("the bus prefix must be 1-64 letters, digits or _ . : -")
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def redacted(url: str) -> str:
    """``url`` with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"))


class RedisBus(WakeupBus):
    """Wake-ups through Redis pub/sub, one channel per device, to the nodes that hold it."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 1.0,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        client_url, prefix = parse_redis_url(url)
        self.channel = f"{prefix}:wakeup"
        self._channel_bytes = self.channel.encode()
        self._device_prefix = f"{self.channel}:".encode()
        self._shown_url = redacted(client_url)
        self._origin = secrets.token_hex(8).encode()
        self._local = InProcessBus()
        self._connect_timeout_s = connect_timeout_s
        self._backoff = (backoff_min_s, backoff_max_s)
        try:
            # Our loop does the reconnecting (with backoff, logging once), so the client must
            # not retry on its own; the timeouts keep a publish from hanging on a lost server.
            self._client: Redis = Redis.from_url(
                client_url,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=max(connect_timeout_s, 1.0),
                socket_keepalive=True,
                health_check_interval=30,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"bad Redis bus URL {self._shown_url!r}: {exc}") from exc
        self._connected = False
        self._outage_since: float | None = None
        self._tried = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None  # the subscriber's connection while it works
        self._subscribed: set[bytes] = set()  # devices whose channel it asked Redis for
        self._confirmed: set[bytes] = set()  # ... and Redis confirmed
        self._syncer: asyncio.Task[None] | None = None
        self._pending: set[bytes] = set()  # devices to announce in the next publish
        self._publisher: asyncio.Task[None] | None = None

    # --- the interface -----------------------------------------------------------------------
    async def open(self) -> None:
        """Start the subscriber; wait (briefly) for its first attempt, whatever its outcome."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._subscribe_forever(), name="mailslot-redis-bus")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tried.wait(), self._connect_timeout_s * 3)

    async def close(self) -> None:
        for name in ("_publisher", "_syncer", "_reader"):
            task: asyncio.Task[None] | None = getattr(self, name)
            setattr(self, name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._connected = False
        await self._client.aclose()

    @property
    def connected(self) -> bool:
        return self._connected

    async def notify(self, device_ids: list[bytes]) -> None:
        """Wake local listeners now; announce to other nodes in the next batched publish.

        The send that calls this does not wait for Redis: the wake-ups of one loop iteration,
        and every one queued while a publish is on its way, go out together in the next
        publish. A lost wake-up only delays (nodes re-check).
        """
        if not device_ids:
            return
        self._local.wake(device_ids)
        if not self._connected:
            return  # nobody would hear it; the other nodes are polling meanwhile
        self._pending.update(device_ids)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_pending(), name="mailslot-redis-publish")

    async def _publish_pending(self) -> None:
        await asyncio.sleep(0)  # let the other sends of this loop iteration join the batch
        while self._pending and self._connected:
            batch, self._pending = self._pending, set()
            try:
                await self._publish(batch)
            except (RedisError, OSError) as exc:
                self._lost(exc)
        self._pending.clear()

    async def _publish(self, device_ids: Iterable[bytes]) -> None:
        """One ``PUBLISH`` per device, sent as one pipeline (no transaction: each stands alone)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for device_id in device_ids:
                pipe.publish(self._device_prefix + device_id.hex().encode(), self._origin)
            await pipe.execute()

    def listen(self, device_id: bytes) -> AbstractContextManager[asyncio.Event]:
        return self._listen(device_id)

    @contextmanager
    def _listen(self, device_id: bytes) -> Iterator[asyncio.Event]:
        try:
            with self._local.listen(device_id) as event:
                self._sync_soon()  # subscribe to the device's channel if it is new here
                yield event
        finally:
            self._sync_soon()  # unsubscribe if that was its last listener

    # --- the subscriber ----------------------------------------------------------------------
    async def _subscribe_forever(self) -> None:
        delay = self._backoff[0]
        while True:
            pubsub = self._client.pubsub()
            try:
                await self._subscribe(pubsub)
                delay = self._backoff[0]
                await self._read(pubsub)
            except (RedisError, OSError) as exc:
                self._lost(exc)
            finally:
                self._pubsub = None
                self._tried.set()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff[1])

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Subscribe and wait for Redis to confirm: wake-ups published after this reach us.
        Then subscribe to the channels of the devices held here (confirmed while reading)."""
        await pubsub.subscribe(self.channel)
        deadline = asyncio.get_running_loop().time() + self._connect_timeout_s * 3
        while asyncio.get_running_loop().time() < deadline:
            message = await pubsub.get_message(timeout=self._connect_timeout_s)
            if message is not None and message["type"] == "subscribe":
                self._pubsub = pubsub
                self._subscribed, self._confirmed = set(), set()
                self._restored()
                self._sync_soon()
                return
        raise RedisError("Redis did not confirm the subscription")

    async def _read(self, pubsub: PubSub) -> None:
        while self._connected:  # a failed publish or subscribe ends it: reconnect
            message = await pubsub.get_message(timeout=_READ_TIMEOUT_S)
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                self._deliver(message["channel"], message["data"])
            elif kind == "subscribe":
                device_id = self._device_of(message["channel"])
                if device_id is not None:
                    self._confirmed.add(device_id)
                    self._local.wake([device_id])  # a wake-up published before this was lost
            elif kind == "unsubscribe":
                device_id = self._device_of(message["channel"])
                if device_id is not None:
                    self._confirmed.discard(device_id)
        raise RedisError("the bus lost a publish or a subscription")

    def _device_of(self, channel: bytes) -> bytes | None:
        if not channel.startswith(self._device_prefix):
            return None
        try:
            return bytes.fromhex(channel[len(self._device_prefix) :].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        if payload == self._origin:
            return  # ours, already delivered locally
        device_id = self._device_of(channel)
        if device_id is not None:
            self._local.wake([device_id])
        elif channel == self._channel_bytes:
            self._deliver_shared(payload)

    def _deliver_shared(self, payload: bytes) -> None:
        """A wake-up on the shared channel, from a node of an earlier version."""
        origin, _, ids = payload.partition(b" ")
        if origin == self._origin:
            return
        try:
            device_ids = [bytes.fromhex(h.decode("ascii")) for h in ids.split()]
        except (ValueError, UnicodeDecodeError):
            log.debug("ignored a malformed wake-up on %s", self.channel)
            return
        self._local.wake(device_ids)

    # --- which device channels the subscriber holds ------------------------------------------
    def _sync_soon(self) -> None:
        """Bring the subscriptions in line with the local listeners, in a task of its own."""
        if self._pubsub is not None and (self._syncer is None or self._syncer.done()):
            self._syncer = asyncio.create_task(self._sync(), name="mailslot-redis-subscriptions")

    async def _sync(self) -> None:
        pubsub = self._pubsub
        while pubsub is not None and pubsub is self._pubsub:
            wanted = self._local.devices()
            add = [d for d in wanted if d not in self._subscribed][:_CHANNELS_PER_COMMAND]
            drop = [d for d in self._subscribed if d not in wanted][:_CHANNELS_PER_COMMAND]
            if not add and not drop:
                return
            self._subscribed.update(add)
            self._subscribed.difference_update(drop)
            try:
                if add:
                    await pubsub.subscribe(*(self._device_prefix + d.hex().encode() for d in add))
                if drop:
                    await pubsub.unsubscribe(*(self._device_prefix + d.hex().encode() for d in drop))
            except (RedisError, OSError) as exc:
                self._lost(exc)  # the subscriber reconnects and subscribes afresh
                return

    # --- outages -----------------------------------------------------------------------------
    def _lost(self, exc: BaseException) -> None:
        self._connected = False
        if self._outage_since is None:
            self._outage_since = asyncio.get_running_loop().time()
            log.warning(
                "wake-up bus: Redis at %s is unreachable (%s); delivering by polling until it returns",
                self._shown_url,
                exc or type(exc).__name__,
            )
            self._local.wake_all()  # sessions look now, and from now on poll at the shorter interval

    def _restored(self) -> None:
        self._connected = True
        self._tried.set()
        if self._outage_since is not None:
            lasted = asyncio.get_running_loop().time() - self._outage_since
            self._outage_since = None
            log.warning("wake-up bus: Redis at %s is reachable again after %.1f s", self._shown_url, lasted)
            self._local.wake_all()  # wake-ups published during the outage were lost: catch up
