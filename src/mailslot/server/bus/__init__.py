"""The wake-up bus: tells the node that holds a device's socket that mail arrived.

One small interface (``base.py``), chosen by URL like the storage:

* ``memory://`` (the default): ``InProcessBus``, between the tasks of one node;
* ``redis://host:port/db?prefix=NAME`` (or ``rediss://``): ``RedisBus``, across the nodes of
  one deployment over Redis pub/sub; the ``redis`` package is imported only then.

A wake-up carries no message data, only "look at your queue", so a lost one costs latency,
never mail: WebSocket sessions also re-check their queue on a timer, and more often while the
bus is not ``connected``.
"""

from __future__ import annotations

from mailslot.errors import ConfigError
from mailslot.server.bus.base import WakeupBus
from mailslot.server.bus.memory import InProcessBus

__all__ = ["InProcessBus", "WakeupBus", "open_bus"]


def open_bus(url: str = "memory://") -> WakeupBus:
    """The bus a URL names, not yet opened."""
    if url in {"", "memory://"}:
        return InProcessBus()
    if url.startswith(("redis://", "rediss://")):
        from mailslot.server.bus.redis import RedisBus  # redis only when used

        return RedisBus(url)
    raise ConfigError(f"unsupported bus URL {url!r}: use memory:// or redis://host:port/db?prefix=...")
