"""Device alerts: every change to this account's device list, checked step by step.

The server keeps every published version of an account's list (``GET
/v1/accounts/{handle}/devices/history``). This device remembers the last own list whose steps
it checked (the *checkpoint*, in the store) and, from there, walks each later version in
order. Each list must, in order:

1. parse, be for this handle and carry the signatures ``verify_device_list`` checks: the
   account key of the list before it (or, where the account key changed, the key the list
   names, so at least it is self-consistent) and the device it names as approver;
2. be exactly the next version (a server that leaves a version out is hiding a step; that is
   refused with ``VerificationError`` and the checkpoint stays where it was).

Then ``device_changes.diff_lists`` says what changed and whether a device of the previous
version approved it. Each change becomes one ``DeviceAlert``; a step no device approved is an
*attack* (the account key is in someone else's hands), and a step that replaced the account
key is a ``recovered`` alert, an attack too unless this device made it. An attack is still
recorded and the checkpoint advances past it: it is shown, never accepted as normal, and not
shown again forever. Alerts of a step and the checkpoint move together in one transaction.
Changes this device approved itself start ``seen``, and so does a device's routine key
rotation; everything else waits for the user.

A step that drops this device means it was removed: the store records who removed it and when,
and every later request fails at once with that message (``DeviceRemoved``). The server's own
``device_removed`` refusal leads here too (``explain_removal``), to find the same words.

Approval is judged with what the walk learnt on the way: a device that an unapproved step added
holds a signing key from whoever made that step, so a later step it approves is unapproved too
(``diff_lists`` alone would call it approved: the device was in the previous version).

The own list this device uses (``own_list``; the directory asks here for this account's list,
never the server) is the *walked* list: the checkpoint, the newest version whose step was
checked. A newer list is used only by walking to it (``refresh``). The walked list is refused
(``VerificationError``, naming the change, the device and the fix), and so nothing is sent to
anyone, while

* the newest step was unapproved, or
* it lists a device that an unapproved step added (*foreign*), or
* it lists a device whose encryption key an unapproved step set (*rekeyed*).

It is usable again once a later approved step (approved by a device of the previous version
that is not foreign) removed every foreign device, removed or re-keyed every rekeyed device
(the device's own key rotation would), and is itself the newest step. What the walk knows is rebuilt from
the recorded own alerts (``replay``), which are stored with the checkpoint step by step. A
refusal is given only after walking to the server's newest version (it may have set it right).

The flows that fix the list (remove, rename: ``devices.publish``) build on the walked list
without that refusal (``checked=False``); linking a new device does not: the new device would
take the list, foreign devices and all, as its trusted starting point. Received messages from this
account's own devices are checked against the walked list and are held while it is refused.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mailslot.client.directory import fetch_served
from mailslot.client.models import DeviceAlert
from mailslot.errors import DecodeError, DeviceRemoved, MailslotError, VerificationError
from mailslot.protocol import wire
from mailslot.protocol.device_changes import ListChange, diff_lists
from mailslot.protocol.device_list import DeviceList, SignedDeviceList, verify_device_list

ALERT_LOGGER = "mailslot.client.alerts"

if TYPE_CHECKING:  # the session wires ``own_list`` into its directory
    from mailslot.client.session import Session

log = logging.getLogger("mailslot.client")
# Alerts get their own logger: front ends that show alerts themselves can leave it out.
alert_log = logging.getLogger(ALERT_LOGGER)

HISTORY_PAGE = 100


@dataclass(frozen=True)
class _Removal:
    message: str
    details: dict[str, Any]


@dataclass
class WalkState:
    """What the walk knows about the devices of the own list (module docstring): the listed
    devices an unapproved step added (``foreign``) or re-keyed (``rekeyed``), each with the
    alert that says so, and the alerts of the newest step if it was unapproved."""

    foreign: dict[bytes, DeviceAlert] = field(default_factory=dict)
    rekeyed: dict[bytes, DeviceAlert] = field(default_factory=dict)
    unapproved: tuple[DeviceAlert, ...] = ()

    def approves(self, change: ListChange) -> bool:
        """Whether a device of the previous version that no unapproved step added approved it."""
        return change.approved and change.approver not in self.foreign

    def apply(self, step: Sequence[DeviceAlert], approved: bool) -> None:
        """Take one step (its alerts, one per change) into account."""
        for alert in step:
            device = bytes.fromhex(alert.device_id)
            if alert.kind == "removed":
                self.foreign.pop(device, None)
                self.rekeyed.pop(device, None)
            elif approved and alert.kind == "rekeyed":
                self.rekeyed.pop(device, None)  # a foreign device stays foreign
            elif not approved and alert.kind == "added":
                self.foreign[device] = alert
            elif not approved and alert.kind == "rekeyed":
                self.rekeyed[device] = alert
        self.unapproved = () if approved else tuple(step)

    def refusal(self, current: DeviceList) -> VerificationError | None:
        """Why ``current`` (the walked list) must not be used, or None if it may."""
        listed = current.device_ids
        culprits = [a for d, a in self.foreign.items() if d in listed]
        culprits += [a for d, a in self.rekeyed.items() if d in listed]
        culprits += list(self.unapproved)
        if not culprits:
            return None
        return _refusal(current, culprits[0], sorted({a.device_id for a in culprits if a.kind != "removed"}))


_DONE = {
    "added": "added",
    "removed": "removed",
    "renamed": "renamed",
    "rekeyed": "given a new encryption key",
    "recovered": "made the account's new key holder",
}


def _refusal(current: DeviceList, culprit: DeviceAlert, devices: list[str]) -> VerificationError:
    if culprit.kind in ("added", "rekeyed"):
        fix = f"remove the device with `mailslot device remove {culprit.device_id}` from a trusted device"
    else:
        fix = "publish a new version from a trusted device (for example `mailslot device rename NAME`)"
    message = (
        "your account's device list has a change that none of your devices approved (device "
        f"{culprit.device_name!r} ({culprit.device_id}) {_DONE[culprit.kind]} by "
        f"{culprit.approver_name!r} ({culprit.approver_id}) at {format_ms(culprit.at)}, device "
        f"list version {culprit.version}); this may mean your account key was stolen. Nothing is "
        f"sent until this is resolved: run `mailslot device alerts`, and {fix}"
    )
    details = {
        "handle": current.handle,
        "version": culprit.version,
        "kind": culprit.kind,
        "device_id": culprit.device_id,
        "device_name": culprit.device_name,
        "approver_id": culprit.approver_id,
        "approver_name": culprit.approver_name,
        "at": culprit.at,
        "unapproved_devices": devices,
    }
    return VerificationError(message, details=details)


async def own_list(session: Session, *, refresh: bool, checked: bool = True) -> DeviceList:
    """This account's list for sending, receiving and publishing: the walked list (walked to
    the server's newest first if ``refresh``, or if there is no checkpoint yet). With
    ``checked``, ``VerificationError`` while the module docstring's rule refuses it, and only
    after walking to the newest version (a later approved one may have set it right)."""
    session.transport.check_not_removed()
    walked = refresh or session.store.checkpoint(session.secrets.handle) is None
    if walked:
        await _walk_and_report(session)
    current = _stored_checkpoint(session)
    if not checked:
        return current
    refusal = replay(session, current).refusal(current)
    if refusal is not None and not walked:  # a newer approved version may have fixed it
        await _walk_and_report(session)
        current = _stored_checkpoint(session)
        refusal = replay(session, current).refusal(current)
    if refusal is not None:
        raise refusal
    return current


async def _walk_and_report(session: Session) -> None:
    """``check_devices``, its new alerts passed to the directory's ``on_alert`` (in ``receive``)."""
    report = session.directory.on_alert
    for alert in await check_devices(session):
        if report is not None:
            report(alert)


