"""Messages: signed content, one encrypted body, one wrapped content key per recipient device.

Sending (sign-then-encrypt):

1. The sender device signs ``Content`` (sender, device, members, id, time, body).
2. The signed content is encrypted once with AES-256-GCM under a fresh 32-byte content key.
3. The content key is sealed with HPKE to every recipient device; ``info`` binds the message
   id, the recipient device, the sender device and the hash of the encrypted body, so a wrapped
   key cannot be moved to another message, device or body.

Receiving, ``open_message`` checks, in order, and raises one opaque ``MessageRejected``
(with a ``reason`` for the local log) on the first failure:

* the wrapped key opens for this device with the routing data the server showed;
* the body decrypts (any flipped bit fails here or above);
* the content parses and agrees with the routing data (id, sender handle, sender device);
* the sender device is in the sender's verified device list;
* the sender device's signature over the content verifies;
* the content is addressed to this device's account (or comes from its own account).

Encodings::

    Content       = var(label) var(sender) device[16] u32(n) var(member)* id[16]
                    u64(sent_at_ms) u8(kind) var(body)
    SignedContent = var(Content) signature[64]
    Body          = nonce[12] AES-256-GCM(content_key, nonce, SignedContent, aad)
    aad           = var(label_body) id[16] sender_device[16]
    wrap info     = var(label_wrap) suite[6] id[16] recipient[16] sender_device[16] sha256(Body)
"""

from __future__ import annotations

from dataclasses import dataclass

from mailslot.errors import DecodeError, InputError, MessageRejected, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.attachment import RichBody
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.encoding import Reader, Writer, decode
from mailslot.protocol.identity import (
    DEVICE_ID_SIZE,
    MESSAGE_ID_SIZE,
    DeviceKeys,
    check_handle,
)

KIND_TEXT = 1
KIND_RICH = 2  # body is a RichBody: text plus attachment references (protocol/attachment.py)
KINDS = frozenset({KIND_TEXT, KIND_RICH})
MAX_MEMBERS = 64
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Content:
    """What the sender says, and to whom; signed by the sender device."""

    sender: str
    sender_device: bytes
    members: tuple[str, ...]
    message_id: bytes
    sent_at_ms: int
    kind: int
    body: bytes

    def __post_init__(self) -> None:
        check_handle(self.sender)
        for member in self.members:
            check_handle(member)
        if list(self.members) != sorted(set(self.members)):
            raise InputError("conversation members must be sorted and unique")
        if self.sender not in self.members:
            raise InputError("the sender is a member of its own conversation")
        if len(self.members) > MAX_MEMBERS:
            raise InputError(f"a conversation has at most {MAX_MEMBERS} members")
        if len(self.message_id) != MESSAGE_ID_SIZE or len(self.sender_device) != DEVICE_ID_SIZE:
            raise InputError("malformed message or device id")
        if self.kind not in KINDS:
            raise InputError("unknown message kind")
        if self.kind == KIND_TEXT:
            try:
                self.body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError("a text message body is UTF-8") from exc
        if self.kind == KIND_RICH:
            try:
                RichBody.from_bytes(self.body)
            except DecodeError as exc:
                raise InputError(exc.message) from exc

    @property
    def text(self) -> str:
        """The message text (for a rich message, its inline text)."""
        if self.kind == KIND_RICH:
            return self.rich.text
        return self.body.decode("utf-8")

    @property
    def rich(self) -> RichBody:
        """Text and attachments; a plain text message is a rich body without attachments."""
        if self.kind == KIND_TEXT:
            return RichBody(self.body.decode("utf-8"), ())
        return RichBody.from_bytes(self.body)

    def to_bytes(self) -> bytes:
        w = Writer().var(labels.CONTENT).text(self.sender).fixed(self.sender_device, DEVICE_ID_SIZE)
        w.items(self.members, Writer.text).fixed(self.message_id, MESSAGE_ID_SIZE)
        return w.u64(self.sent_at_ms).u8(self.kind).var(self.body).to_bytes()

    @classmethod
    def read(cls, r: Reader) -> Content:
        r.expect_label(labels.CONTENT)
        sender = r.text(max_size=64)
        device = r.fixed(DEVICE_ID_SIZE)
        members = r.items(lambda r_: r_.text(max_size=64), MAX_MEMBERS)
        message_id = r.fixed(MESSAGE_ID_SIZE)
        sent_at, kind, body = r.u64(), r.u8(), r.var(MAX_BODY)
        try:
            return cls(sender, device, tuple(members), message_id, sent_at, kind, body)
        except InputError as exc:
            raise DecodeError(f"invalid content: {exc.message}") from exc


def members_of(sender: str, recipients: list[str]) -> tuple[str, ...]:
    """The canonical member tuple of a conversation: everyone, sorted, once."""
    return tuple(sorted({sender, *recipients}))


@dataclass(frozen=True)
class Envelope:
    """What one recipient device receives: routing data, the shared body, its wrapped key."""

    message_id: bytes
    sender: str
    sender_device: bytes
    body: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class SealedMessage:
    """A message ready to hand to the server: one body, one wrapped key per device."""

    message_id: bytes
    body: bytes
    wrapped_keys: dict[bytes, bytes]


