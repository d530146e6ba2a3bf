"""Property tests of ``diff_lists``: what changed between two list versions, and whether the
step was approved by a device of the earlier version."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.protocol.device_changes import diff_lists, is_approved_step
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.identity import AccountKey

RECOVERY_KEY = bytes(range(32))
SUBSETS = st.sets(st.integers(0, 4), min_size=1)


@pytest.fixture(scope="module")
def devices(make_device):
    return [make_device(f"changes/{i}") for i in range(5)]


@pytest.fixture(scope="module")
def records(devices, make_record):
    return [make_record(d, f"device {i}") for i, d in enumerate(devices)]


@pytest.fixture(scope="module")
def account() -> AccountKey:
    return AccountKey(bytes(range(7, 39)))


def _list(account, records, version, subset, approver=None, key=None) -> DeviceList:
    chosen = [records[i] for i in subset]
    by = records[min(subset) if approver is None else approver].device_id
    return DeviceList.build(
        "alice", key or account.public, version, 5, chosen, approver=by, recovery_key=RECOVERY_KEY
    )


@settings(max_examples=60, deadline=None)
@given(SUBSETS, SUBSETS)
def test_added_and_removed_are_the_set_differences(account, records, before: set[int], after: set[int]) -> None:
    change = diff_lists(_list(account, records, 1, before), _list(account, records, 2, after))
    added = {c.device_id for c in change.changes if c.kind == "added"}
    removed = {c.device_id for c in change.changes if c.kind == "removed"}
    assert added == {records[i].device_id for i in after - before}
    assert removed == {records[i].device_id for i in before - after}
    assert change.devices_changed == (before != after)
    assert [c.device_id for c in change.changes] == sorted(c.device_id for c in change.changes)


@settings(max_examples=60, deadline=None)
@given(SUBSETS, SUBSETS, st.data())
def test_a_step_is_approved_only_by_a_device_of_the_previous_version(
    account, records, before: set[int], after: set[int], data: st.DataObject
) -> None:
    approver = data.draw(st.sampled_from(sorted(after)), label="approver")
    change = diff_lists(_list(account, records, 1, before), _list(account, records, 2, after, approver))
    assert change.approved == (approver in before)
    assert change.approver == records[approver].device_id
    assert change.approver_name == f"device {approver}"


def test_a_step_that_skips_a_version_or_changes_the_key_is_not_approved(account, records) -> None:
    first = _list(account, records, 3, {0, 1})
    assert is_approved_step(first, _list(account, records, 4, {0, 1, 2}))
    assert not is_approved_step(first, _list(account, records, 5, {0, 1, 2}))  # version 4 hidden
    assert not is_approved_step(first, _list(account, records, 3, {0, 1, 2}))  # not newer
    other = AccountKey(bytes(range(40, 72))).public
    assert not is_approved_step(first, _list(account, records, 4, {0, 1}, key=other))


def test_renames_and_new_encryption_keys_are_named(account, records, make_device) -> None:
    before = _list(account, records, 1, {0, 1})
    renamed = dataclasses.replace(records[0], name="work laptop")
    rekeyed = dataclasses.replace(records[1], enc_key=make_device("changes/rekey").enc_public)
    after = DeviceList.build(
        "alice", account.public, 2, 5, [renamed, rekeyed], approver=records[0].device_id,
        recovery_key=RECOVERY_KEY,
    )
    change = diff_lists(before, after)
    kinds = {(c.kind, c.device_id) for c in change.changes}
    assert kinds == {("renamed", records[0].device_id), ("rekeyed", records[1].device_id)}
    rename = next(c for c in change.changes if c.kind == "renamed")
    assert (rename.old_name, rename.name) == ("device 0", "work laptop")
    assert change.approved and not change.devices_changed


def test_an_unchanged_list_has_no_changes(account, records) -> None:
    change = diff_lists(_list(account, records, 1, {0, 2}), _list(account, records, 2, {0, 2}))
    assert change.changes == () and change.approved
