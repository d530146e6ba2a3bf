"""JSON shapes of the HTTP and WebSocket API, shared by server and client.

Byte fields are standard base64 in JSON (msgspec's encoding of ``bytes``); ids are lowercase
hex. Signed values travel as their canonical bytes, never re-serialised. Unknown fields are
refused, so a typo is an error rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec

from mailslot.errors import InputError

T = TypeVar("T")


class Wire(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every API body."""


class RegisterRequest(Wire):
    handle: str
    device_list: bytes  # SignedDeviceList, version 1, holding the registering device
    invite: str | None = None  # required unless the server's registration is "open"


class RecoverRequest(Wire):
    """Replace a lost account key: the next list version under a new account key, and the
    recovery claim signed with the recovery key the current list commits to."""

    device_list: bytes  # SignedDeviceList, version current + 1
    signature: bytes  # protocol.recovery.claim_bytes signed by the recovery key


class AccountInfo(Wire):
    handle: str
    version: int


class DeviceListBody(Wire):
    device_list: bytes  # SignedDeviceList


class DeviceListResponse(Wire):
    handle: str
    version: int
    device_list: bytes


class DeviceListHistory(Wire):
    """Every published version of an account's list after ``after``, oldest first, at most a
    page; ``more`` says that another page follows."""

    handle: str
    lists: list[bytes]  # SignedDeviceList bytes, consecutive versions
    more: bool


class DeviceSeen(Wire):
    device_id: str
    last_seen: int | None  # Unix ms of the device's last authenticated request, to a minute


class DevicesSeen(Wire):
    devices: list[DeviceSeen]


class SendRequest(Wire):
    message_id: str
    recipients: list[str]
    body: bytes
    keys: dict[str, bytes]  # recipient device id (hex) -> HPKE-wrapped content key
    # handle -> device list version the keys were sealed under, for every recipient and the
    # sender's own account; an older version than the server's is a device_mismatch
    versions: dict[str, int] = msgspec.field(default_factory=dict)


class SendResponse(Wire):
    message_id: str
    accepted_at: int
    devices: int


class Delivery(Wire):
    """One queued message as a device receives it."""

    seq: int
    message_id: str
    sender: str
    sender_device: str
    accepted_at: int
    body: bytes
    key: bytes


class QueueResponse(Wire):
    messages: list[Delivery]
    more: bool


class AckRequest(Wire):
    message_ids: list[str]


class AckResponse(Wire):
    deleted: int


class LinkRequestBody(Wire):
    request: bytes


class LinkResponseBody(Wire):
    response: bytes


class LinkStatus(Wire):
    status: Literal["pending", "approved"]
    response: bytes | None = None


class BlobCreate(Wire):
    """Reserve a blob: ``size`` is the exact total of bytes the uploader will send."""

    size: int


class BlobInfo(Wire):
    """A blob's upload state: the server-chosen ``blob_id`` (64 hex digits, the blob's only
    address), the declared ``size``, the bytes committed so far (``offset``; the blob is
    complete and readable when it equals ``size``) and ``expires_at`` (Unix milliseconds)."""

    blob_id: str
    size: int
    offset: int
    expires_at: int


class WsDeliver(Wire, tag="message", tag_field="type"):
    delivery: Delivery


class WsAck(Wire, tag="ack", tag_field="type"):
    message_ids: list[str]


class WsAcked(Wire, tag="acked", tag_field="type"):
    deleted: int


class WsError(Wire, tag="error", tag_field="type"):
    error: str
    message: str


class WsDevices(Wire, tag="devices", tag_field="type"):
    """The device list of this device's account changed; fetch its history to see how."""

    version: int


WsServerFrame = WsDeliver | WsAcked | WsError | WsDevices
WsClientFrame = WsAck

_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes | str, kind: type[T]) -> T:
    """Parse a JSON body into ``kind``; anything malformed is an ``InputError``."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise InputError(f"invalid request body: {exc}") from exc
    except (msgspec.DecodeError, UnicodeEncodeError) as exc:  # the latter: str with lone surrogates
        raise InputError("request body is not valid JSON") from exc
