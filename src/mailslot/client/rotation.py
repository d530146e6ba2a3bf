"""Encryption-key rotation: a new KEM key now and then, old ones kept until their mail is read.

A device's encryption (KEM) key is the one long-lived secret every message to it is sealed
to. Rotating it bounds what a key stolen later can open. The order is what makes it safe:

1. draw a new seed and SAVE it in the keystore as *pending* (fsync'd) before anything else:
   a key whose public half is published but whose private half was lost would make every
   message sealed to it unreadable;
2. publish the next own device list with this device's record carrying the new public key,
   approved by this device (``devices.publish``). From then on the server refuses sends
   sealed under the older list version (``device_mismatch``), so senders with a stale cache
   fetch the new list and seal to the new key;
3. make the pending key current and keep the old one as *retired*.

A crash between 1 and 3 is finished by the next rotation: the pending key is published unless
the list already names it, then made current. Opening a message tries the current key, then
the pending and retired ones (``DeviceSecrets.decryption_keys``).

A retired key is dropped (``keep``) when this device's queue was seen empty in a drain that
started at least ``DRAIN_GRACE_MS`` after the key was retired (everything sealed to it before
the new list was published has been read), or ``MAX_RETIRED_MS`` after its retirement
(queued messages expire by then). Rotation is due every ``ROTATION_INTERVAL_S`` seconds and
is checked at the start of every ``receive``.
"""

from __future__ import annotations

import dataclasses
import logging

from mailslot.client.devices import publish
from mailslot.client.keystore import RetiredKey
from mailslot.client.session import Session
from mailslot.client.transport import now_ms
from mailslot.errors import DeviceRemoved
from mailslot.protocol import crypto
from mailslot.protocol.device_list import DeviceList, DeviceRecord
from mailslot.protocol.identity import DeviceKeys

log = logging.getLogger("mailslot.client")

ROTATION_INTERVAL_S = 7 * 24 * 3600
DRAIN_GRACE_MS = 10 * 60 * 1000
MAX_RETIRED_MS = 7 * 24 * 3600 * 1000


def keep(
    retired: tuple[RetiredKey, ...], now: int, drained_from: int | None = None
) -> tuple[RetiredKey, ...]:
    """The retired keys still needed at ``now``; ``drained_from`` is when a drain that found
    the queue empty started (``None``: no such drain now)."""

    def needed(key: RetiredKey) -> bool:
        if now - key.retired_ms >= MAX_RETIRED_MS:
            return False
        return drained_from is None or drained_from < key.retired_ms + DRAIN_GRACE_MS

    return tuple(key for key in retired if needed(key))


def prune(session: Session, now: int, drained_from: int | None = None) -> int:
    """Drop the retired keys ``keep`` does not keep (saving the keystore); how many."""
    kept = keep(session.secrets.retired, now, drained_from)
    dropped = len(session.secrets.retired) - len(kept)
    if dropped:
        session.save_secrets(session.secrets.keeping(kept))
        log.info("dropped %d retired encryption key(s)", dropped)
    return dropped


def is_due(session: Session, now: int, interval_s: float) -> bool:
    secrets = session.secrets
    return secrets.pending is not None or now - secrets.kem_created_ms >= interval_s * 1000


async def rotate(session: Session, *, force: bool = False, interval_s: float = ROTATION_INTERVAL_S) -> bool:
    """Rotate this device's encryption key if due (or ``force``); whether it did."""
    now = now_ms()
    prune(session, now)
    if not (force or is_due(session, now, interval_s)):
        return False
    if session.secrets.pending is None:
        session.save_secrets(session.secrets.with_pending(crypto.random_bytes(crypto.KEM_SEED_SIZE), now))
    pending = session.secrets.pending
    assert pending is not None
    new_keys = DeviceKeys(pending.kem_seed, session.secrets.device.sign_seed)
    me = new_keys.device_id

    def rekeyed(current: DeviceList) -> list[DeviceRecord]:
        mine = current.find(me)
        if mine is None:
            raise DeviceRemoved(f"this device is not in the device list of {current.handle}")
        record = dataclasses.replace(mine, enc_key=new_keys.enc_public)
        return [record if d.device_id == me else d for d in current.devices]

    current = await session.directory.walked_own()
    listed = current.find(me)
    if listed is None or listed.enc_key != new_keys.enc_public:  # else published before a crash
        await publish(session, rekeyed)
    session.save_secrets(session.secrets.promoted(now_ms()))
    log.info("rotated this device's encryption key")
    return True
