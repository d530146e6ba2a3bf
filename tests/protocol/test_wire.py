"""Property tests of the JSON API shapes: every type round-trips, anything malformed is refused."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import InputError
from mailslot.protocol import wire

INTS = st.integers(-(2**63), 2**64 - 1)
TEXT = st.text(max_size=20)
BLOBS = st.binary(max_size=40)
HEX_IDS = st.binary(min_size=16, max_size=16).map(bytes.hex)

DELIVERIES = st.builds(wire.Delivery, INTS, HEX_IDS, TEXT, HEX_IDS, INTS, BLOBS, BLOBS)
VALUES: dict[type[Any], st.SearchStrategy[Any]] = {
    wire.RegisterRequest: st.builds(wire.RegisterRequest, TEXT, BLOBS, st.none() | TEXT),
    wire.RecoverRequest: st.builds(wire.RecoverRequest, BLOBS, BLOBS),
    wire.DeviceListHistory: st.builds(wire.DeviceListHistory, TEXT, st.lists(BLOBS, max_size=3), st.booleans()),
    wire.DeviceSeen: st.builds(wire.DeviceSeen, HEX_IDS, st.none() | INTS),
    wire.DevicesSeen: st.builds(
        wire.DevicesSeen, st.lists(st.builds(wire.DeviceSeen, HEX_IDS, st.none() | INTS), max_size=3)
    ),
    wire.WsDevices: st.builds(wire.WsDevices, INTS),
    wire.AccountInfo: st.builds(wire.AccountInfo, TEXT, INTS),
    wire.DeviceListBody: st.builds(wire.DeviceListBody, BLOBS),
    wire.DeviceListResponse: st.builds(wire.DeviceListResponse, TEXT, INTS, BLOBS),
    wire.SendRequest: st.builds(
        wire.SendRequest,
        HEX_IDS,
        st.lists(TEXT, max_size=4),
        BLOBS,
        st.dictionaries(HEX_IDS, BLOBS, max_size=4),
        st.dictionaries(TEXT, INTS, max_size=4),
    ),
    wire.SendResponse: st.builds(wire.SendResponse, HEX_IDS, INTS, INTS),
    wire.Delivery: DELIVERIES,
    wire.QueueResponse: st.builds(wire.QueueResponse, st.lists(DELIVERIES, max_size=3), st.booleans()),
    wire.AckRequest: st.builds(wire.AckRequest, st.lists(HEX_IDS, max_size=4)),
    wire.AckResponse: st.builds(wire.AckResponse, INTS),
    wire.LinkRequestBody: st.builds(wire.LinkRequestBody, BLOBS),
    wire.LinkResponseBody: st.builds(wire.LinkResponseBody, BLOBS),
    wire.LinkStatus: st.builds(wire.LinkStatus, st.sampled_from(["pending", "approved"]), st.none() | BLOBS),
    wire.BlobCreate: st.builds(wire.BlobCreate, INTS),
    wire.BlobInfo: st.builds(wire.BlobInfo, st.binary(min_size=32, max_size=32).map(bytes.hex), INTS, INTS, INTS),
    wire.WsDeliver: st.builds(wire.WsDeliver, DELIVERIES),
    wire.WsAck: st.builds(wire.WsAck, st.lists(HEX_IDS, max_size=4)),
    wire.WsAcked: st.builds(wire.WsAcked, INTS),
    wire.WsError: st.builds(wire.WsError, TEXT, TEXT),
}
WIRE_TYPES = sorted(VALUES, key=lambda t: t.__name__)
UNIONS = {"WsServerFrame": wire.WsServerFrame, "WsClientFrame": wire.WsClientFrame}


def test_every_wire_type_is_covered() -> None:
    def subclasses(cls: type[Any]) -> set[type[Any]]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    assert subclasses(wire.Wire) == set(VALUES)


@pytest.mark.parametrize("kind", WIRE_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=50)
@given(data=st.data())
def test_round_trip(kind: type[Any], data: st.DataObject) -> None:
    value = data.draw(VALUES[kind], label="value")
    encoded = wire.encode(value)
    assert wire.decode(encoded, kind) == value
    assert wire.decode(encoded.decode(), kind) == value


@pytest.mark.parametrize("kind", WIRE_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=30)
@given(data=st.data())
def test_truncation_and_trailing_garbage_are_input_errors(kind: type[Any], data: st.DataObject) -> None:
    encoded = wire.encode(data.draw(VALUES[kind], label="value"))
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(InputError):
        wire.decode(encoded[:cut], kind)
    with pytest.raises(InputError):
        wire.decode(encoded + data.draw(st.sampled_from([b"x", b"{}", b"0", b",", b"]"])), kind)


@pytest.mark.parametrize("kind", WIRE_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=30)
@given(data=st.data())
def test_unknown_field_is_refused(kind: type[Any], data: st.DataObject) -> None:
    value = json.loads(wire.encode(data.draw(VALUES[kind], label="value")))
    value["unexpected_field"] = 1
    with pytest.raises(InputError):
        wire.decode(json.dumps(value), kind)


@pytest.mark.parametrize("kind", WIRE_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=30)
@given(data=st.data())
def test_missing_or_mistyped_field_is_refused(kind: type[Any], data: st.DataObject) -> None:
    value = json.loads(wire.encode(data.draw(VALUES[kind], label="value")))
    required = [f.encode_name for f in msgspec.structs.fields(kind) if f.required]
    name = data.draw(st.sampled_from(required), label="field")
    with pytest.raises(InputError):
        wire.decode(json.dumps({k: v for k, v in value.items() if k != name}), kind)
    with pytest.raises(InputError):
        wire.decode(json.dumps({**value, name: [[[]]]}), kind)


def test_tagged_frames() -> None:
    delivery = wire.Delivery(1, "00" * 16, "alice", "11" * 16, 5, b"body", b"key")
    for frame in (wire.WsDeliver(delivery), wire.WsAcked(3), wire.WsError("rate_limited", "slow down")):
        assert wire.decode(wire.encode(frame), wire.WsServerFrame) == frame
    assert json.loads(wire.encode(wire.WsAck(["ab"]))) == {"type": "ack", "message_ids": ["ab"]}
    assert wire.decode(b'{"type": "ack", "message_ids": []}', wire.WsClientFrame) == wire.WsAck([])
    for bad in (b'{"type": "acked", "deleted": 1}', b'{"type": "nope", "message_ids": []}'):
        with pytest.raises(InputError):
            wire.decode(bad, wire.WsClientFrame)


def test_bytes_are_standard_base64() -> None:
    assert json.loads(wire.encode(wire.LinkRequestBody(b"\xfb\xff"))) == {"request": "+/8="}
    with pytest.raises(InputError):
        wire.decode(b'{"request": "not base64!"}', wire.LinkRequestBody)


@settings(max_examples=200)
@given(data=st.data())
def test_arbitrary_input_raises_only_input_error(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from([*WIRE_TYPES, *UNIONS.values()]), label="kind")
    raw = data.draw(
        st.one_of(
            st.binary(max_size=100),
            st.text(st.characters(codec=None), max_size=60),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                lambda inner: (
                    st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
                ),
                max_leaves=8,
            ).map(json.dumps),
        ),
        label="raw",
    )
    with contextlib.suppress(InputError):
        wire.decode(raw, kind)


@pytest.mark.parametrize("text", ["\ud800", '{"request": "\udfff"}', '"\ud83d"'])
def test_text_with_lone_surrogates_is_input_error(text: str) -> None:
    with pytest.raises(InputError):
        wire.decode(text, wire.LinkRequestBody)
