"""Account recovery with the code shown at registration, through the real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailslot.client import Client
from mailslot.errors import DeviceRemoved, InputError, KeyChanged, RecoveryRefused
from mailslot.protocol.recovery import RecoverySecret
from tests.client.conftest import FAST_KDF, PASSPHRASE, Devices
from tests.client.test_flows import drain


async def recover(live_server: Any, home: Path, code: str, name: str = "new phone") -> Client:
    return await Client.recover(
        home,
        live_server.url,
        "alice",
        code,
        passphrase=PASSPHRASE,
        ca=live_server.ca,
        device_name=name,
        kdf=FAST_KDF,
    )


async def test_recovery_with_the_code_replaces_key_and_devices(
    devices: Devices, live_server: Any, tmp_path: Path
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    code = alice.recovery_code
    assert code is not None and len(code) == 39
    await bob.send(["alice"], "before")  # bob pins alice's key
    old_key = (await alice.device_list()).account_key

    typed = code.lower().replace("-", " ")  # as a person might type it
    new = await recover(live_server, tmp_path / "recovered", typed)
    devices.opened.append(new)
    assert new.recovery_code is not None and new.recovery_code != code
    listed = await new.device_list()
    assert listed.version == 2 and listed.account_key != old_key
    assert [d.device_id.hex() for d in listed.devices] == [new.device_id]
    assert [(d.name, d.this_device) for d in await new.devices()] == [("new phone", True)]

    # The old device is removed, and told how.
    with pytest.raises(DeviceRemoved, match="recovered with its recovery code by new device 'new phone'"):
        await drain(alice)
    # Contacts are stopped by the key change until they trust the new key: never silent.
    with pytest.raises(KeyChanged, match="'alice'"):
        await bob.send(["alice"], "after")
    await bob.trust("alice")
    assert (await bob.send(["alice"], "after trust")).devices == 1
    assert [m.text for m in await drain(new)] == ["after trust"]
    # The old code is spent: the list now commits to the new one.
    with pytest.raises(RecoveryRefused):
        await recover(live_server, tmp_path / "again", code)


async def test_recovery_without_the_right_code_fails_before_anything_is_sent(
    devices: Devices, live_server: Any, tmp_path: Path
) -> None:
    alice = await devices.register("alice")
    home = tmp_path / "thief"
    with pytest.raises(RecoveryRefused, match="not the recovery code of 'alice'"):
        await recover(live_server, home, RecoverySecret.generate().code)
    with pytest.raises(InputError, match="recovery code"):
        await recover(live_server, home, "ABCD-EFGH")
    with pytest.raises(InputError, match="recovery code"):
        await recover(live_server, home, "")
    assert not (home / "device.key").exists()
    listed = await alice.device_list()
    assert listed.version == 1 and [d.device_id.hex() for d in listed.devices] == [alice.device_id]
    assert await drain(alice) == []
