"""What changed between two versions of an account's device list, and whether it was approved.

This is where a device alert comes from. A device keeps the last list of its own account that
it verified, walks every later version in order (the server keeps them all) and, for each
step, asks ``diff_lists``: which devices came, went, were renamed or took a new encryption key,
and which device approved the step. A step is *approved* only when

1. it keeps the handle and the account key (a new account key is a recovery or an attack, and
   the trust rules of ``client/trust.py`` handle it);
2. its version is exactly one above the previous one (no version was hidden in between);
3. its approver was a device of the previous version.

The approver's own signature is already checked by ``device_list.verify_device_list``, so a
step that fails 3. was signed by the account key but approved by a device the account did not
have: the account key is in someone else's hands. Clients show such a step as an attack.

``approved`` looks at one step only. A walk over several steps must also refuse an approver
that an earlier unapproved step brought in (else a device added with a stolen account key
could approve further changes itself): ``client/alerts.py`` (``WalkState``) does that.

The same diff, without the approval question, tells a contact that a person's devices changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailslot.protocol.device_list import DeviceList, DeviceRecord

ChangeKind = Literal["added", "removed", "renamed", "rekeyed"]


@dataclass(frozen=True)
class DeviceChange:
    """One device's part in a list change; ``name`` is its name after the change (before it,
    for a removed device) and ``old_name`` the name it had before a rename."""

    kind: ChangeKind
    device_id: bytes
    name: str
    old_name: str = ""


@dataclass(frozen=True)
class ListChange:
    """The step from ``from_version`` to ``version`` of ``handle``'s device list."""

    handle: str
    from_version: int
    version: int
    issued_at_ms: int
    approver: bytes
    approver_name: str
    approved: bool
    changes: tuple[DeviceChange, ...]

    @property
    def devices_changed(self) -> bool:
        """Whether a device came or went (a rename or key rotation alone does not count)."""
        return any(c.kind in ("added", "removed") for c in self.changes)


def _changes_of(before: DeviceRecord, after: DeviceRecord) -> list[DeviceChange]:
    found: list[DeviceChange] = []
    if before.name != after.name:
        found.append(DeviceChange("renamed", after.device_id, after.name, before.name))
    if before.enc_key != after.enc_key or before.suite != after.suite:
        found.append(DeviceChange("rekeyed", after.device_id, after.name))
    return found


def device_changes(previous: DeviceList, new: DeviceList) -> tuple[DeviceChange, ...]:
    """Every device change from ``previous`` to ``new``, in device-id order."""
    old = {d.device_id: d for d in previous.devices}
    now = {d.device_id: d for d in new.devices}
    found: list[DeviceChange] = []
    for device_id in sorted(old.keys() | now.keys()):
        before, after = old.get(device_id), now.get(device_id)
        if before is None and after is not None:
            found.append(DeviceChange("added", device_id, after.name))
        elif after is None and before is not None:
            found.append(DeviceChange("removed", device_id, before.name))
        elif before is not None and after is not None:
            found.extend(_changes_of(before, after))
    return tuple(found)


def is_approved_step(previous: DeviceList, new: DeviceList) -> bool:
    """Rules 1-3 of the module docstring: same account, next version, approver from before."""
    same_account = new.handle == previous.handle and new.account_key == previous.account_key
    return same_account and new.version == previous.version + 1 and previous.find(new.approver) is not None


def diff_lists(previous: DeviceList, new: DeviceList) -> ListChange:
    """The change from ``previous`` to ``new`` (both already verified) and whether it was
    approved by a device ``previous`` lists."""
    approver = new.find(new.approver)
    return ListChange(
        handle=new.handle,
        from_version=previous.version,
        version=new.version,
        issued_at_ms=new.issued_at_ms,
        approver=new.approver,
        approver_name=approver.name if approver is not None else "",
        approved=is_approved_step(previous, new),
        changes=device_changes(previous, new),
    )
