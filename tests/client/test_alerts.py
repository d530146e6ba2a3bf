"""Device alerts for changes nobody approved: the server (or a thief of the account key) adds a
device; the account's devices must show it as an attack, once, and never take it as normal."""

from __future__ import annotations

import pytest

from mailslot.client import Client, DeviceAlert
from mailslot.client.transport import now_ms
from mailslot.errors import VerificationError
from mailslot.protocol import crypto
from mailslot.protocol.device_list import DeviceList, DeviceRecord, sign_device_list
from mailslot.protocol.identity import DeviceKeys
from tests.client.conftest import FAST_KDF, PASSPHRASE, Devices, ServerDb
from tests.client.test_flows import drain, session_of

REFUSED = "has a change that none of your devices approved"


def publish_behind_the_accounts_back(server_db: ServerDb, handle: str, signed: bytes, version: int) -> None:
    """What the server would serve if someone with the account key published a list."""
    server_db.execute(
        "INSERT INTO device_list_history (handle, version, device_list, published_at_ms) VALUES (?, ?, ?, ?)",
        handle,
        version,
        signed,
        now_ms(),
    )
    server_db.execute(
        "UPDATE accounts SET list_version = ?, device_list = ? WHERE handle = ?", version, signed, handle
    )


async def test_a_list_approved_by_a_non_member_is_an_attack_alert(
    devices: Devices, server_db: ServerDb
) -> None:
    alice = await devices.register("alice")
    phone = await devices.link(alice, "phone")
    # The account key (stolen) signs a list approved by a device the account never had.
    foreign = DeviceKeys.generate()
    record = DeviceRecord(foreign.device_id, foreign.sign_public, crypto.SUITE, foreign.enc_public, "evil", 1)
    current = await alice.device_list()
    evil = current.successor([*current.devices, record], approver=foreign.device_id, issued_at_ms=now_ms())
    signed = sign_device_list(evil, session_of(alice).secrets.account, foreign)
    publish_behind_the_accounts_back(server_db, "alice", signed.to_bytes(), evil.version)

    got: list[DeviceAlert] = []
    assert [m async for m in phone.receive(on_alert=got.append)] == []
    (alert,) = got
    assert (alert.kind, alert.device_id, alert.device_name, alert.attack, alert.own, alert.seen) == (
        "added",
        foreign.device_id.hex(),
        "evil",
        True,
        True,
        False,
    )
    assert (alert.approver_id, alert.approver_name, alert.version) == (foreign.device_id.hex(), "evil", 3)
    assert await phone.check_devices() == []  # recorded once, not re-alerted forever
    assert phone.alerts() == [alert]
    # The approving "device" is no device of the account: alice's own device is alerted too.
    (on_alice,) = await alice.check_devices()
    assert on_alice.attack and on_alice.device_id == foreign.device_id.hex()
    assert await drain(alice) == []


def record_of(keys: DeviceKeys, name: str) -> DeviceRecord:
    return DeviceRecord(keys.device_id, keys.sign_public, crypto.SUITE, keys.enc_public, name, 1)


async def add_behind_the_accounts_back(
    client: Client, server_db: ServerDb, keys: DeviceKeys, name: str, approver: DeviceKeys
) -> DeviceList:
    """The stolen account key adds the device ``keys``, approved by ``approver``, and the
    server (the attacker's, or one that trusts the account key) serves it and knows the device."""
    current = await session_of(client).directory.walked_own()
    served = session_of(client).store.checkpoint(client.handle)
    history = server_db.execute("SELECT max(version) FROM device_list_history WHERE handle = ?", client.handle)
    assert served is not None and history[0][0] == current.version  # built on the newest list
    evil = current.successor([*current.devices, record_of(keys, name)], approver=approver.device_id,
                             issued_at_ms=now_ms())
    signed = sign_device_list(evil, session_of(client).secrets.account, approver)
    publish_behind_the_accounts_back(server_db, client.handle, signed.to_bytes(), evil.version)
    server_db.add_device(client.handle, keys)
    return evil


