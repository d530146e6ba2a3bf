"""The Redis bus: wake-ups across the nodes of one deployment, over Redis pub/sub.

URL: ``redis://[:password@]host:port/db?prefix=NAME`` (or ``rediss://`` for TLS). Every node
subscribes to one channel, ``NAME:wakeup`` (``NAME`` defaults to ``mailslot``; deployments or
test runs sharing a Redis use different prefixes). A wake-up is one message: the publishing
bus's random id, then the hex ids of the devices, separated by spaces. A node wakes its own
listeners directly and ignores its own messages when they come back.

Every node hears every wake-up and looks its devices up in a dict, which costs little at the
scale of a few nodes; per-device channels would be the next step past that.

Redis keeps nothing here, so an outage loses only wake-ups. While Redis is unreachable the bus
says ``connected = False`` (WebSocket sessions then re-check their queues more often), does
not try to publish, reconnects with jittered exponential backoff, logs once when the outage
starts and once when it ends, and then wakes every local listener, since wake-ups published
meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
from contextlib import AbstractContextManager
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
    """Wake-ups through one Redis pub/sub channel shared by every node."""

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
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._connected = False
        await self._client.aclose()

    @property
    def connected(self) -> bool:
        return self._connected

    async def notify(self, device_ids: list[bytes]) -> None:
        """Wake local listeners now; announce to other nodes in the next batched publish.

        The send that calls this does not wait for Redis: every wake-up queued while one
        publish is on its way goes out in the next one, so a busy node publishes once per
        round trip instead of once per message. A lost wake-up only delays (nodes re-check).
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
            payload = self._origin + b" " + b" ".join(d.hex().encode() for d in batch)
            try:
                await self._client.publish(self.channel, payload)
            except (RedisError, OSError) as exc:
                self._lost(exc)
        self._pending.clear()

    def listen(self, device_id: bytes) -> AbstractContextManager[asyncio.Event]:
        return self._local.listen(device_id)

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
                self._tried.set()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff[1])

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Subscribe and wait for Redis to confirm: wake-ups published after this reach us."""
        await pubsub.subscribe(self.channel)
        deadline = asyncio.get_running_loop().time() + self._connect_timeout_s * 3
        while asyncio.get_running_loop().time() < deadline:
            message = await pubsub.get_message(timeout=self._connect_timeout_s)
            if message is not None and message["type"] == "subscribe":
                self._restored()
                return
        raise RedisError("Redis did not confirm the subscription")

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_READ_TIMEOUT_S)
            if message is not None and message["type"] == "message":
                self._deliver(message["data"])

    def _deliver(self, payload: bytes) -> None:
        origin, _, ids = payload.partition(b" ")
        if origin == self._origin:
            return  # ours, already delivered locally
        try:
            device_ids = [bytes.fromhex(h.decode("ascii")) for h in ids.split()]
        except (ValueError, UnicodeDecodeError):
            log.debug("ignored a malformed wake-up on %s", self.channel)
            return
        self._local.wake(device_ids)

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
