"""Property tests of messages: content encoding, seal/open, and every reason to reject."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import DecodeError, InputError, MessageRejected
from mailslot.protocol import crypto, labels
from mailslot.protocol.attachment import RichBody
from mailslot.protocol.encoding import Writer, decode
from mailslot.protocol.identity import DeviceKeys
from mailslot.protocol.message import (
    KIND_RICH,
    KIND_TEXT,
    MAX_MEMBERS,
    Content,
    Envelope,
    SealedMessage,
    encrypt_body,
    members_of,
    open_message,
    seal_message,
    wrap_key,
)

HANDLES = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", max_size=31),
)
IDS = st.binary(min_size=16, max_size=16)
U64 = st.integers(0, 2**64 - 1)
BODIES = st.one_of(
    st.tuples(st.just(KIND_TEXT), st.text(max_size=300).map(str.encode)),
    st.tuples(st.just(KIND_RICH), st.text(max_size=300).map(lambda t: RichBody(t, ()).to_bytes())),
)
CRYPTO = settings(max_examples=30, deadline=None)
REJECTED = "message rejected"


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _content(sender, device, members, message_id=b"\x01" * 16, body=b"hello", kind=KIND_TEXT):
    return Content(sender, device.device_id, tuple(members), message_id, 1_000, kind, body)


def _envelope(content: Content, sealed: SealedMessage, recipient: bytes) -> Envelope:
    return Envelope(
        content.message_id,
        content.sender,
        content.sender_device,
        sealed.body,
        sealed.wrapped_keys[recipient],
    )


# --- Content --------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    HANDLES,
    st.lists(HANDLES, max_size=MAX_MEMBERS - 1),
    IDS,
    IDS,
    U64,
    BODIES,
)
def test_content_round_trip(sender, others, device_id, message_id, sent_at, kind_body) -> None:
    kind, body = kind_body
    members = members_of(sender, others)
    content = Content(sender, device_id, members, message_id, sent_at, kind, body)
    assert decode(content.to_bytes(), Content.read) == content
    expected = body.decode() if kind == KIND_TEXT else RichBody.from_bytes(body).text
    assert content.text == expected
    assert content.rich.attachments == ()


@pytest.mark.parametrize("kind", [0, 3, 255])
def test_unknown_kinds_are_refused(kind: int) -> None:
    with pytest.raises(InputError):
        Content("alice", b"d" * 16, ("alice",), b"m" * 16, 0, kind, b"")


def test_rich_body_must_parse() -> None:
    with pytest.raises(InputError):
        Content("alice", b"d" * 16, ("alice",), b"m" * 16, 0, KIND_RICH, b"not a rich body")


@given(st.data())
def test_content_truncation_and_trailing_bytes(data: st.DataObject) -> None:
    content = Content("alice", b"d" * 16, ("alice", "bob"), b"m" * 16, 5, KIND_TEXT, b"hi")
    encoded = content.to_bytes()
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(DecodeError):
        decode(encoded[:cut], Content.read)
    with pytest.raises(DecodeError):
        decode(encoded + data.draw(st.binary(min_size=1, max_size=8)), Content.read)


@pytest.mark.parametrize(
    ("sender", "members", "device", "message_id"),
    [
        ("alice", ("bob",), b"d" * 16, b"m" * 16),  # sender not a member
        ("alice", ("bob", "alice"), b"d" * 16, b"m" * 16),  # not sorted
        ("alice", ("alice", "alice"), b"d" * 16, b"m" * 16),  # not unique
        ("Alice", ("Alice",), b"d" * 16, b"m" * 16),  # bad handle
        ("alice", ("alice", "b b"), b"d" * 16, b"m" * 16),  # bad member handle
        ("alice", ("alice",), b"d" * 15, b"m" * 16),  # short device id
        ("alice", ("alice",), b"d" * 16, b"m" * 17),  # long message id
        (
            "alice",
            tuple(sorted(["alice"] + [f"m{i}" for i in range(MAX_MEMBERS)])),
            b"d" * 16,
            b"m" * 16,
        ),
    ],
)
def test_content_invariants(sender, members, device, message_id) -> None:
    with pytest.raises(InputError):
        Content(sender, device, members, message_id, 0, KIND_TEXT, b"")


@pytest.mark.parametrize("body", [b"\xff", b"\xc0\x80", b"ok\xed\xa0\x80"])
def test_text_content_must_be_utf8(body: bytes) -> None:
    with pytest.raises(InputError):
        Content("alice", b"d" * 16, ("alice",), b"m" * 16, 0, KIND_TEXT, body)
    # The same bytes are refused when they arrive encoded.
    valid = Content("alice", b"d" * 16, ("alice",), b"m" * 16, 0, KIND_TEXT, b"x" * len(body))
    encoded = valid.to_bytes()
    with pytest.raises(DecodeError):
        decode(encoded[: len(encoded) - len(body)] + body, Content.read)


def test_members_of_is_sorted_and_unique() -> None:
    assert members_of("bob", ["carol", "alice", "bob", "carol"]) == ("alice", "bob", "carol")


# --- seal and open --------------------------------------------------------------------------


@CRYPTO
@given(
    st.lists(HANDLES, max_size=4),
    st.booleans(),
    IDS,
    U64,
    BODIES,
)
def test_seal_open_round_trip(alice, bob, carol, others, with_carol, message_id, sent_at, kind_body) -> None:
    kind, body = kind_body
    sender = alice.devices[0]
    members = members_of("alice", ["bob", *others] + (["carol"] if with_carol else []))
    content = Content("alice", sender.device_id, members, message_id, sent_at, kind, body)
    recipients = {**bob.records, alice.devices[1].device_id: alice.devices[1].enc_public}
    if with_carol:
        recipients.update(carol.records)
    sealed = seal_message(content, sender, recipients)
    assert sealed.message_id == message_id
    assert set(sealed.wrapped_keys) == set(recipients)
    readers = [(bob, d) for d in bob.devices] + [(alice, alice.devices[1])]
    if with_carol:
        readers.append((carol, carol.devices[0]))
    for account, device in readers:
        env = _envelope(content, sealed, device.device_id)
        assert open_message(device, account.handle, env, alice.device_list) == content


def test_seal_is_deterministic_given_key_and_nonce(alice, bob) -> None:
    content = _content("alice", alice.devices[0], ["alice", "bob"])
    a = seal_message(content, alice.devices[0], bob.records, content_key=b"k" * 32, nonce=b"n" * 12)
    b = seal_message(content, alice.devices[0], bob.records, content_key=b"k" * 32, nonce=b"n" * 12)
    c = seal_message(content, alice.devices[0], bob.records)
    assert a.body == b.body
    assert a.body != c.body
    assert a.body[:12] == b"n" * 12


def test_seal_refuses_content_naming_another_device(alice, bob) -> None:
    content = _content("alice", alice.devices[1], ["alice", "bob"])
    with pytest.raises(InputError):
        seal_message(content, alice.devices[0], bob.records)


@pytest.fixture(scope="module")
def to_bob(alice, bob):
    """A valid message from alice's first device to bob's first device: (content, envelope)."""
    content = _content("alice", alice.devices[0], ["alice", "bob"], b"\x11" * 16, b"for bob")
    sealed = seal_message(content, alice.devices[0], bob.records)
    return content, _envelope(content, sealed, bob.devices[0].device_id)


def _reject(bob, env, sender_list) -> MessageRejected:
    with pytest.raises(MessageRejected) as info:
        open_message(bob.devices[0], "bob", env, sender_list)
    assert str(info.value) == REJECTED
    return info.value


def test_valid_message_opens(alice, bob, to_bob) -> None:
    content, env = to_bob
    assert open_message(bob.devices[0], "bob", env, alice.device_list) == content


def test_reject_bad_signature(alice, bob, mallory) -> None:
    # Mallory writes content that names alice's device, but signs it with her own key.
    content = _content("alice", alice.devices[0], ["alice", "bob"])

    def envelope_signed_by(signer) -> Envelope:
        key = crypto.random_bytes(32)
        body = encrypt_body(content, signer, key, crypto.random_bytes(12))
        wrapped = wrap_key(key, bob.devices[0].device_id, bob.devices[0].enc_public, content, body)
        return Envelope(content.message_id, "alice", alice.devices[0].device_id, body, wrapped)

    assert "signature" in _reject(bob, envelope_signed_by(mallory), alice.device_list).reason
    assert (
        open_message(bob.devices[0], "bob", envelope_signed_by(alice.devices[0]), alice.device_list)
        == content
    )


def test_reject_sender_device_not_in_list(alice, bob, mallory) -> None:
    content = _content("alice", mallory, ["alice", "bob"])
    sealed = seal_message(content, mallory, bob.records)
    env = _envelope(content, sealed, bob.devices[0].device_id)
    assert "not in the sender's signed device list" in _reject(bob, env, alice.device_list).reason


def test_reject_message_not_addressed_to_recipient(alice, bob, carol) -> None:
    # Alice's conversation is with carol, but she also wraps the key for bob.
    content = _content("alice", alice.devices[0], ["alice", "carol"])
    sealed = seal_message(content, alice.devices[0], {**carol.records, **bob.records})
    env = _envelope(content, sealed, bob.devices[0].device_id)
    assert "not addressed" in _reject(bob, env, alice.device_list).reason
    carol_env = _envelope(content, sealed, carol.devices[0].device_id)
    assert open_message(carol.devices[0], "carol", carol_env, alice.device_list) == content


def test_reject_sender_list_of_another_account(bob, carol, to_bob) -> None:
    _, env = to_bob
    assert "another account" in _reject(bob, env, carol.device_list).reason


@CRYPTO
@given(IDS, st.text(max_size=64))
def test_reject_wrapped_key_moved_from_another_message(alice, bob, to_bob, other_id, text) -> None:
    _, env = to_bob
    other = _content("alice", alice.devices[0], ["alice", "bob"], other_id, text.encode())
    sealed = seal_message(other, alice.devices[0], bob.records)
    moved = dataclasses.replace(env, wrapped_key=sealed.wrapped_keys[bob.devices[0].device_id])
    assert "decryption" in _reject(bob, moved, alice.device_list).reason


def test_reject_wrapped_key_moved_to_another_body(alice, bob) -> None:
    # Two seals of the same content under the same content key differ only in the nonce; the
    # wrapped key still names the body it was made for.
    content = _content("alice", alice.devices[0], ["alice", "bob"])
    first = seal_message(content, alice.devices[0], bob.records, content_key=b"k" * 32, nonce=b"1" * 12)
    second = seal_message(content, alice.devices[0], bob.records, content_key=b"k" * 32, nonce=b"2" * 12)
    env = _envelope(content, second, bob.devices[0].device_id)
    assert open_message(bob.devices[0], "bob", env, alice.device_list) == content
    moved = dataclasses.replace(env, body=first.body)
    assert "decryption" in _reject(bob, moved, alice.device_list).reason


def test_reject_wrapped_key_for_another_device(alice, bob) -> None:
    content = _content("alice", alice.devices[0], ["alice", "bob"])
    sealed = seal_message(content, alice.devices[0], bob.records)
    env = _envelope(content, sealed, bob.devices[1].device_id)
    _reject(bob, env, alice.device_list)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["body", "wrapped_key"]), st.data())
def test_reject_any_flipped_bit(alice, bob, to_bob, field: str, data: st.DataObject) -> None:
    _, env = to_bob
    value = getattr(env, field)
    bit = data.draw(st.integers(0, 8 * len(value) - 1), label="bit")
    tampered = dataclasses.replace(env, **{field: _flip(value, bit)})
    _reject(bob, tampered, alice.device_list)


@pytest.mark.parametrize("swap", ["sender", "sender_with_its_list", "sender_device", "message_id", "all"])
def test_reject_routing_data_that_disagrees(alice, bob, carol, to_bob, swap: str) -> None:
    _, env = to_bob
    sender_list = carol.device_list if swap == "sender_with_its_list" else alice.device_list
    routing = {
        "sender": {"sender": "carol"},
        "sender_with_its_list": {"sender": "carol"},
        "sender_device": {"sender_device": alice.devices[1].device_id},
        "message_id": {"message_id": b"\x22" * 16},
        "all": {"sender": "bob", "sender_device": bob.devices[0].device_id, "message_id": b"\x33" * 16},
    }[swap]
    _reject(bob, dataclasses.replace(env, **routing), sender_list)


def test_reject_content_id_that_differs_from_routing(alice, bob) -> None:
    # A (malicious) listed sender binds body and key to routing id B but signs content for id A.
    sender = alice.devices[0]
    content = _content("alice", sender, ["alice", "bob"], b"\xaa" * 16)
    routed = dataclasses.replace(content, message_id=b"\xbb" * 16)
    key, nonce = b"k" * 32, b"n" * 12
    aad = Writer().var(labels.BODY).fixed(routed.message_id, 16).fixed(sender.device_id, 16).to_bytes()
    signed = Writer().var(content.to_bytes()).fixed(sender.sign(content.to_bytes()), 64).to_bytes()
    body = nonce + crypto.aead_seal(key, nonce, signed, aad)
    wrapped = wrap_key(key, bob.devices[0].device_id, bob.devices[0].enc_public, routed, body)
    env = Envelope(routed.message_id, "alice", sender.device_id, body, wrapped)
    assert "message id" in _reject(bob, env, alice.device_list).reason
    # The same construction with matching ids opens: the rejection is the id check's doing.
    aad = Writer().var(labels.BODY).fixed(content.message_id, 16).fixed(sender.device_id, 16).to_bytes()
    body = nonce + crypto.aead_seal(key, nonce, signed, aad)
    wrapped = wrap_key(key, bob.devices[0].device_id, bob.devices[0].enc_public, content, body)
    env = Envelope(content.message_id, "alice", sender.device_id, body, wrapped)
    assert open_message(bob.devices[0], "bob", env, alice.device_list) == content


def test_reject_content_device_that_differs_from_routing(alice, bob) -> None:
    # Alice holds both her devices' keys: content signed by device 1, routed and bound as device 0.
    routed_as, signer = alice.devices
    content = _content("alice", signer, ["alice", "bob"])
    key, nonce = b"k" * 32, b"n" * 12
    aad = Writer().var(labels.BODY).fixed(content.message_id, 16).fixed(routed_as.device_id, 16).to_bytes()
    signed = Writer().var(content.to_bytes()).fixed(signer.sign(content.to_bytes()), 64).to_bytes()
    body = nonce + crypto.aead_seal(key, nonce, signed, aad)
    routed = dataclasses.replace(content, sender_device=routed_as.device_id)
    wrapped = wrap_key(key, bob.devices[0].device_id, bob.devices[0].enc_public, routed, body)
    env = Envelope(content.message_id, "alice", routed_as.device_id, body, wrapped)
    assert "sender differs" in _reject(bob, env, alice.device_list).reason


def test_reject_wrapped_key_for_another_device_id_with_the_same_key(alice, bob) -> None:
    # A device id is bound into the wrap, so sharing an encryption key does not share messages.
    twin = DeviceKeys(kem_seed=bob.devices[0].kem_seed, sign_seed=b"t" * 32)
    content = _content("alice", alice.devices[0], ["alice", "bob"])
    sealed = seal_message(content, alice.devices[0], {twin.device_id: twin.enc_public})
    env = _envelope(content, sealed, twin.device_id)
    assert open_message(twin, "bob", env, alice.device_list) == content
    assert "decryption" in _reject(bob, env, alice.device_list).reason


def test_rejection_text_is_opaque_while_reasons_differ(alice, bob, carol, mallory, to_bob) -> None:
    _, env = to_bob
    forged = _content("alice", mallory, ["alice", "bob"])
    forged_env = _envelope(forged, seal_message(forged, mallory, bob.records), bob.devices[0].device_id)
    elsewhere = _content("alice", alice.devices[0], ["alice", "carol"])
    elsewhere_sealed = seal_message(elsewhere, alice.devices[0], bob.records)
    unaddressed = _envelope(elsewhere, elsewhere_sealed, bob.devices[0].device_id)
    causes = [
        (dataclasses.replace(env, body=_flip(env.body, 100)), alice.device_list),
        (dataclasses.replace(env, sender="carol"), alice.device_list),
        (env, carol.device_list),
        (forged_env, alice.device_list),
        (unaddressed, alice.device_list),
    ]
    errors = [_reject(bob, e, sender_list) for e, sender_list in causes]
    assert {str(e) for e in errors} == {REJECTED}
    assert {e.message for e in errors} == {REJECTED}
    assert {e.to_wire()["message"] for e in errors} == {REJECTED}
    assert len({e.reason for e in errors}) == len(causes)


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=20),
    st.text(max_size=8),
    st.binary(max_size=20),
    st.binary(max_size=200),
    st.one_of(st.binary(max_size=1300), st.binary(min_size=1136, max_size=1200)),
)
def test_arbitrary_envelope_is_rejected(alice, bob, message_id, sender, device, body, wrapped) -> None:
    env = Envelope(message_id, sender, device, body, wrapped)
    _reject(bob, env, alice.device_list)
