"""Recovery codes and claims: a code parses back to its secret however it is typed, a claim
verifies only under the recovery key the current list commits to, and only for the next
version of the same handle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import InputError, VerificationError
from mailslot.protocol.device_list import SignedDeviceList, sign_device_list
from mailslot.protocol.identity import AccountKey
from mailslot.protocol.recovery import (
    CODE_LETTERS,
    SECRET_SIZE,
    RecoverySecret,
    parse_recovery_code,
    sign_recovery,
    verify_recovery,
)

SECRETS = st.binary(min_size=SECRET_SIZE, max_size=SECRET_SIZE).map(RecoverySecret)


@given(SECRETS)
def test_code_round_trip(secret: RecoverySecret) -> None:
    code = secret.code
    assert len(code.replace("-", "")) == CODE_LETTERS and code.count("-") == 7
    assert parse_recovery_code(code) == secret


@given(SECRETS, st.sampled_from([" ", "", "  ", "\n"]))
def test_codes_are_read_as_people_type_them(secret: RecoverySecret, sep: str) -> None:
    typed = sep.join(secret.code.lower().split("-"))
    assert parse_recovery_code(typed) == secret
    assert parse_recovery_code(secret.code.replace("O", "0").replace("I", "1").replace("B", "8")) == secret


@given(st.text(max_size=50))
def test_anything_else_is_an_input_error(text: str) -> None:
    try:
        secret = parse_recovery_code(text)
    except InputError:
        return
    assert parse_recovery_code(secret.code) == secret  # only a well-formed code gets here


def test_a_code_gives_each_handle_its_own_key() -> None:
    secret = RecoverySecret.generate()
    assert secret.key_for("alice").public != secret.key_for("bob").public
    assert secret.key_for("alice").public == RecoverySecret(secret.secret).key_for("alice").public
    assert secret.secret.hex() not in repr(secret) and repr(secret.secret) not in repr(secret)


@pytest.fixture(scope="module")
def recovery(alice, make_device, make_record):
    """Alice's current list (committing to her recovery key) and a version-2 list under a new
    account key, holding only a new device."""
    new_device = make_device("recovery/new")
    new_key = AccountKey.generate()
    new_list = alice.device_list.successor(
        [make_record(new_device, "new phone")], approver=new_device.device_id, issued_at_ms=9,
        account_key=new_key.public, recovery_key=RecoverySecret.generate().key_for("alice").public,
    )
    return new_device, new_key, sign_device_list(new_list, new_key, new_device)


def test_a_claim_with_the_right_code_verifies(alice, recovery) -> None:
    _, new_key, signed = recovery
    signature = sign_recovery(alice.recovery, alice.device_list, signed)
    assert verify_recovery(alice.device_list, signed, signature).account_key == new_key.public


def test_a_wrong_code_is_refused_locally_and_by_the_verifier(alice, recovery) -> None:
    _, _, signed = recovery
    wrong = RecoverySecret.generate()
    with pytest.raises(VerificationError):
        sign_recovery(wrong, alice.device_list, signed)
    forged = wrong.key_for("alice").sign(b"anything")
    with pytest.raises(VerificationError):
        verify_recovery(alice.device_list, signed, forged)


def test_a_claim_covers_exactly_the_new_list(alice, recovery) -> None:
    new_device, new_key, signed = recovery
    signature = sign_recovery(alice.recovery, alice.device_list, signed)
    other = signed.parse().successor(
        list(signed.parse().devices), approver=new_device.device_id, issued_at_ms=10
    )
    other_signed = sign_device_list(other, new_key, new_device)
    with pytest.raises(VerificationError):
        verify_recovery(alice.device_list, other_signed, signature)


def test_a_recovered_list_must_be_the_next_version(alice, recovery, make_record) -> None:
    new_device, new_key, signed = recovery
    skipped = signed.parse().successor(
        list(signed.parse().devices), approver=new_device.device_id, issued_at_ms=10
    )
    skipped_signed = sign_device_list(skipped, new_key, new_device)  # version 3, not 2
    signature = sign_recovery(alice.recovery, alice.device_list, skipped_signed)
    with pytest.raises(VerificationError, match="version 2"):
        verify_recovery(alice.device_list, skipped_signed, signature)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 8 * 64 - 1))
def test_a_flipped_claim_bit_is_refused(alice, recovery, bit: int) -> None:
    _, _, signed = recovery
    signature = bytearray(sign_recovery(alice.recovery, alice.device_list, signed))
    signature[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(VerificationError):
        verify_recovery(alice.device_list, signed, bytes(signature))


def test_a_new_list_not_signed_by_its_own_key_is_refused(alice, recovery) -> None:
    _, _, signed = recovery
    bad = SignedDeviceList(signed.list_bytes, AccountKey.generate().sign(signed.list_bytes), signed.approval)
    signature = sign_recovery(alice.recovery, alice.device_list, bad)
    with pytest.raises(VerificationError):
        verify_recovery(alice.device_list, bad, signature)
