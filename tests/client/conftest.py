"""Helpers for the client tests: devices set up against the real loopback server."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailslot.client import Client, KdfParams
from mailslot.protocol.device_list import SignedDeviceList
from mailslot.protocol.identity import DeviceKeys

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
            try:
                record = await existing.approve(pending.code)
            except BaseException:
                waiter.cancel()  # never leave the waiting task behind a failed approval
                with contextlib.suppress(BaseException):
                    await waiter
                raise
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


class ServerDb:
    """Direct writes into the live server's database: what a malicious operator can do."""

    def __init__(self, live_server: Any) -> None:
        self.path: Path = live_server.data_dir / "mailslot.db"

    def execute(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            return conn.execute(sql, args).fetchall()

    def add_device(self, handle: str, keys: DeviceKeys) -> None:
        self.execute(
            "INSERT INTO devices (device_id, handle, sign_key) VALUES (?, ?, ?)",
            keys.device_id,
            handle,
            keys.sign_public,
        )

    def serve_list(self, handle: str, signed: SignedDeviceList) -> None:
        listed = signed.parse()
        self.execute(
            "UPDATE accounts SET account_key = ?, list_version = ?, device_list = ? WHERE handle = ?",
            listed.account_key,
            listed.version,
            signed.to_bytes(),
            handle,
        )

    def queued_for(self, keys: DeviceKeys) -> int:
        return int(self.execute("SELECT count(*) FROM queue WHERE device_id = ?", keys.device_id)[0][0])


@pytest.fixture
def server_db(live_server: Any) -> ServerDb:
    return ServerDb(live_server)
