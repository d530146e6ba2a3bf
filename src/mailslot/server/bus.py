"""The wake-up bus: tells the connection that holds a device's socket that mail arrived.

It carries no message data, only "look at your queue", so a lost wake-up costs latency, never
mail: WebSocket sessions also re-check their queue on a timer. The in-process bus serves one
node; a Redis implementation of the same interface joins for several nodes.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


class WakeupBus(abc.ABC):
    @abc.abstractmethod
    async def notify(self, device_ids: list[bytes]) -> None:
        """Wake every listener of these devices."""

    @abc.abstractmethod
    def listen(self, device_id: bytes) -> AbstractContextManager[asyncio.Event]:
        """Context manager: an event set whenever ``device_id`` is notified."""


class InProcessBus(WakeupBus):
    """Wake-ups between tasks of one process."""

    def __init__(self) -> None:
        self._listeners: dict[bytes, set[asyncio.Event]] = {}

    async def notify(self, device_ids: list[bytes]) -> None:
        for device_id in device_ids:
            for event in self._listeners.get(device_id, ()):
                event.set()

    @contextmanager
    def listen(self, device_id: bytes) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._listeners.setdefault(device_id, set()).add(event)
        try:
            yield event
        finally:
            listeners = self._listeners.get(device_id)
            if listeners is not None:
                listeners.discard(event)
                if not listeners:
                    del self._listeners[device_id]
