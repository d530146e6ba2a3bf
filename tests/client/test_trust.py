"""Trust through the real server: ghost devices, key swaps, safety codes, policies, blocking.

The server is the attacker here. Each test makes the server lie the way a malicious operator
could, by writing into its SQLite database directly (a device row the account never approved,
a device list it re-signed, an account key it swapped), and checks what the client does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mailslot.client import Client
from mailslot.errors import ForbiddenError, KeyChanged, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.device_list import DeviceList, DeviceRecord, SignedDeviceList, sign_device_list
from mailslot.protocol.identity import AccountKey, DeviceKeys
from mailslot.protocol.safety import fingerprint
from tests.client.conftest import Devices, ServerDb
from tests.client.test_flows import drain, queue_of, session_of
from tests.server.rawapi import Api, RawAccount


def ghost_record() -> tuple[DeviceKeys, DeviceRecord]:
    keys = DeviceKeys.generate()
    return keys, DeviceRecord(keys.device_id, keys.sign_public, crypto.SUITE, keys.enc_public, "ghost", 1)


def with_devices(
    current: DeviceList,
    account_key: bytes,
    version: int,
    extra: list[DeviceRecord],
    approver: bytes | None = None,
) -> DeviceList:
    """``current`` plus ``extra`` at ``version`` under ``account_key``, approved by
    ``approver`` (default: the first extra device)."""
    return DeviceList.build(
        current.handle, account_key, version, 1, [*current.devices, *extra],
        approver=approver or extra[0].device_id, recovery_key=current.recovery_key,
    )


# --- (a) a device the account never signed ------------------------------------------------------


async def test_ghost_device_row_outside_the_signed_list_is_refused(
    devices: Devices, server_db: ServerDb
) -> None:
    """The server adds a device to bob but cannot add it to bob's signed list."""
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await alice.send(["bob"], "before")
    ghost, _ = ghost_record()
    server_db.add_device("bob", ghost)
    with pytest.raises(VerificationError, match=ghost.device_id.hex()) as info:
        await alice.send(["bob"], "after")
    assert "never approved" in info.value.message
    assert server_db.queued_for(ghost) == 0
    assert [m.text for m in await drain(bob)] == ["before"]


def forged_by_another_key(
    current: DeviceList, bob_key: bytes, ghost: DeviceKeys, record: DeviceRecord
) -> SignedDeviceList:
    body = with_devices(current, bob_key, current.version + 1, [record]).to_bytes()
    return SignedDeviceList(body, AccountKey.generate().sign(body), ghost.sign(labels.DEVICE_LIST_APPROVAL + body))


def old_signature_on_new_bytes(
    current: DeviceList, bob_key: bytes, ghost: DeviceKeys, record: DeviceRecord, old: bytes
) -> SignedDeviceList:
    body = with_devices(current, bob_key, current.version, [record]).to_bytes()
    approval = ghost.sign(labels.DEVICE_LIST_APPROVAL + body)
    return SignedDeviceList(body, SignedDeviceList.from_bytes(old).signature, approval)