async def test_after_an_attack_sending_stops_until_a_trusted_device_removes_the_device(
    devices: Devices, server_db: ServerDb
) -> None:
    alice = await devices.register("alice")
    phone = await devices.link(alice, "phone")
    bob = await devices.register("bob")
    assert (await alice.send(["bob"], "before")).devices == 2  # bob and phone
    foreign = DeviceKeys.generate()
    await add_behind_the_accounts_back(alice, server_db, foreign, "evil", foreign)

    # The server now wants evil sealed to; the client walks, finds the attack and stops.
    with pytest.raises(VerificationError) as refused:
        await alice.send(["bob"], "secret")
    message = refused.value.message
    assert REFUSED in message and "account key was stolen" in message
    assert f"'evil' ({foreign.device_id.hex()}) added by 'evil'" in message
    assert f"mailslot device remove {foreign.device_id.hex()}" in message
    assert refused.value.details["unapproved_devices"] == [foreign.device_id.hex()]
    assert server_db.queued_for(foreign) == 0
    with pytest.raises(VerificationError, match=REFUSED):
        await phone.send(["bob"], "secret from the phone")
    with pytest.raises(VerificationError, match=REFUSED):  # and the directory will not hand it out
        await alice.device_list()
    # Reopened, the device still refuses: what the walk learnt is kept with the alerts.
    reopened = Client.open(alice.home, passphrase=PASSPHRASE)
    devices.opened.append(reopened)
    with pytest.raises(VerificationError, match=REFUSED):
        await reopened.send(["bob"], "secret")
    assert server_db.queued_for(foreign) == 0
    assert [m.text for m in await drain(bob)] == ["before"]

    # The user sees the device and removes it from a device the account trusts.
    assert foreign.device_id.hex() in [d.device_id for d in await phone.devices()]
    await phone.remove_device(foreign.device_id.hex())
    sent = await alice.send(["bob"], "after")
    assert sent.devices == 2  # bob and phone, not evil
    assert (await phone.send(["bob"], "after, from the phone")).devices == 2
    assert server_db.queued_for(foreign) == 0
    assert [m.text for m in await drain(bob)] == ["after", "after, from the phone"]
    assert [m.text for m in await drain(phone)] == ["before", "after"]
    assert foreign.device_id not in (await alice.device_list()).device_ids


async def test_a_step_the_foreign_device_approves_is_an_attack_too(devices: Devices, server_db: ServerDb) -> None:
    alice = await devices.register("alice")
    bob = await devices.register("bob")
    foreign, second = DeviceKeys.generate(), DeviceKeys.generate()
    await add_behind_the_accounts_back(alice, server_db, foreign, "evil", foreign)
    # The foreign device is in the previous version now: it "approves" the next step itself.
    await add_behind_the_accounts_back(alice, server_db, second, "evil2", foreign)
    await alice.check_devices()
    got = alice.alerts()
    assert [(a.version, a.device_name, a.attack) for a in got] == [(2, "evil", True), (3, "evil2", True)]
    await alice.remove_device(foreign.device_id.hex())
    # evil2 came in through a step nobody approved and is still listed.
    with pytest.raises(VerificationError, match=f"'evil2' \\({second.device_id.hex()}\\) added"):
        await alice.send(["bob"], "secret")
    await alice.remove_device(second.device_id.hex())
    assert (await alice.send(["bob"], "fine")).devices == 1
    assert [m.text for m in await drain(bob)] == ["fine"]
    assert server_db.queued_for(foreign) == server_db.queued_for(second) == 0


async def test_a_new_device_is_not_linked_onto_a_list_with_an_unapproved_device(
    devices: Devices, server_db: ServerDb
) -> None:
    alice = await devices.register("alice")
    foreign = DeviceKeys.generate()
    await add_behind_the_accounts_back(alice, server_db, foreign, "evil", foreign)
    pending = await Client.start_link(
        devices.tmp_path / "home-laptop", devices.server.url, passphrase=PASSPHRASE, ca=devices.server.ca,
        device_name="laptop", kdf=FAST_KDF,
    )
    async with pending:
        with pytest.raises(VerificationError, match=REFUSED):
            await alice.approve(pending.code)
    assert server_db.execute("SELECT max(version) FROM device_list_history WHERE handle = 'alice'") == [(2,)]


async def test_a_history_with_a_version_left_out_is_refused(devices: Devices, server_db: ServerDb) -> None:
    """A server that hides one step of the history (say, a device it added and removed again)
    is caught by the gap: the walk refuses, and the checkpoint stays where it was."""
    alice = await devices.register("alice")
    phone = await devices.link(alice, "phone")
    assert await phone.check_devices() == []
    before = session_of(phone).store.checkpoint("alice")
    assert before is not None and before[0] == 2
    await alice.rename_device("work phone", phone.device_id)  # version 3
    await alice.rename_device("laptop")  # version 4
    server_db.execute("DELETE FROM device_list_history WHERE handle = ? AND version = 3", "alice")

    with pytest.raises(VerificationError, match="skipped from version 2 to 4"):
        await phone.check_devices()
    assert session_of(phone).store.checkpoint("alice") == before
    assert phone.alerts(unseen_only=False) == []  # nothing recorded from the broken history
