"""Loading the server configuration: the TOML file, environment overrides and secret files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailslot.errors import ConfigError
from mailslot.server.config import (
    RESERVED_ENV,
    ServerConfig,
    environment_overrides,
    load_config,
    write_config,
)

SECRET_URL = "postgresql://mailslot:s3cret@db.example:5432/mailslot"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory whose config.toml sets a few values away from their defaults."""
    write_config(ServerConfig(data_dir=tmp_path, port=9000, max_recipients=10, tls=False))
    return tmp_path


def add_toml(data_dir: Path, *lines: str) -> None:
    """Set ``lines`` (``key = value``) in config.toml, in place of the same keys."""
    path = data_dir / "config.toml"
    keys = {line.split("=")[0].strip() for line in lines}
    kept = [line for line in path.read_text().splitlines() if line.split("=")[0].strip() not in keys]
    path.write_text("\n".join([*kept, *lines]) + "\n")


def test_the_file_alone(data_dir: Path) -> None:
    config = load_config(data_dir, {})
    assert (config.port, config.max_recipients, config.tls) == (9000, 10, False)
    assert config.registration == "invite"  # closed unless the operator opens it
    assert load_config(data_dir, {"MAILSLOT_REGISTRATION": "open"}).registration == "open"
    assert config == ServerConfig(data_dir=data_dir, port=9000, max_recipients=10, tls=False)


def test_the_environment_overrides_the_file_and_flags_override_both(data_dir: Path) -> None:
    env = {
        "MAILSLOT_PORT": "9100",
        "MAILSLOT_HOST": "0.0.0.0",
        "MAILSLOT_TLS": "true",
        "MAILSLOT_RATE_PER_DEVICE_PER_S": "12.5",
        "MAILSLOT_DATABASE_URL": SECRET_URL,
    }
    config = load_config(data_dir, env)
    assert (config.port, config.host, config.tls, config.rate_per_device_per_s) == (
        9100,
        "0.0.0.0",
        True,
        12.5,
    )
    assert config.database_url == SECRET_URL
    assert config.max_recipients == 10  # from the file, untouched
    assert config.with_overrides(port=9200, host=None).port == 9200  # CLI flags come last
    assert config.with_overrides(port=9200, host=None).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("Off", False),
        (" no\n", False),
    ],
)
def test_booleans(data_dir: Path, text: str, value: bool) -> None:
    assert load_config(data_dir, {"MAILSLOT_TLS": text}).tls is value


@pytest.mark.parametrize(
    ("var", "text", "message"),
    [
        ("MAILSLOT_PORT", "eighty", "MAILSLOT_PORT must be an integer, not 'eighty'"),
        ("MAILSLOT_PORT", "", "MAILSLOT_PORT must be an integer"),
        ("MAILSLOT_PORT", "8.5", "MAILSLOT_PORT must be an integer"),
        ("MAILSLOT_TLS", "maybe", "MAILSLOT_TLS must be true or false, not 'maybe'"),
        ("MAILSLOT_SWEEP_INTERVAL_S", "nan", "MAILSLOT_SWEEP_INTERVAL_S must be a finite number"),
        ("MAILSLOT_SWEEP_INTERVAL_S", "soon", "MAILSLOT_SWEEP_INTERVAL_S must be a finite number"),
        ("MAILSLOT_PORT", "70000", "port must be 0-65535"),  # parsed, then checked as in the file
        ("MAILSLOT_SQLITE_SYNCHRONOUS", "OFF", "sqlite_synchronous must be FULL or NORMAL"),
        ("MAILSLOT_REGISTRATION", "closed", "registration must be 'invite' or 'open'"),
    ],
)
def test_bad_values_are_clear_errors(data_dir: Path, var: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, {var: text})
    assert message in caught.value.message