def replay(session: Session, checkpoint: DeviceList) -> WalkState:
    """The walk's state at ``checkpoint``, rebuilt from the own alerts recorded step by step.

    A step with no alert changed no device; it is approved as far as this state goes (an
    unapproved step that changes nothing has a foreign approver, still listed).
    """
    handle = session.secrets.handle
    own = [a for a in session.store.alerts(unseen_only=False) if a.own and a.handle == handle]
    state = WalkState()
    newest = 0
    for version, group in itertools.groupby(own, key=lambda a: a.version):
        step = list(group)
        approved = not any(a.attack for a in step) and bytes.fromhex(step[0].approver_id) not in state.foreign
        state.apply(step, approved)
        newest = version
    if newest != checkpoint.version:
        state.unapproved = ()
    return state


async def check_devices(session: Session) -> list[DeviceAlert]:
    """Walk the own list's history from the checkpoint; record and return the new alerts that
    need the user's attention (unseen ones). Raises ``DeviceRemoved`` if a step dropped this
    device (after recording everything up to it)."""
    session.transport.check_not_removed()
    new_alerts, removal = await _walk(session)
    if removal is not None:
        raise _remember_removal(session, removal)
    return [a for a in new_alerts if not a.seen]


async def explain_removal(session: Session, refusal: DeviceRemoved) -> DeviceRemoved:
    """The error for the server's ``device_removed`` refusal: who removed this device and
    when, from the list history if it can be read, else the server's own words. Recorded, so
    that later commands fail fast with the same message."""
    removal: _Removal | None = None
    try:
        _, removal = await _walk(session)
    except MailslotError as exc:
        log.warning("could not read the device list history to explain the removal: %s", exc.message)
    if removal is None:
        removal = _Removal(refusal.message, dict(refusal.details))
    return _remember_removal(session, removal)


