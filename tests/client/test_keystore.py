"""The encrypted keystore: round trip, file mode, wrong passphrase, tampering, atomic writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailslot.client.keystore import DeviceSecrets, KdfParams, Keystore, seal, unseal
from mailslot.errors import ConfigError
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
