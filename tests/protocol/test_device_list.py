"""Property tests of device records and the account-signed device list."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import DecodeError, InputError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.device_list import (
    DeviceList,
    DeviceRecord,
    SignedDeviceList,
    check_successor,
    sign_device_list,
    verify_device_list,
)
from mailslot.protocol.encoding import Writer, decode
from mailslot.protocol.identity import AccountKey, device_id_for

HANDLES = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", max_size=31),
)
NAMES = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")),
    min_size=1,
    max_size=64,
)
U64 = st.integers(0, 2**64 - 1)
VERSIONS = st.integers(1, 2**64 - 1)
CRYPTO = settings(max_examples=40, deadline=None)


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@pytest.fixture(scope="module")
def devices(make_device):
    return [make_device(f"device-list/{i}") for i in range(4)]


@pytest.fixture(scope="module")
def account() -> AccountKey:
    return AccountKey(bytes(range(32)))


@pytest.fixture(scope="module")
def other_account() -> AccountKey:
    return AccountKey(bytes(range(1, 33)))


# --- DeviceRecord ---------------------------------------------------------------------------


@CRYPTO
@given(st.integers(0, 3), NAMES, U64)
def test_record_round_trip(devices, make_record, index: int, name: str, created: int) -> None:
    record = make_record(devices[index], name, created)
    assert DeviceRecord.from_bytes(record.to_bytes()) == record
    assert record.device_id == devices[index].device_id


@CRYPTO
@given(st.binary(min_size=16, max_size=16))
def test_record_refuses_device_id_not_matching_sign_key(devices, make_record, device_id: bytes) -> None:
    record = make_record(devices[0])
    if device_id == record.device_id:
        return
    with pytest.raises(InputError):
        dataclasses.replace(record, device_id=device_id)
    # Decoding a record whose id was replaced in the bytes is refused the same way.
    with pytest.raises(DecodeError):
        DeviceRecord.from_bytes(device_id + record.to_bytes()[16:])


def test_record_refuses_another_devices_id(devices, make_record) -> None:
    record = make_record(devices[0])
    with pytest.raises(InputError):
        dataclasses.replace(record, device_id=devices[1].device_id)
    with pytest.raises(InputError):
        dataclasses.replace(record, sign_key=devices[1].sign_public)
    assert device_id_for(devices[1].sign_public) == devices[1].device_id


@given(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)))
def test_record_refuses_unknown_suite(devices, make_record, ids: tuple[int, int, int]) -> None:
    suite = crypto.HpkeSuite(*ids)
    record = make_record(devices[0])
    if suite == crypto.SUITE:
        assert dataclasses.replace(record, suite=suite) == record
        return
    with pytest.raises(InputError):
        dataclasses.replace(record, suite=suite)


@pytest.mark.parametrize("name", ["", "x" * 65, "tab\there", "new\nline", "\x00"])
def test_record_refuses_bad_names(devices, make_record, name: str) -> None:
    with pytest.raises(InputError):
        make_record(devices[0], name)


def test_record_refuses_bad_encryption_key(devices, make_record) -> None:
    record = make_record(devices[0])
    with pytest.raises(InputError):
        dataclasses.replace(record, enc_key=record.enc_key[:-1])
    with pytest.raises(InputError):
        dataclasses.replace(record, enc_key=b"\xff" * crypto.KEM_PUBLIC_SIZE)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_record_truncation_and_trailing_bytes(devices, make_record, data: st.DataObject) -> None:
    encoded = make_record(devices[1], "phone").to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(DecodeError):
        DeviceRecord.from_bytes(encoded[:cut])
    with pytest.raises(DecodeError):
        DeviceRecord.from_bytes(encoded + data.draw(st.binary(min_size=1, max_size=8)))


# --- DeviceList -----------------------------------------------------------------------------

DEVICE_SUBSETS = st.sets(st.integers(0, 3), min_size=1)
RECOVERY_KEY = bytes(range(100, 132))


def _list(devices, make_record, handle, key, version, issued, subset, approver: int | None = None) -> DeviceList:
    """A list of the ``subset`` of ``devices``, approved by device ``approver`` (default: the
    lowest listed)."""
    records = [make_record(devices[i], f"device {i}") for i in subset]
    by = devices[min(subset) if approver is None else approver]
    return DeviceList.build(
        handle, key, version, issued, records, approver=by.device_id, recovery_key=RECOVERY_KEY
    )


def _sign(device_list: DeviceList, account: AccountKey, devices) -> SignedDeviceList:
    approver = next(d for d in devices if d.device_id == device_list.approver)
    return sign_device_list(device_list, account, approver)


@CRYPTO
@given(HANDLES, VERSIONS, U64, DEVICE_SUBSETS)
def test_list_round_trip(devices, make_record, account, handle, version, issued, subset) -> None:
    device_list = _list(devices, make_record, handle, account.public, version, issued, subset)
    assert decode(device_list.to_bytes(), DeviceList.read) == device_list
    assert device_list.device_ids == {devices[i].device_id for i in subset}
    for i in range(4):
        found = device_list.find(devices[i].device_id)
        assert (found is not None) == (i in subset)


def test_list_invariants(devices, make_record, account) -> None:
    a, b = make_record(devices[0]), make_record(devices[1])
    first, second = sorted([a, b], key=lambda r: r.device_id)
    by, rk = first.device_id, RECOVERY_KEY
    DeviceList("alice", account.public, 1, 0, (first, second), by, rk)
    with pytest.raises(InputError, match="sorted"):
        DeviceList("alice", account.public, 1, 0, (second, first), by, rk)
    with pytest.raises(InputError, match="sorted"):
        DeviceList("alice", account.public, 1, 0, (first, first), by, rk)
    with pytest.raises(InputError, match="devices"):
        DeviceList("alice", account.public, 1, 0, (), by, rk)
    with pytest.raises(InputError, match="versions"):
        DeviceList("alice", account.public, 0, 0, (first,), by, rk)
    with pytest.raises(InputError, match="handle"):
        DeviceList("Alice", account.public, 1, 0, (first,), by, rk)
    with pytest.raises(InputError, match="approving device"):
        DeviceList("alice", account.public, 1, 0, (first,), second.device_id, rk)
    with pytest.raises(InputError, match="recovery key"):
        DeviceList("alice", account.public, 1, 0, (first,), by, rk[:31])


def test_successor_raises_the_version_and_keeps_the_keys(devices, make_record, account) -> None:
    current = _list(devices, make_record, "alice", account.public, 4, 0, {0, 1})
    record = make_record(devices[2], "tablet")
    new = current.successor([*current.devices, record], approver=devices[1].device_id, issued_at_ms=9)
    assert (new.version, new.issued_at_ms, new.approver) == (5, 9, devices[1].device_id)
    assert (new.account_key, new.recovery_key) == (current.account_key, current.recovery_key)
    assert new.device_ids == current.device_ids | {devices[2].device_id}
    swapped = current.successor(
        list(current.devices), approver=devices[0].device_id, issued_at_ms=9,
        account_key=bytes(32), recovery_key=bytes(range(32)),
    )
    assert (swapped.account_key, swapped.recovery_key) == (bytes(32), bytes(range(32)))


@CRYPTO
@given(HANDLES, VERSIONS, U64, DEVICE_SUBSETS, st.data())
def test_sign_verify_round_trip(devices, make_record, account, handle, version, issued, subset, data) -> None:
    approver = data.draw(st.sampled_from(sorted(subset)), label="approver")
    device_list = _list(devices, make_record, handle, account.public, version, issued, subset, approver)
    signed = _sign(device_list, account, devices)
    again = SignedDeviceList.from_bytes(signed.to_bytes())
    assert again == signed
    assert verify_device_list(again, handle=handle, account_key=account.public) == device_list


@pytest.fixture(scope="module")
def signed(devices, make_record, account) -> SignedDeviceList:
    return _sign(_list(devices, make_record, "alice", account.public, 3, 0, {0, 2}), account, devices)


@given(HANDLES)
def test_verify_refuses_wrong_handle(signed, account, handle: str) -> None:
    if handle == "alice":
        return
    with pytest.raises(VerificationError):
        verify_device_list(signed, handle=handle, account_key=account.public)


def test_verify_refuses_wrong_account_key(signed, other_account) -> None:
    with pytest.raises(VerificationError):
        verify_device_list(signed, handle="alice", account_key=other_account.public)


@settings(max_examples=100)
@given(st.integers(0, 8 * crypto.SIGNATURE_SIZE - 1))
def test_verify_refuses_flipped_signature_bit(signed, account, bit: int) -> None:
    tampered = SignedDeviceList(signed.list_bytes, _flip(signed.signature, bit), signed.approval)
    with pytest.raises(VerificationError):
        verify_device_list(tampered, handle="alice", account_key=account.public)


@settings(max_examples=100)
@given(st.integers(0, 8 * crypto.SIGNATURE_SIZE - 1))
def test_verify_refuses_flipped_approval_bit(signed, account, bit: int) -> None:
    tampered = SignedDeviceList(signed.list_bytes, signed.signature, _flip(signed.approval, bit))
    with pytest.raises(VerificationError):
        verify_device_list(tampered, handle="alice", account_key=account.public)


def test_verify_refuses_an_approval_by_another_listed_device(devices, signed, account) -> None:
    """The approval must come from the device the list names, not any listed device."""
    other = devices[2]  # listed, but the list names devices[0] as its approver
    assert signed.parse().approver != other.device_id
    forged = SignedDeviceList(
        signed.list_bytes, signed.signature, other.sign(labels.DEVICE_LIST_APPROVAL + signed.list_bytes)
    )
    with pytest.raises(VerificationError):
        verify_device_list(forged, handle="alice", account_key=account.public)


def test_approval_is_not_a_bare_signature_of_the_list(devices, signed, account) -> None:
    """Domain separation: the approver's signature over the list bytes alone does not count."""
    bare = SignedDeviceList(signed.list_bytes, signed.signature, devices[0].sign(signed.list_bytes))
    with pytest.raises(VerificationError):
        verify_device_list(bare, handle="alice", account_key=account.public)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_verify_refuses_flipped_list_bit(signed, account, data: st.DataObject) -> None:
    bit = data.draw(st.integers(0, 8 * len(signed.list_bytes) - 1), label="bit")
    tampered = SignedDeviceList(_flip(signed.list_bytes, bit), signed.signature, signed.approval)
    # A flip either breaks the canonical encoding or the signature; nothing else gets through.
    with pytest.raises((DecodeError, VerificationError)):
        verify_device_list(tampered, handle="alice", account_key=account.public)


