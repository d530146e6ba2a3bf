"""Server configuration: one TOML file in the data directory, with defaults for everything.

``mailslot server init --data-dir D`` writes ``D/config.toml`` and a self-signed certificate in
``D/tls/``; ``mailslot serve --data-dir D`` reads them. Every limit a client can hit is here.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from mailslot.errors import ConfigError
from mailslot.server.blobs import open_blob_store

CONFIG_NAME = "config.toml"
DAY_S = 24 * 3600
MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server node needs to run; paths are resolved against ``data_dir``."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
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


def load_config(data_dir: Path) -> ServerConfig:
    """Read ``data_dir/config.toml``; unknown keys and wrong types are ``ConfigError``."""
    path = data_dir / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"no {CONFIG_NAME} in {data_dir}: run `mailslot server init --data-dir {data_dir}`")
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    known = {f.name: f.type for f in fields(ServerConfig) if f.name != "data_dir"}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
    defaults = ServerConfig(data_dir=data_dir)
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ConfigError(f"{path}: {key} must be a {expected.__name__}")
    return ServerConfig(data_dir=data_dir, **raw)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_config(config: ServerConfig) -> Path:
    """Write every setting (defaults included) so an operator sees what can be tuned."""
    lines = ["# mailslot server configuration; see docs/architecture.md for each limit."]
    for key, value in asdict(config).items():
        if key != "data_dir":
            lines.append(f"{key} = {_toml_value(value)}")
    path = config.data_dir / CONFIG_NAME
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path