def test_a_secret_file_gives_the_value_without_its_newline(data_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "database_url"
    secret.write_text(SECRET_URL + "\n")
    assert load_config(data_dir, {"MAILSLOT_DATABASE_URL_FILE": str(secret)}).database_url == SECRET_URL
    secret.write_text(SECRET_URL + "\r\n")
    assert load_config(data_dir, {"MAILSLOT_DATABASE_URL_FILE": str(secret)}).database_url == SECRET_URL
    secret.write_text(SECRET_URL + "\n\n")  # only one newline goes
    assert (
        load_config(data_dir, {"MAILSLOT_DATABASE_URL_FILE": str(secret)}).database_url == SECRET_URL + "\n"
    )
    port = tmp_path / "port"
    port.write_text("9300\n")
    assert load_config(data_dir, {"MAILSLOT_PORT_FILE": str(port)}).port == 9300


def test_secret_file_errors_never_show_the_secret(data_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "port"
    secret.write_text("hunter2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir, {"MAILSLOT_PORT_FILE": str(secret)})
    assert "MAILSLOT_PORT_FILE" in caught.value.message and str(secret) in caught.value.message
    assert "hunter2" not in caught.value.message
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(data_dir, {"MAILSLOT_DATABASE_URL_FILE": str(missing)})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_config(data_dir, {"MAILSLOT_DATABASE_URL_FILE": str(tmp_path / "empty")})
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(data_dir, {"MAILSLOT_DATABASE_URL_FILE": str(tmp_path / "binary")})


def test_a_value_and_its_file_together_are_refused(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "url").write_text(SECRET_URL)
    env = {"MAILSLOT_DATABASE_URL": "sqlite:///x.db", "MAILSLOT_DATABASE_URL_FILE": str(tmp_path / "url")}
    with pytest.raises(ConfigError, match="MAILSLOT_DATABASE_URL or MAILSLOT_DATABASE_URL_FILE, not both"):
        load_config(data_dir, env)


def test_secret_files_in_the_toml_file(data_dir: Path) -> None:
    (data_dir / "secrets").mkdir()
    (data_dir / "secrets" / "db").write_text(SECRET_URL + "\n")
    add_toml(data_dir, 'database_url = ""')  # the key as `server init` writes it must go
    add_toml(data_dir, 'database_url_file = "secrets/db"')  # relative to the data directory
    with pytest.raises(ConfigError, match="set database_url or database_url_file, not both"):
        load_config(data_dir, {})
    path = data_dir / "config.toml"
    path.write_text(path.read_text().replace('database_url = ""\n', ""))
    assert load_config(data_dir, {}).database_url == SECRET_URL
    add_toml(data_dir, "database_url_file = 5")
    with pytest.raises(ConfigError, match="database_url_file must be a path"):
        load_config(data_dir, {})
    add_toml(data_dir, f'database_url_file = "{data_dir / "secrets" / "db"}"')  # or absolute
    assert load_config(data_dir, {}).database_url == SECRET_URL
    env_url = "postgresql://other/mailslot"
    assert load_config(data_dir, {"MAILSLOT_DATABASE_URL": env_url}).database_url == env_url


def test_unknown_variables_are_refused_but_reserved_ones_are_left_alone(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown environment variable MAILSLOT_DATABASE_ULR"):
        load_config(data_dir, {"MAILSLOT_DATABASE_ULR": SECRET_URL})
    with pytest.raises(ConfigError, match="unknown environment variable MAILSLOT_Port"):
        load_config(data_dir, {"MAILSLOT_Port": "1"})
    with pytest.raises(ConfigError, match="unknown environment variable MAILSLOT_DATA_DIR_FILE"):
        load_config(data_dir, {"MAILSLOT_DATA_DIR_FILE": "/x"})
    reserved = {
        "MAILSLOT_HOME": "/home/me/.mailslot",
        "MAILSLOT_PASSPHRASE": "not a setting",
        "MAILSLOT_DATA_DIR": "/elsewhere",
        "MAILSLOT_TEST_POSTGRES_URL": "postgresql://test",
        "OTHER_PORT": "1",
    }
    assert load_config(data_dir, reserved) == load_config(data_dir, {})
    assert set(RESERVED_ENV) == {"MAILSLOT_HOME", "MAILSLOT_PASSPHRASE", "MAILSLOT_DATA_DIR"}
    assert environment_overrides({**reserved, "MAILSLOT_PORT": "1", "MAILSLOT_X": "2"}) == [
        "MAILSLOT_PORT",
        "MAILSLOT_X",
    ]


def test_toml_errors_still_name_the_file(data_dir: Path) -> None:
    add_toml(data_dir, "no_such_setting = 1")
    with pytest.raises(ConfigError, match=r"config.toml: unknown setting 'no_such_setting'"):
        load_config(data_dir, {})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('max_recipients = "ten"', "max_recipients must be an integer"),
        ("tls = 1", "tls must be true or false"),
        ("port = true", "port must be an integer"),
        ("host = 1", "host must be a string"),
    ],
)
def test_toml_types_are_checked(data_dir: Path, line: str, message: str) -> None:
    add_toml(data_dir, line)
    with pytest.raises(ConfigError, match=message):
        load_config(data_dir, {})


def test_toml_integers_widen_to_floats(data_dir: Path) -> None:
    add_toml(data_dir, "sweep_interval_s = 5")
    assert load_config(data_dir, {}).sweep_interval_s == 5.0


def test_the_process_environment_is_the_default(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSLOT_MAX_RECIPIENTS", "7")
    assert load_config(data_dir).max_recipients == 7
