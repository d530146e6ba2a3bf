"""A connection that drops between storing a message and acknowledging it must not hide it.

The message is stored and marked seen before the ack; the server will deliver it again (it was
never acknowledged) and the copy will be dropped as seen. So the first delivery is the one
chance to show it, and it must be shown even though its ack was lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from tests.client.conftest import Devices


async def test_message_whose_ack_was_lost_is_shown_once(devices: Devices, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await devices.register("alice")
    bob = await devices.register("bob")
    original = ClientConnection.send
    dropped: list[Any] = []

    async def drop_first_ack(self: ClientConnection, message: Any, *args: Any, **kwargs: Any) -> None:
        if '"ack"' in str(message) and not dropped:
            dropped.append(message)
            await self.close()  # the connection goes away just as the ack would leave
            raise ConnectionClosedError(None, None)
        await original(self, message, *args, **kwargs)

    monkeypatch.setattr(ClientConnection, "send", drop_first_ack)
    shown: list[str] = []

    async def listen() -> None:
        try:
            async for message in bob.receive(timeout=4):
                shown.append(message.text)
        except ConnectionClosed:
            pass

    task = asyncio.create_task(listen())
    await asyncio.sleep(1.0)  # bob's socket is up
    await alice.send(["bob"], "hello")
    await task
    assert dropped, "the fault was not injected"
    later = [m.text async for m in bob.receive()]
    assert shown + later == ["hello"]
    assert [e.text for e in bob.history()] == ["hello"]
