"""Helpers for the client tests: devices set up against the real loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailslot.client import Client, KdfParams

FAST_KDF = KdfParams(log2_n=10, r=8, p=1)  # the tests open many keystores; keep scrypt cheap
PASSPHRASE = b"test passphrase"


class Devices:
    """Makes devices, each in its own home under ``tmp_path``, and closes them all at the end."""

    def __init__(self, live_server: Any, tmp_path: Path) -> None:
        self.server = live_server
        self.tmp_path = tmp_path
        self.opened: list[Client] = []

    async def register(self, handle: str) -> Client:
        """A new account ``handle`` with its first device."""
        client = await Client.register(
            self.tmp_path / f"home-{handle}",
            self.server.url,
            handle,
            passphrase=PASSPHRASE,
            ca=self.server.ca,
            kdf=FAST_KDF,
        )
        self.opened.append(client)
        return client

    async def link(self, existing: Client, name: str) -> Client:
        """A new device of ``existing``'s account, approved by ``existing``."""
        pending = await Client.start_link(
            self.tmp_path / f"home-{existing.handle}-{name}",
            self.server.url,
            passphrase=PASSPHRASE,
            ca=self.server.ca,
            device_name=name,
            kdf=FAST_KDF,
        )
        async with pending:
            waiter = asyncio.create_task(pending.wait(timeout=20))
            record = await existing.approve(pending.code)
            linked = await waiter
        self.opened.append(linked)
        assert record.device_id.hex() == linked.device_id
        return linked

    async def close(self) -> None:
        for client in self.opened:
            await client.close()


@pytest.fixture
async def devices(live_server: Any, tmp_path: Path) -> AsyncIterator[Devices]:
    made = Devices(live_server, tmp_path)
    yield made
    await made.close()
