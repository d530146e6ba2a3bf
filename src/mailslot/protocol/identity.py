"""Keys and identifiers: a device's two key pairs, the account key, handles and device ids.

Private material lives only in ``DeviceKeys`` and ``AccountKey``; the public halves travel in
``DeviceRecord`` (see ``device_list``). A device id is derived from the device's signing key,
so an id can never be re-pointed at another key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from mailslot.errors import InputError
from mailslot.protocol import crypto, labels

DEVICE_ID_SIZE = 16
MESSAGE_ID_SIZE = 16
HANDLE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
MAX_HANDLE_BYTES = 32
MAX_DEVICE_NAME = 64


def check_handle(handle: str) -> str:
    """Return ``handle`` if it is a valid handle: 1-32 of ``a-z 0-9 _ . -``, starting alnum."""
    if not HANDLE_PATTERN.fullmatch(handle):
        raise InputError(
            f"invalid handle {handle!r}: use 1-32 characters a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return handle


def check_device_name(name: str) -> str:
    if not name or len(name) > MAX_DEVICE_NAME or not name.isprintable():
        raise InputError(f"a device name is 1-{MAX_DEVICE_NAME} printable characters")
    return name


def device_id_for(sign_public: bytes) -> bytes:
    """The 16-byte device id: a labelled hash of the device's signing public key."""
    return crypto.sha256(labels.DEVICE_ID + sign_public)[:DEVICE_ID_SIZE]


def _parse_hex_id(text: str, what: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise InputError(f"invalid {what} {text!r}") from exc
    if len(raw) != size:
        raise InputError(f"invalid {what} {text!r}: expected {2 * size} hex digits")
    return raw


def parse_device_id(text: str) -> bytes:
    """Parse a device id written as 32 hex digits."""
    return _parse_hex_id(text, "device id", DEVICE_ID_SIZE)


def parse_message_id(text: str) -> bytes:
    """Parse a message id written as 32 hex digits."""
    return _parse_hex_id(text, "message id", MESSAGE_ID_SIZE)


@dataclass(frozen=True)
class DeviceKeys:
    """A device's private keys: an HPKE seed to decrypt and an Ed25519 seed to sign."""

    kem_seed: bytes = field(repr=False)
    sign_seed: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> DeviceKeys:
        return cls(
            kem_seed=crypto.random_bytes(crypto.KEM_SEED_SIZE),
            sign_seed=crypto.random_bytes(crypto.SIGN_SEED_SIZE),
        )

    @cached_property
    def enc_public(self) -> bytes:
        return crypto.kem_public_key(self.kem_seed)

    @cached_property
    def sign_public(self) -> bytes:
        return crypto.sign_public_key(self.sign_seed)

    @cached_property
    def device_id(self) -> bytes:
        return device_id_for(self.sign_public)

    def sign(self, message: bytes) -> bytes:
        return crypto.sign(self.sign_seed, message)


@dataclass(frozen=True)
class AccountKey:
    """The account's Ed25519 key: it signs the device list and is shared by the devices only."""

    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> AccountKey:
        return cls(seed=crypto.random_bytes(crypto.SIGN_SEED_SIZE))

    @cached_property
    def public(self) -> bytes:
        return crypto.sign_public_key(self.seed)

    def sign(self, message: bytes) -> bytes:
        return crypto.sign(self.seed, message)
