"""Property tests of the easy crypto API: round trips, and one error for every failure."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.errors import InputError, VerificationError
from mailslot.protocol import crypto

SEEDS = st.binary(min_size=32, max_size=32)
KEM_SEED = hashlib.sha256(b"test_crypto/kem").digest()
OTHER_KEM_SEED = hashlib.sha256(b"test_crypto/other-kem").digest()
KEM_PUBLIC = crypto.kem_public_key(KEM_SEED)
CRYPTO = settings(max_examples=40, deadline=None)


def _flip(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


# --- Ed25519 --------------------------------------------------------------------------------


@CRYPTO
@given(SEEDS, st.binary(max_size=256))
def test_sign_verify_round_trip(seed: bytes, message: bytes) -> None:
    public = crypto.sign_public_key(seed)
    signature = crypto.sign(seed, message)
    assert len(public) == crypto.SIGN_PUBLIC_SIZE
    assert len(signature) == crypto.SIGNATURE_SIZE
    crypto.verify(public, signature, message)


@CRYPTO
@given(SEEDS, st.binary(max_size=64), st.data())
def test_flipped_signature_bit_fails(seed: bytes, message: bytes, data: st.DataObject) -> None:
    signature = crypto.sign(seed, message)
    bit = data.draw(st.integers(0, 8 * len(signature) - 1), label="bit")
    with pytest.raises(VerificationError):
        crypto.verify(crypto.sign_public_key(seed), _flip(signature, bit), message)


@CRYPTO
@given(SEEDS, st.binary(min_size=1, max_size=64), st.data())
def test_flipped_message_bit_fails(seed: bytes, message: bytes, data: st.DataObject) -> None:
    signature = crypto.sign(seed, message)
    bit = data.draw(st.integers(0, 8 * len(message) - 1), label="bit")
    with pytest.raises(VerificationError):
        crypto.verify(crypto.sign_public_key(seed), signature, _flip(message, bit))


@CRYPTO
@given(SEEDS, SEEDS, st.binary(max_size=64))
def test_signature_by_another_key_fails(seed: bytes, other: bytes, message: bytes) -> None:
    if crypto.sign_public_key(seed) == crypto.sign_public_key(other):
        return
    with pytest.raises(VerificationError):
        crypto.verify(crypto.sign_public_key(other), crypto.sign(seed, message), message)


@settings(max_examples=200)
@given(st.binary(max_size=40), st.binary(max_size=80), st.binary(max_size=8))
def test_verify_arbitrary_input_raises_only_verification_error(
    public: bytes, signature: bytes, message: bytes
) -> None:
    with pytest.raises(VerificationError):
        crypto.verify(public, signature, message)


# --- HPKE -----------------------------------------------------------------------------------


def test_kem_public_key_is_deterministic_and_sized() -> None:
    assert crypto.kem_public_key(KEM_SEED) == KEM_PUBLIC
    assert len(KEM_PUBLIC) == crypto.KEM_PUBLIC_SIZE
    assert crypto.kem_public_key(OTHER_KEM_SEED) != KEM_PUBLIC
    crypto.check_kem_public_key(KEM_PUBLIC)


@given(st.binary(max_size=64).filter(lambda s: len(s) != 32))
def test_kem_seed_of_wrong_size_is_input_error(seed: bytes) -> None:
    with pytest.raises(InputError):
        crypto.kem_public_key(seed)


@given(st.binary(max_size=1300).filter(lambda k: len(k) != crypto.KEM_PUBLIC_SIZE))
def test_kem_public_key_of_wrong_size_is_input_error(public: bytes) -> None:
    with pytest.raises(InputError):
        crypto.check_kem_public_key(public)
    with pytest.raises(InputError):
        crypto.hpke_seal(public, b"x", b"")


def test_kem_public_key_with_invalid_mlkem_part_is_input_error() -> None:
    # Every coefficient of an ML-KEM key is below q = 3329; 0xfff... encodes 4095.
    with pytest.raises(InputError):
        crypto.check_kem_public_key(b"\xff" * crypto.KEM_PUBLIC_SIZE)


@CRYPTO
@given(st.binary(max_size=128), st.binary(max_size=64))
def test_hpke_round_trip(plaintext: bytes, info: bytes) -> None:
    sealed = crypto.hpke_seal(KEM_PUBLIC, plaintext, info)
    assert crypto.hpke_open(KEM_SEED, sealed, info) == plaintext


@CRYPTO
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_hpke_wrong_info_fails(info: bytes, other: bytes) -> None:
    sealed = crypto.hpke_seal(KEM_PUBLIC, b"content key", info)
    if other == info:
        assert crypto.hpke_open(KEM_SEED, sealed, other) == b"content key"
    else:
        with pytest.raises(VerificationError):
            crypto.hpke_open(KEM_SEED, sealed, other)


@CRYPTO
@given(st.data())
def test_hpke_flipped_bit_fails(data: st.DataObject) -> None:
    sealed = crypto.hpke_seal(KEM_PUBLIC, b"content key", b"info")
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1), label="bit")
    with pytest.raises(VerificationError):
        crypto.hpke_open(KEM_SEED, _flip(sealed, bit), b"info")


def test_hpke_wrong_private_key_fails() -> None:
    sealed = crypto.hpke_seal(KEM_PUBLIC, b"content key", b"info")
    with pytest.raises(VerificationError):
        crypto.hpke_open(OTHER_KEM_SEED, sealed, b"info")


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=1300), st.binary(min_size=1120, max_size=1200)))
def test_hpke_open_arbitrary_bytes_is_verification_error(sealed: bytes) -> None:
    with pytest.raises(VerificationError):
        crypto.hpke_open(KEM_SEED, sealed, b"info")


def test_suite_ids() -> None:
    # X-Wing (MLKEM768-X25519) 0x647a, HKDF-SHA256 0x0001, AES-256-GCM 0x0002.
    assert crypto.SUITE.to_bytes() == bytes.fromhex("647a00010002")
    assert {crypto.SUITE} == crypto.KNOWN_SUITES


# --- AEAD and key derivation ----------------------------------------------------------------

KEYS = st.binary(min_size=32, max_size=32)
NONCES = st.binary(min_size=12, max_size=12)


@given(KEYS, NONCES, st.binary(max_size=128), st.binary(max_size=32))
def test_aead_round_trip(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> None:
    sealed = crypto.aead_seal(key, nonce, plaintext, aad)
    assert len(sealed) == len(plaintext) + crypto.AEAD_TAG_SIZE
    assert crypto.aead_open(key, nonce, sealed, aad) == plaintext


@given(KEYS, NONCES, st.binary(max_size=64), st.binary(max_size=32), st.data())
def test_aead_flipped_bit_fails(
    key: bytes, nonce: bytes, plaintext: bytes, aad: bytes, data: st.DataObject
) -> None:
    sealed = crypto.aead_seal(key, nonce, plaintext, aad)
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1), label="bit")
    with pytest.raises(VerificationError):
        crypto.aead_open(key, nonce, _flip(sealed, bit), aad)


@given(KEYS, NONCES, st.binary(max_size=32), st.binary(max_size=32))
def test_aead_wrong_aad_fails(key: bytes, nonce: bytes, aad: bytes, other: bytes) -> None:
    sealed = crypto.aead_seal(key, nonce, b"body", aad)
    if other == aad:
        return
    with pytest.raises(VerificationError):
        crypto.aead_open(key, nonce, sealed, other)


@given(KEYS, st.binary(max_size=40), st.binary(max_size=64))
def test_aead_open_arbitrary_input_is_verification_error(key: bytes, nonce: bytes, ciphertext: bytes) -> None:
    with pytest.raises(VerificationError):
        crypto.aead_open(key, nonce, ciphertext, b"")


def test_derive_key_rfc5869_test_case_1() -> None:
    # RFC 5869, Appendix A.1 (HKDF-SHA256, basic test case).
    okm = crypto.derive_key(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        size=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_passphrase_key_rfc7914() -> None:
    # RFC 7914, section 12: scrypt("password", "NaCl", N=1024, r=8, p=16), first 32 bytes.
    key = crypto.passphrase_key(b"password", b"NaCl", n=1024, r=8, p=16)
    assert key.hex() == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
