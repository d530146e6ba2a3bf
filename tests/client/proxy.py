"""A TCP relay on loopback, in front of the real server, that can cut a connection mid-way.

Real clients lose connections in the middle of a transfer; this is how the tests make that
happen without touching either side: the client talks TLS to the real server through the
relay, and the relay, when armed, forwards only so many more bytes in one direction and then
aborts both sockets (as a dropped link would). Nothing is mocked: both ends see a real TLS
stream cut at an arbitrary byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Direction = Literal["up", "down"]  # up: client to server; down: server to client
BUFFER = 64 * 1024


@dataclass
class _Arm:
    direction: Direction
    remaining: int


@dataclass
class CuttingProxy:
    target: str  # https://127.0.0.1:port of the real server
    cuts: int = 0
    connections: int = 0
    _arm: _Arm | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    def cut(self, direction: Direction, after: int) -> None:
        """Abort the connection that next carries ``after`` more bytes in ``direction``."""
        self._arm = _Arm(direction, after)

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        parts = urlsplit(self.target)
        server_r, server_w = await asyncio.open_connection(parts.hostname, parts.port)
        writers = (client_w, server_w)
        pumps = [
            asyncio.create_task(self._pump(client_r, server_w, "up", writers)),
            asyncio.create_task(self._pump(server_r, client_w, "down", writers)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            for writer in writers:
                writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        writers: tuple[asyncio.StreamWriter, ...],
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(BUFFER):
                arm = self._arm
                if arm is not None and arm.direction == direction and len(data) >= arm.remaining:
                    writer.write(data[: arm.remaining])
                    await writer.drain()
                    self._arm = None
                    self.cuts += 1
                    for w in writers:
                        w.transport.abort()
                    return
                if arm is not None and arm.direction == direction:
                    arm.remaining -= len(data)
                writer.write(data)
                await writer.drain()
        for w in writers:
            w.transport.abort()