def _body_aad(message_id: bytes, sender_device: bytes) -> bytes:
    w = Writer().var(labels.BODY).fixed(message_id, MESSAGE_ID_SIZE)
    return w.fixed(sender_device, DEVICE_ID_SIZE).to_bytes()


def wrap_info(message_id: bytes, recipient: bytes, sender_device: bytes, body: bytes) -> bytes:
    """The HPKE ``info`` that binds a wrapped key to its message, both devices and the body."""
    w = Writer().var(labels.WRAP).fixed(crypto.SUITE.to_bytes(), 6)
    w.fixed(message_id, MESSAGE_ID_SIZE).fixed(recipient, DEVICE_ID_SIZE)
    return w.fixed(sender_device, DEVICE_ID_SIZE).fixed(crypto.sha256(body), 32).to_bytes()


def encrypt_body(content: Content, keys: DeviceKeys, content_key: bytes, nonce: bytes) -> bytes:
    """Sign ``content`` with the sender device key and encrypt it once under ``content_key``."""
    content_bytes = content.to_bytes()
    signed = Writer().var(content_bytes).fixed(keys.sign(content_bytes), 64).to_bytes()
    aad = _body_aad(content.message_id, content.sender_device)
    return nonce + crypto.aead_seal(content_key, nonce, signed, aad)


def wrap_key(
    content_key: bytes, recipient: bytes, recipient_enc_key: bytes, content: Content, body: bytes
) -> bytes:
    """Seal the content key to one recipient device."""
    info = wrap_info(content.message_id, recipient, content.sender_device, body)
    return crypto.hpke_seal(recipient_enc_key, content_key, info)


def seal_message(
    content: Content,
    keys: DeviceKeys,
    recipients: dict[bytes, bytes],
    *,
    content_key: bytes | None = None,
    nonce: bytes | None = None,
) -> SealedMessage:
    """Seal ``content`` for every device in ``recipients`` (device id -> encryption key)."""
    if content.sender_device != keys.device_id:
        raise InputError("content names another sender device")
    key = content_key if content_key is not None else crypto.random_bytes(crypto.AEAD_KEY_SIZE)
    iv = nonce if nonce is not None else crypto.random_bytes(crypto.AEAD_NONCE_SIZE)
    body = encrypt_body(content, keys, key, iv)
    wrapped = {dev: wrap_key(key, dev, enc, content, body) for dev, enc in recipients.items()}
    return SealedMessage(content.message_id, body, wrapped)


@dataclass(frozen=True)
class _SignedContent:
    content_bytes: bytes
    signature: bytes

    @classmethod
    def read(cls, r: Reader) -> _SignedContent:
        return cls(r.var(MAX_BODY + 4096), r.fixed(crypto.SIGNATURE_SIZE))


def _decrypt(keys: DeviceKeys, env: Envelope) -> _SignedContent:
    if len(env.message_id) != MESSAGE_ID_SIZE or len(env.sender_device) != DEVICE_ID_SIZE:
        raise VerificationError("malformed routing data")
    info = wrap_info(env.message_id, keys.device_id, env.sender_device, env.body)
    content_key = crypto.hpke_open(keys.kem_seed, env.wrapped_key, info)
    if len(content_key) != crypto.AEAD_KEY_SIZE or len(env.body) < crypto.AEAD_NONCE_SIZE:
        raise VerificationError("malformed key or body")
    nonce, ciphertext = env.body[: crypto.AEAD_NONCE_SIZE], env.body[crypto.AEAD_NONCE_SIZE :]
    plain = crypto.aead_open(content_key, nonce, ciphertext, _body_aad(env.message_id, env.sender_device))
    return decode(plain, _SignedContent.read)


def _check_routing(content: Content, env: Envelope) -> None:
    if content.message_id != env.message_id:
        raise MessageRejected("message id differs from the routing data")
    if content.sender != env.sender or content.sender_device != env.sender_device:
        raise MessageRejected("sender differs from the routing data")


def open_message(
    keys: DeviceKeys, my_handle: str, env: Envelope, sender_list: DeviceList
) -> Content:
    """Open and check an envelope; ``sender_list`` must already be verified for ``env.sender``.

    Returns the content only if every check in the module docstring passes.
    """
    try:
        signed = _decrypt(keys, env)
        content = decode(signed.content_bytes, Content.read)
    except (VerificationError, DecodeError) as exc:
        raise MessageRejected(f"decryption or decoding failed: {exc.message}") from exc
    _check_routing(content, env)
    if sender_list.handle != content.sender:
        raise MessageRejected("device list of another account")
    record = sender_list.find(content.sender_device)
    if record is None:
        raise MessageRejected("sender device is not in the sender's signed device list")
    try:
        crypto.verify(record.sign_key, signed.signature, signed.content_bytes)
    except VerificationError as exc:
        raise MessageRejected("bad signature by the sender device") from exc
    if my_handle not in content.members:
        raise MessageRejected("message is not addressed to this account")
    return content
