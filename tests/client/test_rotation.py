"""Encryption-key rotation: every message stays readable, old keys go only under the rules."""

from __future__ import annotations

import dataclasses

from mailslot.client import Client, rotation
from mailslot.client.devices import publish
from mailslot.client.keystore import Keystore, RetiredKey
from mailslot.client.receiving import Receiver
from mailslot.client.transport import now_ms
from mailslot.protocol import crypto
from mailslot.protocol.device_list import DeviceList, DeviceRecord
from mailslot.protocol.identity import DeviceKeys
from tests.client.conftest import PASSPHRASE, Devices
from tests.client.test_flows import drain, session_of

MINUTE = 60 * 1000
DAY = 24 * 60 * MINUTE


def _key(retired_ms: int) -> RetiredKey:
    return RetiredKey(b"\x01" * 32, 0, retired_ms)


def retired(client: Client) -> int:
    return len(session_of(client).secrets.retired)


def test_keep_rules() -> None:
    now = 100 * DAY
    fresh, old, ancient = _key(now - MINUTE), _key(now - 20 * MINUTE), _key(now - 7 * DAY)
    keys = (fresh, old, ancient)
    assert rotation.keep(keys, now) == (fresh, old)  # 7 days after retirement: gone regardless
    # An empty queue seen by a drain that started >= 10 min after retirement lets a key go...
    assert rotation.keep(keys, now, drained_from=now - 5 * MINUTE) == (fresh,)
    # ...but not one that started earlier.
    assert rotation.keep(keys, now, drained_from=now - 15 * MINUTE) == (fresh, old)
    assert rotation.keep((old,), now, drained_from=old.retired_ms + 10 * MINUTE) == ()
    assert rotation.keep((old,), now, drained_from=old.retired_ms + 10 * MINUTE - 1) == (old,)


async def test_rotation_keeps_messages_before_during_and_after_readable(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await bob.send(["alice"], "before")  # sealed to the old key; bob now caches alice's list
    old_key = session_of(alice).secrets.device.enc_public
    assert not await alice.rotate_keys()  # not due yet
    assert await alice.rotate_keys(force=True)
    secrets = session_of(alice).secrets
    assert secrets.device.enc_public != old_key and secrets.pending is None
    assert [k.kem_seed for k in secrets.retired] != []
    listed = await alice.device_list()
    mine = listed.find(bytes.fromhex(alice.device_id))
    assert listed.version == 2 and mine is not None and mine.enc_key == secrets.device.enc_public
    assert (await bob.device_list("alice", refresh=False)).version == 1  # bob's cache is stale
    await bob.send(["alice"], "during")  # the server refuses the old version; bob re-fetches
    assert (await bob.device_list("alice", refresh=False)).version == 2
    await bob.send(["alice"], "after")
    assert [m.text for m in await drain(alice)] == ["before", "during", "after"]
    # The drain started less than 10 minutes after the retirement: the old key stays...
    assert len(session_of(alice).secrets.retired) == 1
    # ...also on disk, and a reopened device still reads mail sealed to it.
    on_disk = Keystore(alice.home).load(PASSPHRASE)
    assert on_disk.device == secrets.device and on_disk.retired == secrets.retired


async def test_retired_key_dropped_after_an_empty_queue_late_enough_not_before(devices: Devices) -> None:
    alice, bob, carol = [await devices.register(h) for h in ("alice", "bob", "carol")]
    assert await alice.rotate_keys(force=True)
    session = session_of(alice)
    ten_past = now_ms() - 11 * MINUTE
    session.save_secrets(
        session.secrets.keeping((dataclasses.replace(session.secrets.retired[0], retired_ms=ten_past),))
    )
    # A message held on the queue (carol is not trusted under "never") keeps the old key.
    alice.trust_new_identities = "never"
    await carol.send(["alice"], "held")
    assert await drain(alice) == []
    assert retired(alice) == 1
    await alice.trust("carol")
    alice.trust_new_identities = "on-first-use"
    assert [m.text for m in await drain(alice)] == ["held"]  # empty now: the key goes
    assert retired(alice) == 0
    assert Keystore(alice.home).load(PASSPHRASE).retired == ()
    await bob.send(["alice"], "still fine")
    assert [m.text for m in await drain(alice)] == ["still fine"]


async def test_retired_key_dropped_seven_days_after_retirement(devices: Devices) -> None:
    alice = await devices.register("alice")
    assert await alice.rotate_keys(force=True)
    session = session_of(alice)
    week_ago = now_ms() - 7 * DAY
    session.save_secrets(
        session.secrets.keeping((dataclasses.replace(session.secrets.retired[0], retired_ms=week_ago),))
    )
    assert not await alice.rotate_keys()
    assert session.secrets.retired == ()


async def test_a_rotation_interrupted_after_saving_is_finished(devices: Devices) -> None:
    """A pending key saved but not published; then one published but not made current."""
    alice, bob = await devices.register("alice"), await devices.register("bob")
    session = session_of(alice)
    session.save_secrets(session.secrets.with_pending(crypto.random_bytes(32), now_ms()))
    reopened = Client.open(alice.home, passphrase=PASSPHRASE)
    devices.opened.append(reopened)
    assert session_of(reopened).secrets.pending is not None  # the crash-safe point is on disk
    assert await reopened.rotate_keys()  # due: a pending key is published first
    assert (await reopened.device_list()).version == 2
    # Published, then a crash before it became current: mail sealed to it still opens.
    rs = session_of(reopened)
    seed = crypto.random_bytes(32)
    rs.save_secrets(rs.secrets.with_pending(seed, now_ms()))
    pending = DeviceKeys(seed, rs.secrets.device.sign_seed)

    def rekeyed(current: DeviceList) -> list[DeviceRecord]:
        return [
            dataclasses.replace(d, enc_key=pending.enc_public) if d.device_id == pending.device_id else d
            for d in current.devices
        ]

    await publish(rs, rekeyed)
    await bob.send(["alice"], "to the pending key")
    # (The Receiver alone: receive() would finish the rotation first.)
    assert [m.text async for m in Receiver(rs).drain()] == ["to the pending key"]
    assert await reopened.rotate_keys()  # finishes: no new version, the pending key is current
    assert (await reopened.device_list()).version == 3
    assert rs.secrets.device.enc_public == pending.enc_public and rs.secrets.pending is None


async def test_receive_rotates_when_due(devices: Devices) -> None:
    alice = await devices.register("alice")
    alice.rotation_interval_s = 0
    before = session_of(alice).secrets.device.enc_public
    assert await drain(alice) == []
    assert session_of(alice).secrets.device.enc_public != before
    assert (await alice.device_list()).version == 2