def _remember_removal(session: Session, removal: _Removal) -> DeviceRemoved:
    session.store.set_removal(removal.message, removal.details)
    error = DeviceRemoved(removal.message, details=removal.details)
    session.transport.removed = error
    return DeviceRemoved(removal.message, details=dict(removal.details))


async def _walk(session: Session) -> tuple[list[DeviceAlert], _Removal | None]:
    """Check and record every step after the checkpoint; the alerts recorded and the removal
    of this device, if a step removed it."""
    handle = session.secrets.handle
    previous = await _checkpoint(session)
    state = replay(session, previous)
    recorded: list[DeviceAlert] = []
    removal: _Removal | None = None
    while True:
        page = await _history(session, handle, previous.version)
        for raw in page.lists:
            signed, current = _verified_next(handle, previous, raw)
            change = diff_lists(previous, current)
            approved, step = _alerts_of(session, previous, current, change, state)
            recorded += session.store.record_step(handle, current.version, signed.to_bytes(), step)
            state.apply(step, approved)
            me = session.secrets.device.device_id
            if removal is None and previous.find(me) is not None and current.find(me) is None:
                removal = _removal_of(current, change, previous.account_key != current.account_key, approved)
            if approved:
                _remember_latest(session, signed, current)
            previous = current
        if not page.more or not page.lists:
            break
    for alert in recorded:
        level = logging.WARNING if alert.attack else logging.INFO
        alert_log.log(
            level,
            "device alert: %s %r (%s) in version %d",
            alert.kind,
            alert.device_name,
            alert.device_id,
            alert.version,
        )
    return recorded, removal


async def _history(session: Session, handle: str, after: int) -> wire.DeviceListHistory:
    page = await session.transport.call(
        "GET",
        f"/v1/accounts/{handle}/devices/history",
        wire.DeviceListHistory,
        query={"after": after, "limit": HISTORY_PAGE},
        signed=False,
    )
    if page.handle != handle:
        raise VerificationError(f"the server answered with the history of {page.handle!r}")
    return page


async def _checkpoint(session: Session) -> DeviceList:
    """The last own list whose steps were checked, verified again under the own account key.

    A store from before alerts existed has none: the stored own list (verified when it was
    stored) becomes the checkpoint, or else the list the server serves now.
    """
    handle, key = session.secrets.handle, session.secrets.account.public
    stored = session.store.checkpoint(handle) or session.store.device_list(handle)
    if stored is None:
        signed, _ = await fetch_served(session.transport, handle)
    else:
        signed = SignedDeviceList.from_bytes(stored[1])
    device_list = verify_device_list(signed, handle=handle, account_key=key)
    session.store.record_step(handle, device_list.version, signed.to_bytes())
    return device_list


def _stored_checkpoint(session: Session) -> DeviceList:
    """The checkpoint list, verified again under the own account key (the disk is not trusted
    more than the server)."""
    handle = session.secrets.handle
    stored = session.store.checkpoint(handle)
    if stored is None:
        raise VerificationError(f"no checked device list of {handle!r} on this device")
    try:
        signed = SignedDeviceList.from_bytes(stored[1])
        current = verify_device_list(signed, handle=handle, account_key=signed.parse().account_key)
    except DecodeError as exc:
        raise VerificationError(f"the stored device list of {handle!r} is malformed") from exc
    if current.account_key != session.secrets.account.public:
        raise VerificationError(
            f"account {handle} has a new account key (device list version {current.version}, a "
            "recovery); this device can no longer use it"
        )
    return current


