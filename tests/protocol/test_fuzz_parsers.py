"""A fuzz harness: arbitrary and mutated input into every parser; only documented errors escape.

Each test feeds either arbitrary bytes or text, or a valid encoding with a few random edits
(byte changes, insertions, deletions, a rewritten length), which reaches the checks behind the
first length prefix far more often than random bytes do. Whatever a parser accepts must be
canonical: it encodes back to exactly the input.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import (
    AuthenticationError,
    DecodeError,
    InputError,
    MessageRejected,
    VerificationError,
)
from mailslot.protocol import labels, wire
from mailslot.protocol.auth import RequestSignature, sign_request
from mailslot.protocol.device_list import (
    DeviceList,
    DeviceRecord,
    SignedDeviceList,
    sign_device_list,
    verify_device_list,
)
from mailslot.protocol.encoding import Writer, decode
from mailslot.protocol.identity import DeviceKeys
from mailslot.protocol.linking import (
    LinkCode,
    open_link_request,
    open_link_response,
    seal_link_request,
    seal_link_response,
)
from mailslot.protocol.message import Content, Envelope, _SignedContent, open_message, seal_message

FUZZ = settings(max_examples=150, deadline=None)


@st.composite
def _mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["set", "insert", "delete", "length"]))
        if edit == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif edit == "length":
            data[at : at + 4] = draw(st.sampled_from([0, 1, 63, 64, 65, 255, 2**31, 2**32 - 1])).to_bytes(
                4, "big"
            )
    return bytes(data)


def _inputs(data: st.DataObject, valid: bytes) -> bytes:
    return data.draw(st.one_of(st.binary(max_size=300), _mutated(valid)), label="input")


def _text_inputs(data: st.DataObject, valid: str) -> str:
    mutated = _mutated(valid.encode()).map(lambda b: b.decode("utf-8", "surrogateescape"))
    return data.draw(st.one_of(st.text(st.characters(codec=None), max_size=100), mutated), label="input")


@pytest.fixture(scope="module")
def samples(alice, bob):
    """One valid encoding of every kind, to mutate."""
    sender = alice.devices[0]
    content = Content("alice", sender.device_id, ("alice", "bob"), b"\x01" * 16, 7, 1, b"hi")
    sealed = seal_message(content, sender, bob.records)
    content_bytes = content.to_bytes()
    signed_content = Writer().var(content_bytes).fixed(sender.sign(content_bytes), 64).to_bytes()
    return {
        "record": alice.device_list.devices[0].to_bytes(),
        "list": alice.signed.list_bytes,
        "signed_list": alice.signed.to_bytes(),
        "content": content_bytes,
        "signed_content": signed_content,
        "body": sealed.body,
        "wrapped": sealed.wrapped_keys[bob.devices[0].device_id],
        "content_object": content,
    }


# --- canonical encodings --------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_device_record(samples, data: st.DataObject) -> None:
    raw = _inputs(data, samples["record"])
    with contextlib.suppress(DecodeError):
        assert DeviceRecord.from_bytes(raw).to_bytes() == raw


@FUZZ
@given(data=st.data())
def test_device_list(samples, data: st.DataObject) -> None:
    raw = _inputs(data, samples["list"])
    with contextlib.suppress(DecodeError):
        assert decode(raw, DeviceList.read).to_bytes() == raw


@FUZZ
@given(data=st.data())
def test_signed_device_list(alice, samples, data: st.DataObject) -> None:
    raw = _inputs(data, samples["signed_list"])
    with contextlib.suppress(DecodeError):
        signed = SignedDeviceList.from_bytes(raw)
        assert signed.to_bytes() == raw
        with contextlib.suppress(DecodeError):
            assert signed.parse().to_bytes() == signed.list_bytes
        with contextlib.suppress(DecodeError, VerificationError):
            verified = verify_device_list(signed, handle="alice", account_key=alice.key.public)
            # Only the untouched list verifies.
            assert raw == samples["signed_list"]
            assert verified == alice.device_list


@FUZZ
@given(data=st.data())
def test_content(samples, data: st.DataObject) -> None:
    raw = _inputs(data, samples["content"])
    with contextlib.suppress(DecodeError):
        assert decode(raw, Content.read).to_bytes() == raw


@FUZZ
@given(data=st.data())
def test_signed_content(samples, data: st.DataObject) -> None:
    raw = _inputs(data, samples["signed_content"])
    with contextlib.suppress(DecodeError):
        signed = decode(raw, _SignedContent.read)
        assert len(signed.signature) == 64


# --- sealed inputs --------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_open_message(alice, bob, samples, data: st.DataObject) -> None:
    content = samples["content_object"]
    body = data.draw(st.one_of(st.just(samples["body"]), _mutated(samples["body"])), label="body")
    wrapped = data.draw(st.one_of(st.just(samples["wrapped"]), _mutated(samples["wrapped"])), label="key")
    env = Envelope(content.message_id, "alice", content.sender_device, body, wrapped)
    if (body, wrapped) == (samples["body"], samples["wrapped"]):
        assert open_message(bob.devices[0], "bob", env, alice.device_list) == content
        return
    with pytest.raises(MessageRejected) as info:
        open_message(bob.devices[0], "bob", env, alice.device_list)
    assert str(info.value) == "message rejected"


@pytest.fixture(scope="module")
def link(alice, make_device, make_record):
    code = LinkCode("https://x", b"\x01" * 16, b"\x02" * 16)
    device = make_device("fuzz/new")
    record = make_record(device)
    request_plain = code.open(labels.LINK_REQUEST, seal_link_request(code, device, record))
    new_list = alice.device_list.successor(
        [*alice.device_list.devices, record], approver=alice.devices[0].device_id, issued_at_ms=0
    )
    signed = sign_device_list(new_list, alice.key, alice.devices[0])
    response_plain = code.open(
        labels.LINK_RESPONSE, seal_link_response(code, record, "alice", signed, alice.key)
    )
    return code, device, request_plain, response_plain


@FUZZ
@given(data=st.data())
def test_open_link_request(link, data: st.DataObject) -> None:
    code, _, request_plain, _ = link
    plain = _inputs(data, request_plain)
    with contextlib.suppress(VerificationError):
        record = open_link_request(code, code.seal(labels.LINK_REQUEST, plain))
        assert record.to_bytes() in plain


@FUZZ
@given(data=st.data())
def test_open_link_response(link, data: st.DataObject) -> None:
    code, device, _, response_plain = link
    plain = _inputs(data, response_plain)
    with contextlib.suppress(VerificationError):
        response = open_link_response(code, device, code.seal(labels.LINK_RESPONSE, plain))
        assert len(response.account_key.seed) == 32


@FUZZ
@given(st.binary(max_size=2000))
def test_open_link_sealed_bytes(link, sealed: bytes) -> None:
    code, device, _, _ = link
    with pytest.raises(VerificationError):
        open_link_request(code, sealed)
    with pytest.raises(VerificationError):
        open_link_response(code, device, sealed)


# --- text and JSON --------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_request_signature_header(data: st.DataObject) -> None:
    valid = sign_request(DeviceKeys(b"k" * 32, b"s" * 32), "GET", "/", b"", now_ms=1, nonce=b"n" * 16)
    with contextlib.suppress(AuthenticationError):
        RequestSignature.from_header(_text_inputs(data, valid.to_header()))


@FUZZ
@given(data=st.data())
def test_link_code(data: st.DataObject) -> None:
    valid = LinkCode("https://mail.example/x?y=1", b"\x01" * 16, b"\x02" * 16).to_uri()
    with contextlib.suppress(InputError):
        code = LinkCode.parse(_text_inputs(data, valid))
        assert LinkCode.parse(code.to_uri()) == code


WIRE_SAMPLES: list[Any] = [
    wire.RegisterRequest("alice", b"list"),
    wire.AccountInfo("alice", 1),
    wire.DeviceListBody(b"list"),
    wire.DeviceListResponse("alice", 2, b"list"),
    wire.SendRequest("00" * 16, ["bob"], b"body", {"11" * 16: b"key"}),
    wire.SendResponse("00" * 16, 5, 2),
    wire.Delivery(1, "00" * 16, "alice", "11" * 16, 5, b"body", b"key"),
    wire.QueueResponse([wire.Delivery(1, "00" * 16, "alice", "11" * 16, 5, b"b", b"k")], False),
    wire.AckRequest(["00" * 16]),
    wire.AckResponse(1),
    wire.LinkRequestBody(b"request"),
    wire.LinkResponseBody(b"response"),
    wire.LinkStatus("approved", b"response"),
    wire.WsDeliver(wire.Delivery(1, "00" * 16, "alice", "11" * 16, 5, b"body", b"key")),
    wire.WsAck(["00" * 16]),
    wire.WsAcked(1),
    wire.WsError("rate_limited", "slow down"),
]


@pytest.mark.parametrize("sample", WIRE_SAMPLES, ids=lambda s: type(s).__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_wire_decode(sample: Any, data: st.DataObject) -> None:
    raw = _inputs(data, wire.encode(sample))
    kind = type(sample)
    with contextlib.suppress(InputError):
        assert isinstance(wire.decode(raw, kind), kind)
    for union in (wire.WsServerFrame, wire.WsClientFrame):
        with contextlib.suppress(InputError):
            wire.decode(raw, union)
