"""The encrypted keystore: round trip, file mode, wrong passphrase, tampering, atomic writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailslot.client.keystore import (
    DeviceSecrets,
    KdfParams,
    Keystore,
    PendingKey,
    RetiredKey,
    seal,
    unseal,
)
from mailslot.errors import ConfigError, DecodeError
from mailslot.protocol.encoding import decode
from mailslot.protocol.identity import AccountKey, DeviceKeys

FAST = KdfParams(log2_n=10, r=8, p=1)


def _secrets() -> DeviceSecrets:
    return DeviceSecrets(
        "alice", "https://127.0.0.1:8443", "laptop", DeviceKeys.generate(), AccountKey.generate()
    )


def test_round_trip(tmp_path: Path) -> None:
    secrets = _secrets()
    store = Keystore(tmp_path / "home")
    store.save(secrets, b"correct horse", FAST)
    loaded = store.load(b"correct horse")
    assert loaded == secrets
    assert loaded.device.device_id == secrets.device.device_id
    assert loaded.account.public == secrets.account.public


def test_default_parameters_round_trip() -> None:
    secrets = _secrets()
    assert unseal(seal(secrets, b"pw"), b"pw") == secrets


def test_file_mode_0600_and_directory_0700(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Keystore(home).save(_secrets(), b"pw", FAST)
    assert stat.S_IMODE((home / Keystore.FILENAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert [p.name for p in home.iterdir()] == [Keystore.FILENAME]  # no temp file left behind


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.save(_secrets(), b"one", FAST)
    second = _secrets()
    store.save(second, b"two", FAST)
    assert store.load(b"two") == second


def test_wrong_passphrase_is_a_clear_config_error(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.save(_secrets(), b"right", FAST)
    with pytest.raises(ConfigError, match="wrong passphrase or damaged key file"):
        store.load(b"wrong")


@pytest.mark.parametrize("where", [20, 30, -1, -20])
def test_any_flipped_byte_is_refused(tmp_path: Path, where: int) -> None:
    store = Keystore(tmp_path)
    store.save(_secrets(), b"pw", FAST)
    data = bytearray(store.path.read_bytes())
    data[where] ^= 0x01
    store.path.write_bytes(bytes(data))
    with pytest.raises(ConfigError):
        store.load(b"pw")


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.save(_secrets(), b"pw", FAST)
    store.path.write_bytes(store.path.read_bytes()[:25])
    with pytest.raises(ConfigError, match="damaged"):
        store.load(b"pw")


def test_hostile_kdf_parameters_are_refused_before_use() -> None:
    secrets = _secrets()
    data = bytearray(seal(secrets, b"pw", FAST))
    log2_n_at = 4 + len(b"mailslot-keystore") + 1
    data[log2_n_at] = 40  # 2**40: would need terabytes
    with pytest.raises(ConfigError, match="unsupported key derivation parameters"):
        unseal(bytes(data), b"pw")


def test_not_a_keystore() -> None:
    with pytest.raises(ConfigError):
        unseal(b"hello world, certainly not a key file", b"pw")


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="account register"):
        Keystore(tmp_path).load(b"pw")


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        Keystore(tmp_path).save(_secrets(), b"", FAST)


def test_secrets_not_in_repr() -> None:
    secrets = _secrets()
    assert secrets.device.sign_seed.hex() not in repr(secrets)
    assert secrets.account.seed.hex() not in repr(secrets)


def _format_1_file(secrets: DeviceSecrets, passphrase: bytes) -> bytes:
    """A key file as mailslot wrote it before key rotation (format 1)."""
    from mailslot.client.keystore import MAGIC, SALT_SIZE
    from mailslot.protocol import crypto, labels
    from mailslot.protocol.encoding import Writer

    salt, nonce = b"s" * SALT_SIZE, b"n" * crypto.AEAD_NONCE_SIZE
    head = Writer().var(MAGIC).u8(1).u8(FAST.log2_n).u32(FAST.r).u32(FAST.p).fixed(salt, SALT_SIZE)
    head_bytes = head.fixed(nonce, crypto.AEAD_NONCE_SIZE).to_bytes()
    body = Writer().text(secrets.handle).text(secrets.server).text(secrets.device_name)
    body.fixed(secrets.device.kem_seed, 32).fixed(secrets.device.sign_seed, 32).fixed(
        secrets.account.seed, 32
    )
    key = crypto.passphrase_key(passphrase, salt, n=2**FAST.log2_n, r=FAST.r, p=FAST.p)
    aad = Writer().var(labels.KEYSTORE).to_bytes() + head_bytes
    return head_bytes + crypto.aead_seal(key, nonce, body.to_bytes(), aad)


def test_a_format_1_file_is_read_and_rewritten_as_format_2(tmp_path: Path) -> None:
    secrets = _secrets()
    store = Keystore(tmp_path)
    store.path.write_bytes(_format_1_file(secrets, b"pw"))
    loaded, sealing = store.unlock(b"pw")
    assert loaded == secrets and loaded.kem_created_ms == 0 and loaded.retired == ()
    rotated = loaded.with_pending(b"\x05" * 32, 7)
    store.write(rotated, sealing)  # no passphrase needed to rewrite
    assert store.path.read_bytes()[len(MAGIC_PREFIX)] == 2
    assert store.load(b"pw") == rotated


MAGIC_PREFIX = b"\x00\x00\x00\x11mailslot-keystore"


def test_rotation_state_round_trips_and_orders_decryption_keys(tmp_path: Path) -> None:
    secrets = DeviceSecrets(
        "alice",
        "https://127.0.0.1:8443",
        "laptop",
        DeviceKeys.generate(),
        AccountKey.generate(),
        kem_created_ms=5,
    )
    first = secrets.device
    pending = secrets.with_pending(b"\x07" * 32, 10)
    assert [k.kem_seed for k in pending.decryption_keys()] == [first.kem_seed, b"\x07" * 32]
    promoted = pending.promoted(20)
    assert promoted.device.kem_seed == b"\x07" * 32 and promoted.kem_created_ms == 10
    assert promoted.device.device_id == first.device_id  # the same device, a new KEM key
    assert [(k.created_ms, k.retired_ms) for k in promoted.retired] == [(5, 20)]
    again = promoted.with_pending(b"\x08" * 32, 30).promoted(40)
    assert [k.kem_seed for k in again.decryption_keys()] == [b"\x08" * 32, b"\x07" * 32, first.kem_seed]
    store = Keystore(tmp_path)
    store.save(again, b"pw", FAST)
    assert store.load(b"pw") == again


def test_a_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    store.save(_secrets(), b"pw", FAST)
    data = bytearray(store.path.read_bytes())
    data[len(MAGIC_PREFIX)] = 9
    store.path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="newer mailslot"):
        store.load(b"pw")


# --- the plaintext encoding, as a parser: round trip, truncation, trailing bytes ------------

SEEDS = st.binary(min_size=32, max_size=32)
TIMES = st.integers(0, 2**64 - 1)
SECRETS = st.builds(
    DeviceSecrets,
    st.sampled_from(["alice", "b0b", "c.d-e_f"]),
    st.text(max_size=40),
    st.text(min_size=1, max_size=20),
    st.builds(DeviceKeys, SEEDS, SEEDS),
    st.builds(AccountKey, SEEDS),
    kem_created_ms=TIMES,
    pending=st.none() | st.builds(PendingKey, SEEDS, TIMES),
    retired=st.lists(st.builds(RetiredKey, SEEDS, TIMES, TIMES), max_size=4).map(tuple),
)


def _decode_secrets(data: bytes) -> DeviceSecrets:
    return decode(data, DeviceSecrets.read)


@settings(max_examples=60, deadline=None)
@given(SECRETS, st.data())
def test_secrets_encoding_round_trips_and_refuses_damage(secrets: DeviceSecrets, data: st.DataObject) -> None:
    encoded = secrets.to_bytes()
    assert _decode_secrets(encoded) == secrets
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(DecodeError):
        _decode_secrets(encoded[:cut])
    with pytest.raises(DecodeError):
        _decode_secrets(encoded + data.draw(st.binary(min_size=1, max_size=8), label="extra"))


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_fail_cleanly(blob: bytes) -> None:
    try:
        secrets = _decode_secrets(blob)
    except DecodeError:
        return
    assert _decode_secrets(secrets.to_bytes()) == secrets
