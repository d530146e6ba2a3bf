"""Device records and the account-signed device list.

The device list is the prevention half of the ghost-device defence: a sender encrypts only to
devices named in a list that verifies under the recipient's account key, and the account key
never leaves the account's own devices. The server stores and serves lists, but cannot make one.

Every list also names the device that approved it (``approver``, one of the listed devices)
and carries that device's own signature. The account key is shared by all of an account's
devices, so the account signature says "one of our devices"; the approval says which one, and
lets the account's other devices tell a change one of them made from a change made with a
stolen account key (``protocol/device_changes.py``). The list also commits to the account's
recovery key (``protocol/recovery.py``), so the server cannot swap the recovery key either.

Encoding (see docs/protocol.md)::

    DeviceRecord = id[16] sign_key[32] suite[6] enc_key[1216] var(name) u64(created_at_ms)
    DeviceList   = var(label) var(handle) account_key[32] recovery_key[32] u64(version)
                   u64(issued_at_ms) approver[16]
                   u32(count) DeviceRecord*           (records sorted by id, ids unique)
    SignedDeviceList = var(DeviceList) signature[64] approval[64]
        signature: Ed25519 by account_key over DeviceList
        approval:  Ed25519 by the approver device's signing key over APPROVAL_LABEL || DeviceList
"""

from __future__ import annotations

from dataclasses import dataclass

from mailslot.errors import DecodeError, InputError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.encoding import Reader, Writer, decode
from mailslot.protocol.identity import (
    DEVICE_ID_SIZE,
    AccountKey,
    DeviceKeys,
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
    """An account's devices at one version; valid only with the account key's signature and
    the approval of ``approver``, a device in the list."""

    handle: str
    account_key: bytes
    version: int
    issued_at_ms: int
    devices: tuple[DeviceRecord, ...]
    approver: bytes
    recovery_key: bytes

    def __post_init__(self) -> None:
        check_handle(self.handle)
        ids = [d.device_id for d in self.devices]
        if ids != sorted(set(ids)):
            raise InputError("device records must be sorted by id and unique")
        if not 1 <= len(ids) <= MAX_DEVICES_IN_LIST:
            raise InputError(f"a device list holds 1-{MAX_DEVICES_IN_LIST} devices")
        if self.version < 1:
            raise InputError("device list versions start at 1")
        if self.approver not in ids:
            raise InputError("the approving device must be in the list it approves")
        if len(self.recovery_key) != crypto.SIGN_PUBLIC_SIZE:
            raise InputError("a recovery key is 32 bytes")

    @classmethod
    def build(
        cls, handle: str, account_key: bytes, version: int, issued_at_ms: int,
        devices: list[DeviceRecord], *, approver: bytes, recovery_key: bytes,
    ) -> DeviceList:
        """A list with its records put in canonical order."""
        ordered = tuple(sorted(devices, key=lambda d: d.device_id))
        return cls(handle, account_key, version, issued_at_ms, ordered, approver, recovery_key)

    def successor(
        self, devices: list[DeviceRecord], *, approver: bytes, issued_at_ms: int,
        account_key: bytes | None = None, recovery_key: bytes | None = None,
    ) -> DeviceList:
        """The next version of this list: ``devices`` approved by ``approver``; the account and
        recovery keys stay unless given (a recovery gives both)."""
        return DeviceList.build(
            self.handle, account_key or self.account_key, self.version + 1, issued_at_ms, devices,
            approver=approver, recovery_key=recovery_key or self.recovery_key,
        )

    def to_bytes(self) -> bytes:
        w = Writer().var(labels.DEVICE_LIST).text(self.handle)
        w.fixed(self.account_key, crypto.SIGN_PUBLIC_SIZE).fixed(self.recovery_key, crypto.SIGN_PUBLIC_SIZE)
        w.u64(self.version).u64(self.issued_at_ms).fixed(self.approver, DEVICE_ID_SIZE)
        w.items(self.devices, lambda w_, d: d.write(w_))
        return w.to_bytes()

    @classmethod
    def read(cls, r: Reader) -> DeviceList:
        r.expect_label(labels.DEVICE_LIST)
        handle = r.text(max_size=64)
        account_key = r.fixed(crypto.SIGN_PUBLIC_SIZE)
        recovery_key = r.fixed(crypto.SIGN_PUBLIC_SIZE)
        version = r.u64()
        issued = r.u64()
        approver = r.fixed(DEVICE_ID_SIZE)
        devices = r.items(DeviceRecord.read, MAX_DEVICES_IN_LIST)
        try:
            return cls(handle, account_key, version, issued, tuple(devices), approver, recovery_key)
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
    """A device list with its account-key signature and its approver's signature, kept as the
    exact bytes that were signed."""

    list_bytes: bytes
    signature: bytes
    approval: bytes

    def to_bytes(self) -> bytes:
        w = Writer().var(self.list_bytes).fixed(self.signature, crypto.SIGNATURE_SIZE)
        return w.fixed(self.approval, crypto.SIGNATURE_SIZE).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDeviceList:
        def read(r: Reader) -> SignedDeviceList:
            return cls(r.var(), r.fixed(crypto.SIGNATURE_SIZE), r.fixed(crypto.SIGNATURE_SIZE))

        return decode(data, read)

    def parse(self) -> DeviceList:
        """The list inside, parsed but NOT verified; use ``verify_device_list`` to trust it."""
        return decode(self.list_bytes, DeviceList.read)


def sign_device_list(device_list: DeviceList, account: AccountKey, approver: DeviceKeys) -> SignedDeviceList:
    """Sign ``device_list`` with the account key it names and approve it as ``approver``."""
    if account.public != device_list.account_key:
        raise InputError("the list names a different account key")
    if approver.device_id != device_list.approver:
        raise InputError("the list names a different approving device")
    body = device_list.to_bytes()
    return SignedDeviceList(body, account.sign(body), approver.sign(labels.DEVICE_LIST_APPROVAL + body))


def verify_device_list(signed: SignedDeviceList, *, handle: str, account_key: bytes) -> DeviceList:
    """Return the list if it is for ``handle``, names ``account_key``, is signed by it and is
    approved by the listed device it names.

    ``account_key`` is the key the caller already trusts for ``handle`` (pinned on first
    contact); a list under any other key is refused, as is one for another handle. Whether the
    approver was entitled to approve (a device of the previous version) is a question about
    two versions: ``device_changes.diff_lists`` answers it.
    """
    device_list = signed.parse()
    if device_list.handle != handle:
        raise VerificationError("device list is for another handle")
    if device_list.account_key != account_key:
        raise VerificationError("device list names another account key")
    crypto.verify(account_key, signed.signature, signed.list_bytes)
    approver = device_list.find(device_list.approver)
    if approver is None:  # unreachable: DeviceList holds the approver to the list; fail closed
        raise VerificationError("device list names an approver it does not list")
    crypto.verify(approver.sign_key, signed.approval, labels.DEVICE_LIST_APPROVAL + signed.list_bytes)
    return device_list


def check_successor(current: DeviceList, new: DeviceList) -> None:
    """A new list must keep handle and account key and raise the version."""
    if new.handle != current.handle or new.account_key != current.account_key:
        raise VerificationError("device list changes handle or account key")
    if new.version <= current.version:
        raise VerificationError("device list version does not increase")
