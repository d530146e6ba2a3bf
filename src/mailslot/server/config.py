"""Server configuration: one TOML file in the data directory, with defaults for everything.

``mailslot server init --data-dir D`` writes ``D/config.toml`` and a self-signed certificate in
``D/tls/``; ``mailslot serve --data-dir D`` reads them. Every limit a client can hit is here.
The environment overrides the file (``MAILSLOT_<SETTING>``, ``MAILSLOT_<SETTING>_FILE`` for
secrets such as a database URL with a password); see ``load_config``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from mailslot.errors import ConfigError
from mailslot.server.blobs import open_blob_store

CONFIG_NAME = "config.toml"
DAY_S = 24 * 3600
MIB = 1024 * 1024
REGISTRATION_MODES = ("invite", "open")


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server node needs to run; paths are resolved against ``data_dir``."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    # Prometheus metrics on a listener of their own (plain HTTP, GET /metrics); loopback only
    # by default. metrics_port 0 takes any free port; metrics = false turns the listener off.
    metrics: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    # "invite": registering an account needs an invite token (`mailslot admin invite create`);
    # "open": anyone who reaches the server may register.
    registration: str = "invite"
    database_url: str = ""  # default: sqlite:///<data_dir>/mailslot.db; or postgresql://...
    bus_url: str = "memory://"  # several nodes: redis://host:port/db?prefix=mailslot
    tls: bool = True
    tls_cert: str = "tls/cert.pem"
    tls_key: str = "tls/key.pem"
    message_ttl_s: int = 7 * DAY_S
    max_body_bytes: int = 256 * 1024
    max_devices_per_account: int = 16
    max_recipients: int = 63
    max_queue_per_device: int = 10_000
    rate_per_device_per_s: float = 50.0
    rate_burst: int = 200
    sweep_interval_s: float = 60.0
    # A WebSocket session re-checks its queue this often without a wake-up, and more often
    # while the bus is down (wake-ups from other nodes may be lost then).
    queue_recheck_s: float = 5.0
    queue_recheck_bus_down_s: float = 1.0
    link_ttl_s: int = 600
    sqlite_synchronous: str = "FULL"
    blob_url: str = ""  # default: file://<data_dir>/blobs
    max_blob_bytes: int = 100 * MIB
    blob_ttl_s: int = 30 * DAY_S
    account_blob_quota_bytes: int = 1024 * MIB
    blob_piece_bytes: int = 8 * MIB

    def __post_init__(self) -> None:
        if self.sqlite_synchronous not in {"FULL", "NORMAL"}:
            raise ConfigError("sqlite_synchronous must be FULL or NORMAL")
        if self.registration not in REGISTRATION_MODES:
            raise ConfigError(f"registration must be {' or '.join(map(repr, REGISTRATION_MODES))}")
        for name in (
            "message_ttl_s",
            "max_body_bytes",
            "max_devices_per_account",
            "max_recipients",
            "max_queue_per_device",
            "rate_burst",
            "link_ttl_s",
            "max_blob_bytes",
            "blob_ttl_s",
            "account_blob_quota_bytes",
            "blob_piece_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be 0-65535")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics_port must be 0-65535")
        open_blob_store(self.blob_store_url)  # a bad blob_url stops the server before it starts
        for name in ("queue_recheck_s", "queue_recheck_bus_down_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")

    @property
    def storage_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'mailslot.db'}"

    @property
    def blob_store_url(self) -> str:
        """Where blob bytes live: ``blob_url``, or the ``blobs`` folder of the data directory."""
        return self.blob_url or (self.data_dir / "blobs").absolute().as_uri()

    @property
    def cert_path(self) -> Path:
        return self.data_dir / self.tls_cert

    @property
    def key_path(self) -> Path:
        return self.data_dir / self.tls_key

    @property
    def max_request_bytes(self) -> int:
        """Largest JSON request body: a base64 body plus one wrapped key per possible device.

        Blob upload pieces (``PATCH /v1/blobs/{id}``) are streamed, not read whole, and have
        their own limit, ``blob_piece_bytes``; this one does not apply to them."""
        per_device = 2 * 1024
        devices = (self.max_recipients + 1) * self.max_devices_per_account
        return self.max_body_bytes * 4 // 3 + devices * per_device + 64 * 1024

    def with_overrides(self, **changes: Any) -> ServerConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_config(data_dir: Path, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read ``data_dir/config.toml``, then apply the environment (``os.environ`` by default).

    Each setting comes from, last one winning: its default; the file, as ``name = value`` or
    as ``name_file = "path"`` (the value read from that file, relative to ``data_dir``); the
    environment, as ``MAILSLOT_NAME`` or ``MAILSLOT_NAME_FILE`` (a path). Command-line flags
    go on top (``ServerConfig.with_overrides``). Values read from text (variables and files)
    are parsed to the setting's type; from a file, one trailing newline is dropped. Unknown
    keys and ``MAILSLOT_`` variables, wrong types, both forms of one setting from one source,
    and unreadable files are ``ConfigError``; ``RESERVED_ENV`` and ``RESERVED_ENV_PREFIXES``
    are left alone.
    """
    path = data_dir / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"no {CONFIG_NAME} in {data_dir}: run `mailslot server init --data-dir {data_dir}`")
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    types = _setting_types(data_dir)
    settings = _from_toml(raw, path, types, data_dir)
    settings.update(_from_environment(os.environ if environ is None else environ, types))
    return ServerConfig(data_dir=data_dir, **settings)