@pytest.mark.parametrize("forge", ["another-key", "old-signature"])
@pytest.mark.parametrize("cached", [True, False])
async def test_list_with_a_ghost_device_that_bob_did_not_sign_is_refused(
    devices: Devices, server_db: ServerDb, forge: str, cached: bool
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    if cached:
        await alice.send(["bob"], "before")
    current = await bob.device_list()
    ghost, record = ghost_record()
    if forge == "another-key":
        signed = forged_by_another_key(current, current.account_key, ghost, record)
    else:
        (old,) = server_db.execute("SELECT device_list FROM accounts WHERE handle = 'bob'")[0]
        signed = old_signature_on_new_bytes(current, current.account_key, ghost, record, old)
    server_db.add_device("bob", ghost)
    server_db.serve_list("bob", signed)
    with pytest.raises(VerificationError, match="did not sign"):
        await alice.send(["bob"], "after")
    assert server_db.queued_for(ghost) == 0
    assert [m.text for m in await drain(bob)] == (["before"] if cached else [])


# --- (b) an account-key swap ---------------------------------------------------------------------


def swap_account_key(server_db: ServerDb, current: DeviceList) -> tuple[AccountKey, DeviceKeys]:
    """The server gives bob a new account key of its own, with a list it signed: bob's real
    device (so nothing looks broken) and a ghost device the server holds the keys of."""
    mallory = AccountKey.generate()
    ghost, record = ghost_record()
    signed = sign_device_list(with_devices(current, mallory.public, 1, [record]), mallory, ghost)
    server_db.add_device("bob", ghost)
    server_db.serve_list("bob", signed)
    return mallory, ghost


def send_as_ghost(
    live_server: Any, ghost: DeviceKeys, mallory: AccountKey, bob: Client, alice: Client
) -> None:
    """The server, holding the ghost device's keys, writes to alice as bob."""
    fake_bob = RawAccount("bob", mallory, [ghost, session_of(bob).secrets.device])
    real_alice = RawAccount("alice", session_of(alice).secrets.account, [session_of(alice).secrets.device])
    api = Api(live_server.url, live_server.ca)
    try:
        answer = api.send_text(fake_bob, ghost, {"alice": real_alice}, "from the ghost")
        assert answer.status_code == 201, answer.text
    finally:
        api.close()


async def test_account_key_swap_stops_sending_until_trust(
    devices: Devices, server_db: ServerDb, live_server: Any
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await alice.send(["bob"], "before")
    real_key = (await alice.device_list("bob")).account_key
    mallory, ghost = swap_account_key(server_db, await bob.device_list())

    with pytest.raises(KeyChanged, match="'bob'") as info:
        await alice.send(["bob"], "after")
    assert fingerprint(real_key) in info.value.message and fingerprint(mallory.public) in info.value.message
    assert "identity trust bob" in info.value.message
    assert server_db.queued_for(ghost) == 0
    # Mail signed under the new key is held, not dropped, while that key is in question.
    send_as_ghost(live_server, ghost, mallory, bob, alice)
    assert await drain(alice) == []
    assert len(await queue_of(alice)) == 1

    shown = await alice.identity("bob")
    assert shown.changed and shown.trust == "untrusted" and shown.fingerprint == fingerprint(mallory.public)
    assert shown.code != (await bob.identity("alice")).code  # comparing codes exposes the swap

    contact = await alice.trust("bob")
    assert (contact.trust, contact.fingerprint) == ("trusted-unverified", fingerprint(mallory.public))
    sent = await alice.send(["bob"], "after trust")
    assert sent.devices == 2  # bob's device and the ghost: why codes should be compared
    assert server_db.queued_for(ghost) == 1
    (held,) = await drain(alice)
    assert (held.text, held.sender_device, held.verified) == ("from the ghost", ghost.device_id.hex(), False)


# --- (c) safety codes ------------------------------------------------------------------------------


async def test_codes_match_on_both_sides_and_verify(devices: Devices) -> None:
    alice, bob, carol = [await devices.register(h) for h in ("alice", "bob", "carol")]
    seen_by_alice, seen_by_bob = await alice.identity("bob"), await bob.identity("alice")
    assert seen_by_alice.code == seen_by_bob.code and len(seen_by_alice.code) == 60
    assert seen_by_alice.trust == "trusted-unverified" and not seen_by_alice.changed
    assert (await alice.identity("carol")).code != seen_by_alice.code
    assert (await carol.identity("bob")).code != seen_by_alice.code

    await bob.send(["alice"], "unverified")
    (first,) = await drain(alice)
    assert not first.verified

    wrong = (await alice.identity("carol")).code
    with pytest.raises(VerificationError, match="does not match"):
        await alice.verify("bob", wrong)
    assert (await alice.identity("bob")).trust == "trusted-unverified"

    spaced = " ".join(seen_by_bob.code[i : i + 5] for i in range(0, 60, 5))
    assert (await alice.verify("bob", spaced)).trust == "trusted-verified"
    assert (await alice.trust("bob")).trust == "trusted-verified"  # trusting again keeps it
    await bob.send(["alice"], "verified")
    (second,) = await drain(alice)
    assert second.verified
    assert [(c.handle, c.trust) for c in alice.contacts()] == [
        ("bob", "trusted-verified"),
        ("carol", "trusted-unverified"),
    ]


# --- (d) policies and blocking --------------------------------------------------------------------


async def test_policy_never_refuses_the_first_send_until_trust(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    alice.trust_new_identities = "never"
    with pytest.raises(KeyChanged, match="not trusted yet"):
        await alice.send(["bob"], "too early")
    await bob.send(["alice"], "hello from bob")
    assert await drain(alice) == []  # held while bob is untrusted
    assert [(c.handle, c.trust) for c in alice.contacts()] == [("bob", "untrusted")]
    await alice.trust("bob")
    assert (await alice.send(["bob"], "now")).devices == 1
    assert [m.text for m in await drain(alice)] == ["hello from bob"]


async def test_policy_always_accepts_a_changed_key_with_a_warning(
    devices: Devices, server_db: ServerDb, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await alice.send(["bob"], "before")
    mallory, _ = swap_account_key(server_db, await bob.device_list())
    alice.trust_new_identities = "always"
    with caplog.at_level(logging.WARNING, logger="mailslot.client"):
        assert (await alice.send(["bob"], "after")).devices == 2
    assert any("changed" in r.getMessage() and "always" in r.getMessage() for r in caplog.records)
    (contact,) = alice.contacts()
    assert (contact.fingerprint, contact.trust) == (fingerprint(mallory.public), "trusted-unverified")


async def test_blocked_contacts_messages_are_dropped_and_nothing_is_sent_to_them(
    devices: Devices, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    assert (await bob.block("alice")).trust == "blocked"
    await alice.send(["bob"], "spam")
    with caplog.at_level(logging.INFO, logger="mailslot.client"):
        assert await drain(bob) == []
    assert await queue_of(bob) == []  # acknowledged: dropped for good
    assert any("blocked" in r.getMessage() for r in caplog.records)
    assert bob.history() == []
    with pytest.raises(ForbiddenError, match="blocked"):
        await bob.send(["alice"], "no")
    await bob.trust("alice")
    await alice.send(["bob"], "welcome back")
    assert [m.text for m in await drain(bob)] == ["welcome back"]


async def test_trust_policy_is_checked(devices: Devices, tmp_path: Path) -> None:
    alice = await devices.register("alice")
    with pytest.raises(Exception, match="unknown trust policy"):
        Client.open(alice.home, passphrase=b"x", trust_new_identities="sometimes")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="own account"):
        await alice.identity("alice")
