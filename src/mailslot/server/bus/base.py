"""The wake-up bus interface: "device D has mail, look at its queue", nothing more.

A wake-up carries no message data, only a device id, so a lost one costs latency, never mail:
the queue is in the database, and WebSocket sessions also re-check it on a timer, more often
while ``connected`` is False (wake-ups from other nodes may then be lost).
"""

from __future__ import annotations

import abc
import asyncio
from contextlib import AbstractContextManager

__all__ = ["WakeupBus"]


class WakeupBus(abc.ABC):
    """Wake-ups between the tasks of one node, or across the nodes of one deployment."""

    async def open(self) -> None:  # noqa: B027 -- most buses have nothing to open
        """Start delivering. A bus that cannot reach its backend still opens (and keeps trying):
        the node then delivers by polling."""

    async def close(self) -> None:  # noqa: B027
        """Stop and release connections; listeners get no more wake-ups."""

    @property
    def connected(self) -> bool:
        """Whether wake-ups from every node reach this one right now."""
        return True

    @abc.abstractmethod
    async def notify(self, device_ids: list[bytes]) -> None:
        """Wake every listener of these devices, on every node. Never raises for an outage."""

    @abc.abstractmethod
    def listen(self, device_id: bytes) -> AbstractContextManager[asyncio.Event]:
        """Context manager: an event set whenever ``device_id`` is notified, until it exits.

        The event may also be set with no new mail (an outage begins or ends, or the bus starts
        carrying other nodes' wake-ups for the device): it means "look at the queue now"."""