def test_verify_refuses_list_signed_by_another_account_key(devices, signed, account, other_account) -> None:
    # The list names the pinned account key, but another key signed it.
    forged = SignedDeviceList(signed.list_bytes, other_account.sign(signed.list_bytes), signed.approval)
    with pytest.raises(VerificationError):
        verify_device_list(forged, handle="alice", account_key=account.public)
    # A list that names and is signed by another key is refused for the pinned key.
    current = signed.parse()
    theirs = current.successor(list(current.devices), approver=current.approver, issued_at_ms=0,
                               account_key=other_account.public)
    with pytest.raises(VerificationError):
        verify_device_list(_sign(theirs, other_account, devices), handle="alice", account_key=account.public)


def test_verify_refuses_list_naming_another_key_even_if_signed_by_the_pinned_key(
    devices, signed, account, other_account
) -> None:
    current = signed.parse()
    theirs = current.successor(list(current.devices), approver=current.approver, issued_at_ms=0,
                               account_key=other_account.public)
    body = theirs.to_bytes()
    approval = devices[0].sign(labels.DEVICE_LIST_APPROVAL + body)
    with pytest.raises(VerificationError):
        verify_device_list(
            SignedDeviceList(body, account.sign(body), approval), handle="alice", account_key=account.public
        )


