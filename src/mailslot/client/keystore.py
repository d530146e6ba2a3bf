"""The device's private keys at rest, encrypted under a passphrase.

File layout (canonical encoding of ``mailslot.protocol.encoding``)::

    header    = var(MAGIC) u8(format) u8(log2 n) u32(r) u32(p) salt[16] nonce[12]
    file      = header AES-256-GCM(key, nonce, secrets, aad)
    key       = scrypt(passphrase, salt, n, r, p)
    aad       = var(labels.KEYSTORE) header
    secrets   = var(handle) var(server) var(device_name)
                kem_seed[32] sign_seed[32] account_seed[32]

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
from dataclasses import dataclass, field
from pathlib import Path

from mailslot.errors import ConfigError, DecodeError, VerificationError
from mailslot.protocol import crypto, labels
from mailslot.protocol.encoding import Reader, Writer, decode
from mailslot.protocol.identity import AccountKey, DeviceKeys

MAGIC = b"mailslot-keystore"
FORMAT = 1
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
class DeviceSecrets:
    """Everything a device must keep secret, plus where and as whom it is registered."""

    handle: str
    server: str
    device_name: str
    device: DeviceKeys = field(repr=False)
    account: AccountKey = field(repr=False)

    def to_bytes(self) -> bytes:
        w = Writer().text(self.handle).text(self.server).text(self.device_name)
        w.fixed(self.device.kem_seed, crypto.KEM_SEED_SIZE)
        w.fixed(self.device.sign_seed, crypto.SIGN_SEED_SIZE)
        return w.fixed(self.account.seed, crypto.SIGN_SEED_SIZE).to_bytes()

    @classmethod
    def read(cls, r: Reader) -> DeviceSecrets:
        handle, server, name = r.text(64), r.text(2048), r.text(256)
        kem, sign = r.fixed(crypto.KEM_SEED_SIZE), r.fixed(crypto.SIGN_SEED_SIZE)
        account = r.fixed(crypto.SIGN_SEED_SIZE)
        return cls(handle, server, name, DeviceKeys(kem, sign), AccountKey(account))


@dataclass(frozen=True)
class _Header:
    params: KdfParams
    salt: bytes
    nonce: bytes

    def to_bytes(self) -> bytes:
        w = Writer().var(MAGIC).u8(FORMAT).u8(self.params.log2_n)
        w.u32(self.params.r).u32(self.params.p)
        return w.fixed(self.salt, SALT_SIZE).fixed(self.nonce, crypto.AEAD_NONCE_SIZE).to_bytes()

    @classmethod
    def read(cls, r: Reader) -> _Header:
        if r.var(64) != MAGIC or r.u8() != FORMAT:
            raise ConfigError("not a mailslot key file, or one from a newer mailslot")
        params = KdfParams(r.u8(), r.u32(), r.u32())
        return cls(params, r.fixed(SALT_SIZE), r.fixed(crypto.AEAD_NONCE_SIZE))


def _key(passphrase: bytes, header: _Header) -> bytes:
    p = header.params
    p.check()
    return crypto.passphrase_key(passphrase, header.salt, n=2**p.log2_n, r=p.r, p=p.p)


def seal(secrets: DeviceSecrets, passphrase: bytes, params: KdfParams | None = None) -> bytes:
    """The encrypted file contents for ``secrets``, with a fresh salt and nonce."""
    header = _Header(
        params or KdfParams(),
        crypto.random_bytes(SALT_SIZE),
        crypto.random_bytes(crypto.AEAD_NONCE_SIZE),
    )
    head = header.to_bytes()
    aad = Writer().var(labels.KEYSTORE).to_bytes() + head
    return head + crypto.aead_seal(_key(passphrase, header), header.nonce, secrets.to_bytes(), aad)


def unseal(data: bytes, passphrase: bytes) -> DeviceSecrets:
    """Decrypt a key file; any failure is one ``ConfigError`` that names no cause but damage."""
    reader = Reader(data)
    try:
        header = _Header.read(reader)
        head = header.to_bytes()
        ciphertext = data[len(head) :]
        aad = Writer().var(labels.KEYSTORE).to_bytes() + head
        plain = crypto.aead_open(_key(passphrase, header), header.nonce, ciphertext, aad)
        return decode(plain, DeviceSecrets.read)
    except (DecodeError, VerificationError, ValueError) as exc:
        raise ConfigError(_DAMAGED) from exc


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

    def save(self, secrets: DeviceSecrets, passphrase: bytes, params: KdfParams | None = None) -> None:
        """Encrypt and write the secrets; refuses an empty passphrase."""
        if not passphrase:
            raise ConfigError("the passphrase must not be empty")
        write_private(self.path, seal(secrets, passphrase, params))

    def load(self, passphrase: bytes) -> DeviceSecrets:
        """Read and decrypt the secrets, or say clearly why not."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no device is set up in {self.path.parent}: run `mailslot account register` "
                "or `mailslot device link` first"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        return unseal(data, passphrase)
