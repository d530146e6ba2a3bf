"""Property tests of device linking: the link code, and the sealed request and response."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import InputError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.device_list import (
    SignedDeviceList,
    sign_device_list,
    verify_device_list,
)
from mailslot.protocol.encoding import Writer
from mailslot.protocol.linking import (
    SCHEME_PREFIX,
    LinkCode,
    _account_key_info,
    open_link_request,
    open_link_response,
    seal_link_request,
    seal_link_response,
)

IDS = st.binary(min_size=16, max_size=16)
SERVERS = st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["https://", "http://"]),
    st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")), max_size=40),
)
CODES = st.builds(LinkCode, SERVERS, IDS, IDS)
CRYPTO = settings(max_examples=30, deadline=None)


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


# --- LinkCode -------------------------------------------------------------------------------


@settings(max_examples=300)
@given(CODES)
def test_link_code_uri_round_trip(code: LinkCode) -> None:
    uri = code.to_uri()
    assert uri.startswith(SCHEME_PREFIX)
    assert LinkCode.parse(uri) == code
    assert LinkCode.parse(f"  {uri}\n") == code


@settings(max_examples=300)
@given(st.one_of(st.text(), st.text().map(lambda t: SCHEME_PREFIX + t)))
def test_parse_arbitrary_text_raises_only_input_error(text: str) -> None:
    with contextlib.suppress(InputError):
        code = LinkCode.parse(text)
        assert len(code.link_id) == 16
        assert len(code.secret) == 16
        assert code.server.startswith(("https://", "http://"))


@settings(max_examples=300)
@given(CODES, st.data())
def test_parse_mutated_uri_raises_only_input_error(code: LinkCode, data: st.DataObject) -> None:
    uri = code.to_uri()
    at = data.draw(st.integers(0, len(uri)), label="at")
    cut = data.draw(st.integers(0, 4), label="cut")
    insert = data.draw(st.text(alphabet="&=?%;+ #v1xyz0", max_size=4), label="insert")
    with contextlib.suppress(InputError):
        LinkCode.parse(uri[:at] + insert + uri[at + cut :])


@pytest.mark.parametrize(
    "uri",
    [
        "mailslot://link?v=2&server=https%3A%2F%2Fx&id={id}&key={key}",
        "mailslot://link?server=https%3A%2F%2Fx&id={id}&key={key}",
        "mailslot://link?v=1&id={id}&key={key}",
        "mailslot://link?v=1&server=https%3A%2F%2Fx&server=https%3A%2F%2Fy&id={id}&key={key}",
        "mailslot://link?v=1&server=ftp%3A%2F%2Fx&id={id}&key={key}",
        "mailslot://link?v=1&server=https%3A%2F%2Fx&id={id}00&key={key}",
        "mailslot://link?v=1&server=https%3A%2F%2Fx&id={id}&key={key}0",
        "mailslot://link?v=1&server=https%3A%2F%2Fx&id={id}&key=zz{key}",
        "mailslot://link?v=1&server=https%3A%2F%2Fx&id={id}",
        "https://link?v=1&server=https%3A%2F%2Fx&id={id}&key={key}",
        "mailslot://link?v=1&server=https://\udc80&id={id}&key={key}",  # from surrogateescape
        "mailslot://link?v=1&server=https%3A%2F%2Fx%0A&id={id}&key={key}",
        "mailslot://link?v=1&server=https://x\x00&id={id}&key={key}",
    ],
)
def test_parse_refuses_malformed_codes(uri: str) -> None:
    valid = LinkCode("https://x", b"\x01" * 16, b"\x02" * 16)
    assert LinkCode.parse(valid.to_uri()) == valid
    with pytest.raises(InputError):
        LinkCode.parse(uri.format(id="01" * 16, key="02" * 16))


@CRYPTO
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_code_seal_open_round_trip(label: bytes, plaintext: bytes) -> None:
    code = LinkCode("https://x", b"\x01" * 16, b"\x02" * 16)
    sealed = code.seal(label, plaintext)
    assert code.open(label, sealed) == plaintext
    with pytest.raises(VerificationError):
        code.open(label + b"x", sealed)


@given(st.binary(max_size=40))
def test_code_open_arbitrary_bytes_is_verification_error(sealed: bytes) -> None:
    with pytest.raises(VerificationError):
        LinkCode("https://x", b"\x01" * 16, b"\x02" * 16).open(labels.LINK_REQUEST, sealed)


# --- request and response -------------------------------------------------------------------


@pytest.fixture(scope="module")
def code() -> LinkCode:
    return LinkCode("https://mail.example", b"\x10" * 16, b"\x20" * 16)


@pytest.fixture(scope="module")
def new_device(make_device):
    return make_device("linking/new")


NAMES = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=64)


@CRYPTO
@given(NAMES, st.integers(0, 2**64 - 1))
def test_link_request_round_trip(code, new_device, make_record, name: str, created: int) -> None:
    record = make_record(new_device, name, created)
    assert open_link_request(code, seal_link_request(code, new_device, record)) == record


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_link_request_flipped_bit_fails(code, new_device, make_record, data: st.DataObject) -> None:
    sealed = seal_link_request(code, new_device, make_record(new_device))
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1), label="bit")
    with pytest.raises(VerificationError):
        open_link_request(code, _flip(sealed, bit))


def test_link_request_for_another_code_fails(code, new_device, make_record) -> None:
    sealed = seal_link_request(code, new_device, make_record(new_device))
    for other in (
        dataclasses.replace(code, secret=b"\x21" * 16),
        dataclasses.replace(code, link_id=b"\x11" * 16),
    ):
        with pytest.raises(VerificationError):
            open_link_request(other, sealed)


def test_link_request_needs_the_records_signing_key(code, new_device, mallory, make_record) -> None:
    # Mallory knows the code but not the new device's signing key: the self-signature fails.
    sealed = seal_link_request(code, mallory, make_record(new_device))
    with pytest.raises(VerificationError):
        open_link_request(code, sealed)


def test_link_request_self_signature_is_bound_to_the_link_id(code, new_device, make_record) -> None:
    # A request made for one link, re-sealed under another code, does not verify there.
    other = dataclasses.replace(code, link_id=b"\x11" * 16)
    plain = code.open(labels.LINK_REQUEST, seal_link_request(code, new_device, make_record(new_device)))
    with pytest.raises(VerificationError):
        open_link_request(other, other.seal(labels.LINK_REQUEST, plain))


@given(st.binary(max_size=200))
def test_link_request_of_arbitrary_plaintext_is_verification_error(code, plain: bytes) -> None:
    with pytest.raises(VerificationError):
        open_link_request(code, code.seal(labels.LINK_REQUEST, plain))


@pytest.fixture(scope="module")
def linked(alice, new_device, make_record):
    """Alice's version-2 list with the new device added, signed by her account key."""
    record = make_record(new_device, "new phone")
    devices = [*alice.device_list.devices, record]
    new_list = alice.device_list.successor(devices, approver=alice.devices[0].device_id, issued_at_ms=0)
    return record, sign_device_list(new_list, alice.key, alice.devices[0])


