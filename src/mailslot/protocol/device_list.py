"""Device records and the account-signed device list.

The device list is the prevention half of the ghost-device defence: a sender encrypts only to
devices named in a list that verifies under the recipient's account key, and the account key
never leaves the account's own devices. The server stores and serves lists, but cannot make one.

Encoding (see docs/protocol.md)::

    DeviceRecord = id[16] sign_key[32] suite[6] enc_key[1216] var(name) u64(created_at_ms)
    DeviceList   = var(label) var(handle) account_key[32] u64(version) u64(issued_at_ms)
                   u32(count) DeviceRecord*           (records sorted by id, ids unique)
    SignedDeviceList = var(DeviceList) signature[64]  (Ed25519 by account_key over DeviceList)
"""

from __future__ import annotations

from dataclasses import dataclass

from mailslot.errors import DecodeError, InputError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.encoding import Reader, Writer, decode
from mailslot.protocol.identity import (
    DEVICE_ID_SIZE,
    AccountKey,
    check_device_name,
    check_handle,
    device_id_for,
)

MAX_DEVICES_IN_LIST = 256
_SUITE_SIZE = 6


@dataclass(frozen=True)
class DeviceRecord:
    """One device's public identity, as listed by its account."""

    device_id: bytes
    sign_key: bytes
    suite: crypto.HpkeSuite
    enc_key: bytes
    name: str
    created_at_ms: int

    def __post_init__(self) -> None:
        check_device_name(self.name)
        if self.device_id != device_id_for(self.sign_key):
            raise InputError("device id does not match the device's signing key")
        if self.suite not in crypto.KNOWN_SUITES:
            raise InputError("unknown HPKE suite")
        crypto.check_kem_public_key(self.enc_key)

    def write(self, w: Writer) -> None:
        w.fixed(self.device_id, DEVICE_ID_SIZE).fixed(self.sign_key, crypto.SIGN_PUBLIC_SIZE)
        w.fixed(self.suite.to_bytes(), _SUITE_SIZE).fixed(self.enc_key, crypto.KEM_PUBLIC_SIZE)
        w.text(self.name).u64(self.created_at_ms)

    @classmethod
    def read(cls, r: Reader) -> DeviceRecord:
        device_id = r.fixed(DEVICE_ID_SIZE)
        sign_key = r.fixed(crypto.SIGN_PUBLIC_SIZE)
        suite = crypto.HpkeSuite(r.u16(), r.u16(), r.u16())
        enc_key = r.fixed(crypto.KEM_PUBLIC_SIZE)
        name = r.text(max_size=4 * 64)
        created = r.u64()
        try:
            return cls(device_id, sign_key, suite, enc_key, name, created)
        except InputError as exc:
            raise DecodeError(f"invalid device record: {exc.message}") from exc

    def to_bytes(self) -> bytes:
        w = Writer()
        self.write(w)
        return w.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceRecord:
        return decode(data, cls.read)


@dataclass(frozen=True)
class DeviceList:
    """An account's devices at one version; valid only with the account key's signature."""

    handle: str
    account_key: bytes
    version: int
    issued_at_ms: int
    devices: tuple[DeviceRecord, ...]

    def __post_init__(self) -> None:
        check_handle(self.handle)
        ids = [d.device_id for d in self.devices]
        if ids != sorted(set(ids)):
            raise InputError("device records must be sorted by id and unique")
        if not 1 <= len(ids) <= MAX_DEVICES_IN_LIST:
            raise InputError(f"a device list holds 1-{MAX_DEVICES_IN_LIST} devices")
        if self.version < 1:
            raise InputError("device list versions start at 1")

    @classmethod
    def build(
        cls, handle: str, account_key: bytes, version: int, issued_at_ms: int,
        devices: list[DeviceRecord],
    ) -> DeviceList:
        """A list with its records put in canonical order."""
        ordered = tuple(sorted(devices, key=lambda d: d.device_id))
        return cls(handle, account_key, version, issued_at_ms, ordered)

    def to_bytes(self) -> bytes:
        w = Writer().var(labels.DEVICE_LIST).text(self.handle)
        w.fixed(self.account_key, crypto.SIGN_PUBLIC_SIZE).u64(self.version).u64(self.issued_at_ms)
        w.items(self.devices, lambda w_, d: d.write(w_))
        return w.to_bytes()

    @classmethod
    def read(cls, r: Reader) -> DeviceList:
        r.expect_label(labels.DEVICE_LIST)
        handle = r.text(max_size=64)
        account_key = r.fixed(crypto.SIGN_PUBLIC_SIZE)
        version = r.u64()
        issued = r.u64()
        devices = r.items(DeviceRecord.read, MAX_DEVICES_IN_LIST)
        try:
            return cls(handle, account_key, version, issued, tuple(devices))
        except InputError as exc:
            raise DecodeError(f"invalid device list: {exc.message}") from exc

    @property
    def device_ids(self) -> frozenset[bytes]:
        return frozenset(d.device_id for d in self.devices)

    def find(self, device_id: bytes) -> DeviceRecord | None:
        for record in self.devices:
            if record.device_id == device_id:
                return record
        return None


@dataclass(frozen=True)
class SignedDeviceList:
    """A device list with its account-key signature, kept as the exact bytes that were signed."""

    list_bytes: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        return Writer().var(self.list_bytes).fixed(self.signature, crypto.SIGNATURE_SIZE).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDeviceList:
        def read(r: Reader) -> SignedDeviceList:
            return cls(r.var(), r.fixed(crypto.SIGNATURE_SIZE))

        return decode(data, read)

    def parse(self) -> DeviceList:
        """The list inside, parsed but NOT verified; use ``verify_device_list`` to trust it."""
        return decode(self.list_bytes, DeviceList.read)


def sign_device_list(device_list: DeviceList, account: AccountKey) -> SignedDeviceList:
    """Sign ``device_list`` with the account key it names."""
    if account.public != device_list.account_key:
        raise InputError("the list names a different account key")
    body = device_list.to_bytes()
    return SignedDeviceList(body, account.sign(body))


def verify_device_list(signed: SignedDeviceList, *, handle: str, account_key: bytes) -> DeviceList:
    """Return the list if it is for ``handle``, names ``account_key`` and is signed by it.

    ``account_key`` is the key the caller already trusts for ``handle`` (pinned on first
    contact); a list under any other key is refused, as is one for another handle.
    """
    device_list = signed.parse()
    if device_list.handle != handle:
        raise VerificationError("device list is for another handle")
    if device_list.account_key != account_key:
        raise VerificationError("device list names another account key")
    crypto.verify(account_key, signed.signature, signed.list_bytes)
    return device_list


def check_successor(current: DeviceList, new: DeviceList) -> None:
    """A new list must keep handle and account key and raise the version."""
    if new.handle != current.handle or new.account_key != current.account_key:
        raise VerificationError("device list changes handle or account key")
    if new.version <= current.version:
        raise VerificationError("device list version does not increase")
