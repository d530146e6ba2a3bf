"""The device's private keys at rest, encrypted under a passphrase.

File layout (canonical encoding of ``mailslot.protocol.encoding``)::

    header    = var(MAGIC) u8(format) u8(log2 n) u32(r) u32(p) salt[16] nonce[12]
    file      = header AES-256-GCM(key, nonce, secrets, aad)
    key       = scrypt(passphrase, salt, n, r, p)
    aad       = var(labels.KEYSTORE) header
    secrets   = var(handle) var(server) var(device_name)
                kem_seed[32] sign_seed[32] account_seed[32]            (format 1 ends here)
                u64(kem_created_ms)
                u8(0) | u8(1) pending_seed[32] u64(created_ms)         (format 2)
                u32(count) (kem_seed[32] u64(created_ms) u64(retired_ms))*

Format 2 adds what encryption-key rotation (``rotation.py``) needs: when the current KEM seed
was made, a *pending* seed (saved before its public key is published, so a crash can never
leave a published key without its private half) and the *retired* seeds, kept until every
message sealed to them has been read. Format 1 files are still read (no pending or retired
keys, creation time unknown: 0); every save writes format 2.

The scrypt parameters and salt sit in the header so they can be raised later without breaking
old files; the whole header is authenticated as the AAD, so it cannot be edited either. The
parameters are bounded before use, so a damaged header cannot make us allocate gigabytes.
A wrong passphrase and a damaged file are the same error on purpose: AES-GCM cannot tell
them apart, and the user's remedy is the same.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from mailslot.errors import ConfigError, DecodeError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.encoding import Reader, Writer, decode
from mailslot.protocol.identity import AccountKey, DeviceKeys

MAGIC = b"mailslot-keystore"
FORMAT = 2
FORMATS = (1, 2)  # the formats this version reads
MAX_RETIRED_KEYS = 64
SALT_SIZE = 16
_MIN_LOG2_N, _MAX_LOG2_N = 10, 22
_MAX_R, _MAX_P = 32, 16
_DAMAGED = "wrong passphrase or damaged key file"


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost parameters; the defaults cost about 32 MiB and a tenth of a second."""

    log2_n: int = 15
    r: int = 8
    p: int = 1

    def check(self) -> None:
        """Refuse parameters outside sane bounds (a damaged or hostile header)."""
        if not (
            _MIN_LOG2_N <= self.log2_n <= _MAX_LOG2_N and 1 <= self.r <= _MAX_R and 1 <= self.p <= _MAX_P
        ):
            raise ConfigError(f"{_DAMAGED}: unsupported key derivation parameters")


@dataclass(frozen=True)
class RetiredKey:
    """A KEM seed this device no longer publishes but may still have mail sealed to."""

    kem_seed: bytes = field(repr=False)
    created_ms: int
    retired_ms: int


@dataclass(frozen=True)
class PendingKey:
    """A KEM seed saved before its public key is published in the device list."""

    kem_seed: bytes = field(repr=False)
    created_ms: int