def record_own_step(
    session: Session, previous: DeviceList, signed: SignedDeviceList, new: DeviceList
) -> None:
    """Record a step this device published itself (the server took it as exactly the version
    after ``previous``, the walked list), as the walk would: the checkpoint moves on at once."""
    change = diff_lists(previous, new)
    state = replay(session, previous)
    approved, step = _alerts_of(session, previous, new, change, state)
    session.store.record_step(new.handle, new.version, signed.to_bytes(), step)
    if approved:
        _remember_latest(session, signed, new)


def _verified_next(handle: str, previous: DeviceList, raw: bytes) -> tuple[SignedDeviceList, DeviceList]:
    """Rules 1 and 2 of the module docstring."""
    try:
        signed = SignedDeviceList.from_bytes(raw)
        named_key = signed.parse().account_key
    except DecodeError as exc:
        raise VerificationError(f"the server sent a malformed device list of {handle!r}") from exc
    try:
        current = verify_device_list(signed, handle=handle, account_key=named_key)
    except VerificationError as exc:
        raise VerificationError(
            f"a list in the device history of {handle!r} does not verify; refusing it"
        ) from exc
    if current.version != previous.version + 1:
        raise VerificationError(
            f"the server skipped from version {previous.version} to {current.version} of "
            f"{handle!r}'s device list; refusing the history (a hidden change?)"
        )
    return signed, current


def _alerts_of(
    session: Session, previous: DeviceList, current: DeviceList, change: ListChange, state: WalkState
) -> tuple[bool, list[DeviceAlert]]:
    """Whether the step was approved, and one alert per device change of it (and a
    ``recovered`` one first if the account key changed); see the module docstring for
    ``attack`` and ``seen``."""
    me = session.secrets.device.device_id
    recovered = current.account_key != previous.account_key
    attack = current.approver != me if recovered else not state.approves(change)

    def alert(kind: Any, device_id: bytes, name: str) -> DeviceAlert:
        routine = kind == "rekeyed" and device_id == current.approver
        return DeviceAlert(
            id=0,
            handle=current.handle,
            version=current.version,
            at=current.issued_at_ms,
            kind=kind,
            device_id=device_id.hex(),
            device_name=name,
            approver_id=current.approver.hex(),
            approver_name=change.approver_name,
            attack=attack,
            own=True,
            seen=not attack and (current.approver == me or routine),
        )

    found = [alert("recovered", current.approver, change.approver_name)] if recovered else []
    found += [alert(c.kind, c.device_id, c.name) for c in change.changes]
    return not attack, found


def _removal_of(current: DeviceList, change: ListChange, recovered: bool, approved: bool) -> _Removal:
    """The words for the step that dropped this device."""
    by = f"device {change.approver_name!r} ({change.approver.hex()})"
    if recovered:
        how = f"when the account was recovered with its recovery code by new {by}"
    elif not approved:
        how = f"by a change NO device of the account approved (it names {by}: the account key is compromised)"
    else:
        how = f"by {by}"
    message = (
        f"this device was removed from account {current.handle} {how} at "
        f"{format_ms(current.issued_at_ms)} (device list version {current.version}); it can no "
        "longer send or receive"
    )
    details = {
        "handle": current.handle,
        "version": current.version,
        "removed_at": current.issued_at_ms,
        "approver_id": change.approver.hex(),
        "approver_name": change.approver_name,
        "recovered": recovered,
        "attack": not approved and not recovered,
    }
    return _Removal(message, details)


def _remember_latest(session: Session, signed: SignedDeviceList, current: DeviceList) -> None:
    """Keep a newer approved own list (same account key) as the stored own list too."""
    stored = session.store.device_list(current.handle)
    same_key = current.account_key == session.secrets.account.public
    if same_key and (stored is None or current.version > stored[0]):
        session.directory.remember(signed, current)


def format_ms(ms: int) -> str:
    """A Unix-ms time as ``2024-05-01 12:34:56 UTC``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