def test_sign_refuses_list_naming_another_key_or_approver(devices, signed, account, other_account) -> None:
    with pytest.raises(InputError, match="account key"):
        sign_device_list(signed.parse(), other_account, devices[0])
    with pytest.raises(InputError, match="approving device"):
        sign_device_list(signed.parse(), account, devices[2])


def test_list_bytes_open_with_the_device_list_label(devices, signed, account) -> None:
    label = Writer().var(labels.DEVICE_LIST).to_bytes()
    assert signed.list_bytes.startswith(label)
    # The same fields under another label are not a device list, even when validly signed.
    relabelled = Writer().var(labels.CONTENT).to_bytes() + signed.list_bytes[len(label) :]
    approval = devices[0].sign(labels.DEVICE_LIST_APPROVAL + relabelled)
    with pytest.raises(DecodeError):
        verify_device_list(
            SignedDeviceList(relabelled, account.sign(relabelled), approval),
            handle="alice",
            account_key=account.public,
        )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_signed_list_truncation_and_trailing_bytes(signed, data: st.DataObject) -> None:
    encoded = signed.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(DecodeError):
        SignedDeviceList.from_bytes(encoded[:cut])
    with pytest.raises(DecodeError):
        SignedDeviceList.from_bytes(encoded + data.draw(st.binary(min_size=1, max_size=8)))
    list_cut = data.draw(st.integers(0, len(signed.list_bytes) - 1), label="list_cut")
    with pytest.raises(DecodeError):
        SignedDeviceList(signed.list_bytes[:list_cut], signed.signature, signed.approval).parse()


# --- check_successor ------------------------------------------------------------------------


@given(VERSIONS, VERSIONS)
def test_check_successor_needs_increasing_version(devices, make_record, account, v1: int, v2: int) -> None:
    current = _list(devices, make_record, "alice", account.public, v1, 0, {0})
    new = _list(devices, make_record, "alice", account.public, v2, 0, {0, 1})
    if v2 > v1:
        check_successor(current, new)
    else:
        with pytest.raises(VerificationError):
            check_successor(current, new)


def test_check_successor_keeps_handle_and_account_key(devices, make_record, account, other_account) -> None:
    current = _list(devices, make_record, "alice", account.public, 1, 0, {0})
    with pytest.raises(VerificationError):
        check_successor(current, _list(devices, make_record, "bob", account.public, 2, 0, {0}))
    with pytest.raises(VerificationError):
        check_successor(current, _list(devices, make_record, "alice", other_account.public, 2, 0, {0}))