@dataclass(frozen=True)
class DeviceSecrets:
    """Everything a device must keep secret, plus where and as whom it is registered.

    ``device`` holds the current KEM seed (the one the published list names, once a rotation
    has finished) and the signing seed; ``pending`` and ``retired`` are the other KEM seeds
    this device can still decrypt with (``decryption_keys``).
    """

    handle: str
    server: str
    device_name: str
    device: DeviceKeys = field(repr=False)
    account: AccountKey = field(repr=False)
    kem_created_ms: int = 0
    pending: PendingKey | None = None
    retired: tuple[RetiredKey, ...] = ()

    def decryption_keys(self) -> list[DeviceKeys]:
        """Every key a message to this device may be sealed to: current, pending, then the
        retired ones, newest first (all with this device's one signing seed)."""
        seeds = [self.device.kem_seed]
        if self.pending is not None:
            seeds.append(self.pending.kem_seed)
        seeds.extend(k.kem_seed for k in sorted(self.retired, key=lambda k: -k.retired_ms))
        return [self.device, *(DeviceKeys(seed, self.device.sign_seed) for seed in seeds[1:])]

    def with_pending(self, kem_seed: bytes, now_ms: int) -> DeviceSecrets:
        """These secrets with ``kem_seed`` saved as the pending key (replacing any other)."""
        return replace(self, pending=PendingKey(kem_seed, now_ms))

    def promoted(self, now_ms: int) -> DeviceSecrets:
        """The pending key made current, the current one retired at ``now_ms``."""
        if self.pending is None:
            raise ValueError("no pending key to promote")
        old = RetiredKey(self.device.kem_seed, self.kem_created_ms, now_ms)
        return replace(
            self,
            device=DeviceKeys(self.pending.kem_seed, self.device.sign_seed),
            kem_created_ms=self.pending.created_ms,
            pending=None,
            retired=(*self.retired, old)[-MAX_RETIRED_KEYS:],
        )

    def keeping(self, retired: tuple[RetiredKey, ...]) -> DeviceSecrets:
        return replace(self, retired=retired)

    def renamed(self, device_name: str) -> DeviceSecrets:
        return replace(self, device_name=device_name)

    def to_bytes(self) -> bytes:
        w = Writer().text(self.handle).text(self.server).text(self.device_name)
        w.fixed(self.device.kem_seed, crypto.KEM_SEED_SIZE)
        w.fixed(self.device.sign_seed, crypto.SIGN_SEED_SIZE)
        w.fixed(self.account.seed, crypto.SIGN_SEED_SIZE).u64(self.kem_created_ms)
        if self.pending is None:
            w.u8(0)
        else:
            w.u8(1).fixed(self.pending.kem_seed, crypto.KEM_SEED_SIZE).u64(self.pending.created_ms)
        w.items(self.retired, _write_retired)
        return w.to_bytes()

    @classmethod
    def read(cls, r: Reader, fmt: int = FORMAT) -> DeviceSecrets:
        handle, server, name = r.text(64), r.text(2048), r.text(256)
        kem, sign = r.fixed(crypto.KEM_SEED_SIZE), r.fixed(crypto.SIGN_SEED_SIZE)
        account = r.fixed(crypto.SIGN_SEED_SIZE)
        secrets = cls(handle, server, name, DeviceKeys(kem, sign), AccountKey(account))
        if fmt == 1:
            return secrets
        created = r.u64()
        flag = r.u8()
        if flag > 1:
            raise DecodeError("bad pending-key flag")
        pending = PendingKey(r.fixed(crypto.KEM_SEED_SIZE), r.u64()) if flag else None
        retired = tuple(r.items(_read_retired, MAX_RETIRED_KEYS))
        return replace(secrets, kem_created_ms=created, pending=pending, retired=retired)


def _write_retired(w: Writer, key: RetiredKey) -> None:
    w.fixed(key.kem_seed, crypto.KEM_SEED_SIZE).u64(key.created_ms).u64(key.retired_ms)


def _read_retired(r: Reader) -> RetiredKey:
    return RetiredKey(r.fixed(crypto.KEM_SEED_SIZE), r.u64(), r.u64())


@dataclass(frozen=True)
class _Header:
    params: KdfParams
    salt: bytes
    nonce: bytes
    fmt: int = FORMAT

    def to_bytes(self) -> bytes:
        w = Writer().var(MAGIC).u8(self.fmt).u8(self.params.log2_n)
        w.u32(self.params.r).u32(self.params.p)
        return w.fixed(self.salt, SALT_SIZE).fixed(self.nonce, crypto.AEAD_NONCE_SIZE).to_bytes()

    @classmethod
    def read(cls, r: Reader) -> _Header:
        if r.var(64) != MAGIC:
            raise ConfigError("not a mailslot key file")
        fmt = r.u8()
        if fmt not in FORMATS:
            raise ConfigError("a key file from a newer mailslot; upgrade mailslot to open it")
        params = KdfParams(r.u8(), r.u32(), r.u32())
        return cls(params, r.fixed(SALT_SIZE), r.fixed(crypto.AEAD_NONCE_SIZE), fmt)


