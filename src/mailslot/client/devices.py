"""This account's devices: list them with when each was last seen, rename, remove.

Every change is a new version of the account's device list, built on the newest list the
alert walk reached (``alerts.own_list``: every step since this device's checkpoint checked),
signed with the account key and approved by this device, and published with ``PUT
/v1/accounts/{handle}/devices``; the checkpoint then moves on to it. The walked list is used
even when a change no device approved is in it: removing the device it added, from a device
the account trusts, is how the account gets its list back (``alerts``). The server
takes exactly the next version; if another device published first (``StaleDeviceList``), the
change is built again on the newer list, a bounded number of times.

Removing a device takes it out of the list: from that moment the server refuses its requests
(``device_removed``) and senders, who must seal to exactly the listed devices, no longer
encrypt to it. This device is not removed from here (it would lock itself out mid-command;
another device of the account does it), and neither is the last device (the account would
have no device left to approve anything).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from mailslot.client import alerts
from mailslot.client.models import DeviceInfo
from mailslot.client.session import Session
from mailslot.client.transport import now_ms
from mailslot.errors import InputError, NotFoundError, StaleDeviceList
from mailslot.protocol import wire
from mailslot.protocol.device_list import DeviceList, DeviceRecord, SignedDeviceList, sign_device_list
from mailslot.protocol.identity import check_device_name, parse_device_id
from mailslot.protocol.safety import fingerprint

PUBLISH_TRIES = 3

# Given the current verified own list, the devices of the next version.
Change = Callable[[DeviceList], list[DeviceRecord]]


async def publish(session: Session, change: Change) -> tuple[SignedDeviceList, DeviceList]:
    """Publish the next version of the own list, ``change`` applied to the current one."""
    handle, own = session.secrets.handle, session.secrets.device
    for attempt in range(1, PUBLISH_TRIES + 1):
        current = await session.directory.walked_own()
        new = current.successor(change(current), approver=own.device_id, issued_at_ms=now_ms())
        signed = sign_device_list(new, session.secrets.account, own)
        try:
            await session.transport.call(
                "PUT",
                f"/v1/accounts/{handle}/devices",
                wire.AccountInfo,
                body=wire.DeviceListBody(device_list=signed.to_bytes()),
            )
        except StaleDeviceList:
            if attempt == PUBLISH_TRIES:
                raise
            continue
        alerts.record_own_step(session, current, signed, new)
        return signed, new
    raise AssertionError("unreachable")  # pragma: no cover


def _find(device_list: DeviceList, device_id: bytes) -> DeviceRecord:
    record = device_list.find(device_id)
    if record is None:
        raise NotFoundError(f"account {device_list.handle} has no device {device_id.hex()}")
    return record


async def rename(session: Session, name: str, device_id: str | None = None) -> DeviceRecord:
    """Give a device of this account (this one by default) a new name; its new record."""
    check_device_name(name)
    me = session.secrets.device.device_id
    target = parse_device_id(device_id) if device_id is not None else me

    def renamed(current: DeviceList) -> list[DeviceRecord]:
        record = dataclasses.replace(_find(current, target), name=name)
        return [record if d.device_id == target else d for d in current.devices]

    _, new = await publish(session, renamed)
    if target == me and session.secrets.device_name != name:
        session.save_secrets(session.secrets.renamed(name))
    return _find(new, target)


async def remove(session: Session, device_id: str) -> DeviceRecord:
    """Take a device out of this account's list; the removed device's record."""
    target = parse_device_id(device_id)
    if target == session.secrets.device.device_id:
        raise InputError(
            "this is the device you are using; run this on another device of the account "
            "(mailslot device remove ID there)"
        )
    removed: list[DeviceRecord] = []

    def without(current: DeviceList) -> list[DeviceRecord]:
        removed[:] = [_find(current, target)]
        if len(current.devices) == 1:
            raise InputError("the last device of an account cannot be removed")
        return [d for d in current.devices if d.device_id != target]

    await publish(session, without)
    return removed[0]


async def devices(session: Session) -> list[DeviceInfo]:
    """Every device of this account (the newest walked list, even one with a change nobody
    approved: the user needs to see it to remove the device), by name, with when the server
    last saw each (``GET /v1/devices``)."""
    current = await session.directory.walked_own()
    seen = await session.transport.call("GET", "/v1/devices", wire.DevicesSeen)
    last_seen = {d.device_id: d.last_seen for d in seen.devices}
    me = session.secrets.device.device_id
    infos = [
        DeviceInfo(
            device_id=d.device_id.hex(),
            name=d.name,
            created_at=d.created_at_ms,
            last_seen=last_seen.get(d.device_id.hex()),
            enc_key_fingerprint=fingerprint(d.enc_key),
            this_device=d.device_id == me,
        )
        for d in current.devices
    ]
    return sorted(infos, key=lambda i: (not i.this_device, i.name, i.device_id))
