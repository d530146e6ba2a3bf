"""The in-process bus: wake-ups between the tasks of one node (one process, one event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, KeysView
from contextlib import contextmanager

from mailslot.server.bus.base import WakeupBus

__all__ = ["InProcessBus"]


class InProcessBus(WakeupBus):
    """Listeners by device id, in memory. Also the local half of every other bus."""

    def __init__(self) -> None:
        self._listeners: dict[bytes, set[asyncio.Event]] = {}

    async def notify(self, device_ids: list[bytes]) -> None:
        self.wake(device_ids)

    def wake(self, device_ids: Iterable[bytes]) -> None:
        """``notify`` without awaiting: set the events of these devices' listeners."""
        for device_id in device_ids:
            for event in self._listeners.get(device_id, ()):
                event.set()

    def devices(self) -> KeysView[bytes]:
        """The devices that have at least one listener now (a live view)."""
        return self._listeners.keys()

    def wake_all(self) -> None:
        """Set every listener's event: "look now, whatever arrived"."""
        for listeners in self._listeners.values():
            for event in listeners:
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