def _key(passphrase: bytes, params: KdfParams, salt: bytes) -> bytes:
    params.check()
    return crypto.passphrase_key(passphrase, salt, n=2**params.log2_n, r=params.r, p=params.p)


def _aad(head: bytes) -> bytes:
    return Writer().var(labels.KEYSTORE).to_bytes() + head


@dataclass(frozen=True)
class SealingKey:
    """The passphrase-derived key of one key file, kept in memory while the device is open so
    that the file can be rewritten (a key rotation) without asking for the passphrase again
    or keeping it. Each write uses a fresh nonce under the same key and salt."""

    key: bytes = field(repr=False)
    params: KdfParams
    salt: bytes

    @classmethod
    def derive(cls, passphrase: bytes, params: KdfParams | None = None) -> SealingKey:
        params = params or KdfParams()
        salt = crypto.random_bytes(SALT_SIZE)
        return cls(_key(passphrase, params, salt), params, salt)

    def seal(self, secrets: DeviceSecrets) -> bytes:
        """The encrypted file contents for ``secrets`` (format 2), with a fresh nonce."""
        header = _Header(self.params, self.salt, crypto.random_bytes(crypto.AEAD_NONCE_SIZE))
        head = header.to_bytes()
        return head + crypto.aead_seal(self.key, header.nonce, secrets.to_bytes(), _aad(head))


def seal(secrets: DeviceSecrets, passphrase: bytes, params: KdfParams | None = None) -> bytes:
    """The encrypted file contents for ``secrets``, with a fresh salt and nonce."""
    return SealingKey.derive(passphrase, params).seal(secrets)


def unlock(data: bytes, passphrase: bytes) -> tuple[DeviceSecrets, SealingKey]:
    """Decrypt a key file (format 1 or 2); any failure is one ``ConfigError`` that names no
    cause but damage. Also returns the key that rewrites it."""
    reader = Reader(data)
    try:
        header = _Header.read(reader)
        head = header.to_bytes()
        ciphertext = data[len(head) :]
        key = _key(passphrase, header.params, header.salt)
        plain = crypto.aead_open(key, header.nonce, ciphertext, _aad(head))
        secrets = decode(plain, lambda r: DeviceSecrets.read(r, header.fmt))
    except (DecodeError, VerificationError, ValueError) as exc:
        raise ConfigError(_DAMAGED) from exc
    return secrets, SealingKey(key, header.params, header.salt)


def unseal(data: bytes, passphrase: bytes) -> DeviceSecrets:
    """Decrypt a key file; see ``unlock``."""
    return unlock(data, passphrase)[0]


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (temp file + ``os.replace``), mode 0600, directory 0700."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


class Keystore:
    """The key file of one device home directory."""

    FILENAME = "device.key"

    def __init__(self, home: Path) -> None:
        self.path = home / self.FILENAME

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, secrets: DeviceSecrets, passphrase: bytes, params: KdfParams | None = None) -> SealingKey:
        """Encrypt and write the secrets; refuses an empty passphrase. Returns the key that
        rewrites the file (``write``)."""
        if not passphrase:
            raise ConfigError("the passphrase must not be empty")
        sealing = SealingKey.derive(passphrase, params)
        self.write(secrets, sealing)
        return sealing

    def write(self, secrets: DeviceSecrets, sealing: SealingKey) -> None:
        """Rewrite the file with ``secrets`` under the key ``save`` or ``unlock`` gave; durable
        (fsync) and atomic when this returns."""
        write_private(self.path, sealing.seal(secrets))

    def unlock(self, passphrase: bytes) -> tuple[DeviceSecrets, SealingKey]:
        """Read and decrypt the secrets, or say clearly why not; also the key to rewrite them."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no device is set up in {self.path.parent}: run `mailslot account register` "
                "or `mailslot device link` first"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        return unlock(data, passphrase)

    def load(self, passphrase: bytes) -> DeviceSecrets:
        """Read and decrypt the secrets, or say clearly why not."""
        return self.unlock(passphrase)[0]
