"""The server's blob limits as the client meets them: size, quota and expiry.

Each test sets the live server's limits (``server_settings``) low enough to reach them with
small files. A refused upload must leave no message behind; an expired blob must leave the
message intact with the attachment reported as gone.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from mailslot.errors import NotFoundError, QuotaExceeded, TooLarge
from mailslot.protocol import chunked
from tests.client.conftest import Devices


def write(path: Path, size: int) -> Path:
    path.write_bytes(random.Random(size).randbytes(size))
    return path


@pytest.mark.parametrize("server_settings", [{"max_blob_bytes": 100_000}])
async def test_a_file_over_the_size_limit_is_refused_before_sending(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    fits = write(tmp_path / "fits.bin", 100_000 - chunked.ciphertext_size(0) - 16)
    assert chunked.ciphertext_size(fits.stat().st_size) <= 100_000
    await alice.send(["bob"], "", [fits])
    with pytest.raises(TooLarge):
        await alice.send(["bob"], "too big", [write(tmp_path / "big.bin", 100_001)])
    assert [m.text async for m in bob.receive()] == [""]
    assert len(alice.history()) == 1


@pytest.mark.parametrize("server_settings", [{"account_blob_quota_bytes": 300_000}])
async def test_the_account_quota_is_a_clear_error(devices: Devices, tmp_path: Path) -> None:
    alice = await devices.register("alice")
    await devices.register("bob")
    await alice.send(["bob"], "one", [write(tmp_path / "one.bin", 200_000)])
    with pytest.raises(QuotaExceeded):
        await alice.send(["bob"], "two", [write(tmp_path / "two.bin", 200_000)])
    assert [h.text for h in alice.history()] == ["one"]


@pytest.mark.parametrize("server_settings", [{"blob_ttl_s": 1}])
async def test_an_expired_blob_is_reported_and_the_message_kept(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await alice.send(["bob"], "too late", [write(tmp_path / "gone.bin", 1000)])
    await asyncio.sleep(1.2)
    (got,) = [m async for m in bob.receive(download=True, downloads=tmp_path / "dl")]
    assert got.text == "too late"
    (attachment,) = got.attachments
    assert attachment.path is None and attachment.error is not None
    with pytest.raises(NotFoundError):
        await bob.fetch_attachment(attachment.id, downloads=tmp_path / "dl")
    assert not (tmp_path / "dl").exists() or list((tmp_path / "dl").iterdir()) == []
