"""This account's devices through the real server: list, rename, remove, and the alerts they cause."""

from __future__ import annotations

import asyncio

import pytest

from mailslot.client import Client, DeviceAlert
from mailslot.errors import DeviceRemoved, InputError, NotFoundError
from tests.client.conftest import PASSPHRASE, Devices, ServerDb
from tests.client.test_flows import drain, session_of


async def test_devices_shows_names_last_seen_and_this_device_and_rename(devices: Devices) -> None:
    alice = await devices.register("alice")
    phone = await devices.link(alice, "phone")
    record = await phone.rename_device("my phone")
    assert (record.device_id.hex(), record.name) == (phone.device_id, "my phone")
    assert phone.device_name == "my phone"
    shown = await alice.devices()
    assert [(d.name, d.this_device) for d in shown] == [("primary", True), ("my phone", False)]
    assert all(d.last_seen is not None and d.created_at > 0 for d in shown)
    assert shown[0].enc_key_fingerprint != shown[1].enc_key_fingerprint
    await alice.rename_device("laptop")  # this device by default, kept in its key file too
    assert [d.name for d in await phone.devices()] == ["my phone", "laptop"]
    reopened = Client.open(alice.home, passphrase=PASSPHRASE)
    devices.opened.append(reopened)
    assert reopened.device_name == "laptop"
    with pytest.raises(NotFoundError):
        await alice.rename_device("x", "ab" * 16)


async def test_added_device_alerts_the_other_devices_with_its_approver(devices: Devices) -> None:
    alice = await devices.register("alice")
    phone = await devices.link(alice, "phone")
    assert await phone.check_devices() == []  # it joined with that list
    await devices.link(alice, "laptop")
    (alert,) = await phone.check_devices()
    assert (alert.kind, alert.device_name, alert.approver_name, alert.approver_id) == (
        "added",
        "laptop",
        "primary",
        alice.device_id,
    )
    assert (alert.handle, alert.version, alert.own, alert.attack, alert.seen) == (
        "alice",
        3,
        True,
        False,
        False,
    )
    assert await phone.check_devices() == []  # recorded once
    assert phone.alerts() == [alert]
    assert phone.mark_alerts_seen() == 1 and phone.alerts() == []
    # The approving device knows what it did: recorded, already seen.
    assert await alice.check_devices() == []
    assert [(a.kind, a.device_name, a.seen) for a in alice.alerts(unseen_only=False)] == [
        ("added", "phone", True),
        ("added", "laptop", True),
    ]


async def test_receive_reports_alerts_pushed_while_streaming(devices: Devices) -> None:
    alice = await devices.register("alice")
    phone = await devices.link(alice, "phone")
    got: list[DeviceAlert] = []

    async def listen() -> None:
        async for _ in phone.receive(timeout=15, on_alert=got.append):
            pass

    task = asyncio.create_task(listen())
    try:
        await asyncio.sleep(1.0)  # the WebSocket is up
        await alice.rename_device("laptop")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(a.kind, a.device_name, a.approver_name) for a in got] == [("renamed", "laptop", "laptop")]


async def test_removed_device_gets_nothing_more_and_is_told_who_removed_it(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    phone = await devices.link(alice, "phone")
    await bob.send(["alice"], "for both")
    with pytest.raises(InputError, match="another device"):
        await alice.remove_device(alice.device_id)
    with pytest.raises(NotFoundError):
        await alice.remove_device("cd" * 16)
    removed = await alice.remove_device(phone.device_id)
    assert (removed.device_id.hex(), removed.name) == (phone.device_id, "phone")
    assert [d.name for d in await alice.devices()] == ["primary"]
    sent = await bob.send(["alice"], "after")  # bob's stale list is refused; it re-fetches
    assert sent.devices == 1
    assert [m.text for m in await drain(alice)] == ["for both", "after"]

    with pytest.raises(DeviceRemoved) as info:
        await phone.send(["bob"], "still here?")  # the server refuses; the client explains
    message = info.value.message
    assert f"removed from account alice by device 'primary' ({alice.device_id})" in message
    assert "version 3" in message and "UTC" in message
    assert info.value.details["approver_id"] == alice.device_id
    # Later commands fail at once with the same words, also after reopening.
    with pytest.raises(DeviceRemoved) as again:
        await drain(phone)
    assert again.value.message == message
    reopened = Client.open(phone.home, passphrase=PASSPHRASE)
    devices.opened.append(reopened)
    with pytest.raises(DeviceRemoved) as third:
        await reopened.check_devices()
    assert third.value.message == message
    assert [a.kind for a in reopened.alerts()] == ["removed"]


async def test_removed_device_learns_it_on_receive_and_gets_nothing_more(
    devices: Devices, server_db: ServerDb
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    phone = await devices.link(alice, "phone")
    await bob.send(["alice"], "queued for phone")
    assert server_db.queued_for(session_of(phone).secrets.device) == 1
    await alice.remove_device(phone.device_id)
    assert server_db.queued_for(session_of(phone).secrets.device) == 0  # dropped at once
    await bob.send(["alice"], "after")
    assert server_db.queued_for(session_of(phone).secrets.device) == 0
    with pytest.raises(DeviceRemoved, match="by device 'primary'"):
        await drain(phone)
    assert phone.history() == []


async def test_contact_notice_when_a_contact_adds_a_device(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await alice.send(["bob"], "hi")
    tablet = await devices.link(bob, "tablet")
    assert (await alice.send(["bob"], "hi both")).devices == 2
    (notice,) = alice.alerts()
    assert (notice.handle, notice.kind, notice.device_id, notice.device_name) == (
        "bob",
        "added",
        tablet.device_id,
        "tablet",
    )
    assert (notice.own, notice.attack, notice.approver_name) == (False, False, "primary")
    await bob.remove_device(tablet.device_id)
    await alice.device_list("bob")  # a refresh
    assert [(a.kind, a.device_name) for a in alice.alerts()] == [("added", "tablet"), ("removed", "tablet")]
