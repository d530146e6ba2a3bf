"""Shared keys and accounts for the protocol tests.

Key generation is the slow part of these tests, so every key here is derived once per session
from a fixed name (the tests are exact and repeatable), and hypothesis varies everything else.
The fixtures are session-scoped, which hypothesis allows inside ``@given`` tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from mailslot.protocol import crypto
from mailslot.protocol.device_list import (
    DeviceList,
    DeviceRecord,
    SignedDeviceList,
    sign_device_list,
)
from mailslot.protocol.identity import AccountKey, DeviceKeys
from mailslot.protocol.recovery import RecoverySecret

CREATED_AT_MS = 1_700_000_000_000


def seed_for(name: str) -> bytes:
    """A fixed 32-byte seed per name."""
    return hashlib.sha256(b"mailslot-test/" + name.encode()).digest()


def device_keys(name: str) -> DeviceKeys:
    return DeviceKeys(kem_seed=seed_for(name + "/kem"), sign_seed=seed_for(name + "/sign"))


def record_for(keys: DeviceKeys, name: str = "laptop", created_at_ms: int = CREATED_AT_MS) -> DeviceRecord:
    return DeviceRecord(keys.device_id, keys.sign_public, crypto.SUITE, keys.enc_public, name, created_at_ms)


class Account:
    """An account with its key, its devices and its signed device list at version 1."""

    def __init__(self, handle: str, device_count: int) -> None:
        self.handle = handle
        self.key = AccountKey(seed_for(handle + "/account"))
        self.devices = tuple(device_keys(f"{handle}/device{i}") for i in range(device_count))
        records = [record_for(d, f"device {i}") for i, d in enumerate(self.devices)]
        self.recovery = RecoverySecret(seed_for(handle + "/recovery")[:20])
        self.device_list = DeviceList.build(
            handle, self.key.public, 1, CREATED_AT_MS, records,
            approver=self.devices[0].device_id, recovery_key=self.recovery.key_for(handle).public,
        )
        self.signed: SignedDeviceList = sign_device_list(self.device_list, self.key, self.devices[0])

    def __repr__(self) -> str:
        # Short, so that hypothesis's failure reports stay readable.
        return f"<Account {self.handle} with {len(self.devices)} devices>"

    @property
    def records(self) -> dict[bytes, bytes]:
        """Device id -> encryption key, as a sender passes them to ``seal_message``."""
        return {d.device_id: d.enc_key for d in self.device_list.devices}


@pytest.fixture(scope="session")
def alice() -> Account:
    return Account("alice", 2)


@pytest.fixture(scope="session")
def bob() -> Account:
    return Account("bob", 2)


@pytest.fixture(scope="session")
def carol() -> Account:
    return Account("carol", 1)


@pytest.fixture(scope="session")
def mallory() -> DeviceKeys:
    """A device that is in nobody's device list."""
    return device_keys("mallory")


@pytest.fixture(scope="session")
def make_device() -> Callable[[str], DeviceKeys]:
    """``make_device(name)``: the fixed device keys for ``name``."""
    return device_keys


@pytest.fixture(scope="session")
def make_record() -> Callable[..., DeviceRecord]:
    """``make_record(keys, name="laptop", created_at_ms=...)``: the device's public record."""
    return record_for
