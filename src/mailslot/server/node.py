"""One server node's parts, wired together: storage, blob store, bus, services, limits, clock,
metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailslot.server.authn import Authenticator
from mailslot.server.blobs import BlobStore
from mailslot.server.bus import InProcessBus, WakeupBus
from mailslot.server.config import ServerConfig
from mailslot.server.limits import RateLimiter
from mailslot.server.metrics import Metrics
from mailslot.server.services.blobs import Blobs
from mailslot.server.services.directory import Directory
from mailslot.server.services.links import Links
from mailslot.server.services.relay import Relay
from mailslot.server.storage.base import Storage


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Node:
    config: ServerConfig
    store: Storage
    blob_store: BlobStore
    bus: WakeupBus = field(default_factory=InProcessBus)
    clock_ms: Callable[[], int] = wall_clock_ms
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.authn = Authenticator(self.store)
        self.directory = Directory(self.store, self.config, self.bus)
        self.relay = Relay(self.store, self.config, self.bus, self.metrics)
        self.links = Links(self.store, self.config)
        self.blobs = Blobs(self.store, self.blob_store, self.config, metrics=self.metrics)
        self.device_limiter = RateLimiter(self.config.rate_per_device_per_s, self.config.rate_burst)
        # Unauthenticated link requests are limited per client address instead.
        self.address_limiter = RateLimiter(1.0, 20)

    def now_ms(self) -> int:
        return self.clock_ms()
