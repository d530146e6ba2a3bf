"""The only module that imports the cryptographic backend (pyca/cryptography).

Above it the protocol uses a small, easy API: ``hpke_seal``/``hpke_open``,
``aead_seal``/``aead_open``, ``sign``/``verify``, ``derive_key``, ``slow_hash``. Every decryption or
verification failure raises ``VerificationError`` and nothing else, whatever the cause, so
callers cannot leak why a check failed.

The device encryption key is HPKE (RFC 9180) base mode with the ML-KEM-768 + X25519 hybrid KEM
(X-Wing, HPKE KEM id 0x647a), HKDF-SHA256 and AES-256-GCM. A private key is stored as its
32-byte X-Wing seed; SHAKE256 expands it into the ML-KEM-768 seed and the X25519 scalar exactly
as draft-connolly-cfrg-xwing-kem specifies, so keys can be checked against its test vectors.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mailslot.errors import InputError, VerificationError

KEM_SEED_SIZE = 32
KEM_PUBLIC_SIZE = 1216  # ML-KEM-768 encapsulation key (1184) + X25519 public key (32)
MLKEM_PUBLIC_SIZE = 1184
SIGN_PUBLIC_SIZE = 32
SIGN_SEED_SIZE = 32
SIGNATURE_SIZE = 64
AEAD_KEY_SIZE = 32
AEAD_NONCE_SIZE = 12
AEAD_TAG_SIZE = 16
HASH_SIZE = 32


@dataclass(frozen=True)
class HpkeSuite:
    """An HPKE cipher suite by its registry ids; it travels with every key and wrapped key."""

    kem: int
    kdf: int
    aead: int

    def to_bytes(self) -> bytes:
        return self.kem.to_bytes(2, "big") + self.kdf.to_bytes(2, "big") + self.aead.to_bytes(2, "big")


SUITE = HpkeSuite(kem=0x647A, kdf=0x0001, aead=0x0002)
_PYCA_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
KNOWN_SUITES = frozenset({SUITE})


def random_bytes(size: int) -> bytes:
    """Fresh bytes from the operating system's CSPRNG."""
    return os.urandom(size)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- HPKE device encryption keys ------------------------------------------------------------


def _expand_kem_seed(seed: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    if len(seed) != KEM_SEED_SIZE:
        raise InputError("an encryption key seed is 32 bytes")
    expanded = hashlib.shake_256(seed).digest(96)
    return (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


@lru_cache(maxsize=64)
def _kem_private(seed: bytes) -> hpke.MLKEM768X25519PrivateKey:
    mlkem_key, x_key = _expand_kem_seed(seed)
    return hpke.MLKEM768X25519PrivateKey(mlkem_key, x_key)


def kem_public_key(seed: bytes) -> bytes:
    """The 1216-byte public key (ML-KEM-768 key, then X25519 key) for a 32-byte seed."""
    mlkem_key, x_key = _expand_kem_seed(seed)
    return mlkem_key.public_key().public_bytes_raw() + x_key.public_key().public_bytes_raw()


@lru_cache(maxsize=4096)
def _kem_public(public: bytes) -> hpke.MLKEM768X25519PublicKey:
    if len(public) != KEM_PUBLIC_SIZE:
        raise InputError("an encryption public key is 1216 bytes")
    try:
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(public[:MLKEM_PUBLIC_SIZE]),
            x25519.X25519PublicKey.from_public_bytes(public[MLKEM_PUBLIC_SIZE:]),
        )
    except ValueError as exc:
        raise InputError("invalid encryption public key") from exc


def check_kem_public_key(public: bytes) -> None:
    """Raise ``InputError`` unless ``public`` parses as a hybrid public key."""
    _kem_public(public)


def hpke_seal(public: bytes, plaintext: bytes, info: bytes) -> bytes:
    """HPKE base-mode single-shot seal to ``public``; returns ``enc || ciphertext``."""
    return _PYCA_SUITE.encrypt(plaintext, _kem_public(public), info=info)


def hpke_open(seed: bytes, sealed: bytes, info: bytes) -> bytes:
    """Open what ``hpke_seal`` made; any failure is ``VerificationError``."""
    try:
        return _PYCA_SUITE.decrypt(sealed, _kem_private(seed), info=info)
    except (InvalidTag, ValueError) as exc:
        raise VerificationError("decryption failed") from exc


# --- Ed25519 signatures ---------------------------------------------------------------------


@lru_cache(maxsize=64)
def _sign_private(seed: bytes) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


@lru_cache(maxsize=4096)
def _sign_public(public: bytes) -> ed25519.Ed25519PublicKey:
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(public)
    except ValueError as exc:
        raise VerificationError("invalid signing key") from exc


def sign_public_key(seed: bytes) -> bytes:
    return _sign_private(seed).public_key().public_bytes_raw()


def sign(seed: bytes, message: bytes) -> bytes:
    """Ed25519 signature (64 bytes) by the key with this 32-byte seed."""
    return _sign_private(seed).sign(message)


def verify(public: bytes, signature: bytes, message: bytes) -> None:
    """Raise ``VerificationError`` unless ``signature`` is ``public``'s over ``message``."""
    if len(signature) != SIGNATURE_SIZE:
        raise VerificationError("bad signature")
    try:
        _sign_public(public).verify(signature, message)
    except InvalidSignature as exc:
        raise VerificationError("bad signature") from exc


# --- Symmetric encryption and key derivation ------------------------------------------------


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption; ``key`` is 32 bytes and ``nonce`` 12, never reused with it."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM decryption; any failure is ``VerificationError``."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise VerificationError("decryption failed") from exc


def derive_key(secret: bytes, *, salt: bytes, info: bytes, size: int = AEAD_KEY_SIZE) -> bytes:
    """HKDF-SHA256 (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=size, salt=salt, info=info).derive(secret)


def passphrase_key(passphrase: bytes, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    """A 32-byte key from a passphrase through scrypt, a memory-hard KDF."""
    return Scrypt(salt=salt, length=AEAD_KEY_SIZE, n=n, r=r, p=p).derive(passphrase)


def slow_hash(data: bytes, *, salt: bytes, iterations: int, size: int = 64) -> bytes:
    """PBKDF2-HMAC-SHA512 (RFC 8018) of ``data``: deterministic, and deliberately slow.

    For values people compare by eye (safety codes): each guess at a colliding input costs
    ``iterations`` HMAC-SHA512 calls. ``salt`` is a fixed domain-separation label, not a secret.
    """
    if iterations < 1 or not 1 <= size <= 64:
        raise InputError("slow_hash needs iterations >= 1 and a size of 1-64 bytes")
    return PBKDF2HMAC(algorithm=hashes.SHA512(), length=size, salt=salt, iterations=iterations).derive(data)