# Variables of the ``mailslot`` command itself, not server settings: never read or refused here.
RESERVED_ENV = frozenset({"MAILSLOT_HOME", "MAILSLOT_PASSPHRASE", "MAILSLOT_DATA_DIR"})
RESERVED_ENV_PREFIXES = ("MAILSLOT_TEST_",)  # the test suite's service URLs
ENV_PREFIX = "MAILSLOT_"
_FILE_SUFFIX = "_file"
_BOOLS = dict.fromkeys(("true", "yes", "on", "1"), True) | dict.fromkeys(("false", "no", "off", "0"), False)
_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def environment_overrides(environ: Mapping[str, str] | None = None) -> list[str]:
    """The ``MAILSLOT_`` variables that ``load_config`` applies (or refuses), sorted."""
    env = os.environ if environ is None else environ
    return sorted(
        var
        for var in env
        if var.startswith(ENV_PREFIX)
        and var not in RESERVED_ENV
        and not var.startswith(RESERVED_ENV_PREFIXES)
    )


def _setting_types(data_dir: Path) -> dict[str, type]:
    defaults = ServerConfig(data_dir=data_dir)
    return {f.name: type(getattr(defaults, f.name)) for f in fields(ServerConfig) if f.name != "data_dir"}


def _from_toml(raw: dict[str, Any], path: Path, types: dict[str, type], data_dir: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.removesuffix(_FILE_SUFFIX)
        if key in types:
            settings[key] = _checked(value, types[key], f"{path}: {key}")
        elif key.endswith(_FILE_SUFFIX) and name in types:
            if name in raw:
                raise ConfigError(f"{path}: set {name} or {key}, not both")
            if not isinstance(value, str):
                raise ConfigError(f"{path}: {key} must be a path (a string)")
            source = f"{path}: {key} ({value})"
            settings[name] = _parse(_read_secret(data_dir / value, source), types[name], source, show=False)
        else:
            raise ConfigError(f"{path}: unknown setting {key!r}")
    return settings


def _from_environment(environ: Mapping[str, str], types: dict[str, type]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for var in environment_overrides(environ):
        key = var.removeprefix(ENV_PREFIX).lower()
        name = key.removesuffix(_FILE_SUFFIX)
        if var != ENV_PREFIX + key.upper():
            key = ""  # only upper-case names are settings
        if key in types:
            settings[key] = _parse(environ[var], types[key], var, show=True)
        elif key.endswith(_FILE_SUFFIX) and name in types:
            if ENV_PREFIX + name.upper() in environ:
                raise ConfigError(f"set {ENV_PREFIX}{name.upper()} or {var}, not both")
            source = f"{var} ({environ[var]})"
            settings[name] = _parse(_read_secret(Path(environ[var]), source), types[name], source, show=False)
        else:
            raise ConfigError(
                f"unknown environment variable {var}: server settings are {ENV_PREFIX}<SETTING> or "
                f"{ENV_PREFIX}<SETTING>_FILE; reserved: {', '.join(sorted(RESERVED_ENV))}"
            )
    return settings


def _checked(value: Any, expected: type, source: str) -> Any:
    """A TOML value of the setting's type (an integer where a float is expected is widened)."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
        raise ConfigError(f"{source} must be {_KINDS.get(expected, expected.__name__)}")
    return value


def _parse(text: str, expected: type, source: str, *, show: bool) -> Any:
    """A setting's value from text; ``show`` puts the text in the error (never for secrets)."""
    if expected is str:
        return text
    word = text.strip()
    try:
        if expected is bool:
            return _BOOLS[word.lower()]
        if expected is int:
            return int(word)
        value = float(word)
        if math.isfinite(value):
            return value
    except (KeyError, ValueError):
        pass
    shown = f", not {word[:40]!r}" if show else ""
    raise ConfigError(f"{source} must be {_KINDS.get(expected, expected.__name__)}{shown}")


def _read_secret(path: Path, source: str) -> str:
    """A file's text without one trailing newline (as ``echo`` and editors leave it)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: the file is not UTF-8 text") from exc
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError(f"{source}: the file is empty")
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


# Settings whose line in config.toml gets a comment above it, for the operator who reads it.
_COMMENTS = {
    "registration": (
        '"invite": a new account needs an invite token (`mailslot admin invite create`);\n'
        '"open": anyone who reaches this server may register an account.'
    ),
}


def write_config(config: ServerConfig) -> Path:
    """Write every setting (defaults included) so an operator sees what can be tuned."""
    lines = ["# mailslot server configuration; see docs/architecture.md for each limit."]
    for key, value in asdict(config).items():
        if key != "data_dir":
            lines.extend(f"# {line}" for line in _COMMENTS.get(key, "").splitlines())
            lines.append(f"{key} = {_toml_value(value)}")
    path = config.data_dir / CONFIG_NAME
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path