def test_link_response_round_trip(code, alice, new_device, linked) -> None:
    record, signed = linked
    sealed = seal_link_response(code, record, "alice", signed, alice.key)
    response = open_link_response(code, new_device, sealed)
    assert response.handle == "alice"
    assert response.signed_list == signed
    assert response.account_key.seed == alice.key.seed
    verified = verify_device_list(signed, handle="alice", account_key=response.account_key.public)
    assert verified.find(new_device.device_id) == record


def test_link_response_sealed_with_another_codes_secret_fails(code, alice, new_device, linked) -> None:
    record, signed = linked
    for other in (
        LinkCode(code.server, code.link_id, b"\x21" * 16),
        LinkCode(code.server, b"\x11" * 16, b"\x21" * 16),
    ):
        sealed = seal_link_response(other, record, "alice", signed, alice.key)
        with pytest.raises(VerificationError):
            open_link_response(code, new_device, sealed)


def test_link_response_for_another_device_fails(code, alice, bob, linked) -> None:
    # The account key is sealed to the new device's key; another device cannot open it.
    record, signed = linked
    sealed = seal_link_response(code, record, "alice", signed, alice.key)
    with pytest.raises(VerificationError):
        open_link_response(code, bob.devices[0], sealed)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_link_response_flipped_bit_fails(code, alice, new_device, linked, data: st.DataObject) -> None:
    record, signed = linked
    sealed = seal_link_response(code, record, "alice", signed, alice.key)
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1), label="bit")
    with pytest.raises(VerificationError):
        open_link_response(code, new_device, _flip(sealed, bit))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_link_response_of_arbitrary_plaintext_is_verification_error(code, new_device, plain: bytes) -> None:
    with pytest.raises(VerificationError):
        open_link_response(code, new_device, code.seal(labels.LINK_RESPONSE, plain))


def test_link_response_needs_a_32_byte_account_key(code, new_device) -> None:
    def response_with(seed: bytes) -> bytes:
        info = _account_key_info(code.link_id, new_device.device_id)
        wrapped = crypto.hpke_seal(new_device.enc_public, seed, info)
        empty_list = SignedDeviceList(b"", b"s" * 64, b"a" * 64).to_bytes()
        plain = Writer().text("alice").var(empty_list).var(wrapped).to_bytes()
        return code.seal(labels.LINK_RESPONSE, plain)

    assert open_link_response(code, new_device, response_with(b"k" * 32)).account_key.seed == b"k" * 32
    for size in (0, 31, 33, 64):
        with pytest.raises(VerificationError):
            open_link_response(code, new_device, response_with(b"k" * size))
