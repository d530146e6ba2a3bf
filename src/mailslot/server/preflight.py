"""Checks an operator runs before starting a node (``mailslot server check-config``).

Each check looks at one part of a loaded configuration and changes nothing: the TLS files
parse and belong together, the database opens and its schema is not newer than this code (it
is never migrated here), the blob store and the wake-up bus are usable. A check never raises
for what it finds; it returns a ``Check`` that says what it found or what is wrong, in one
line an operator can act on. Passwords in URLs are never shown.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sqlite3
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailslot.errors import ConfigError
from mailslot.server.blobs import FilesystemBlobStore, MemoryBlobStore, open_blob_store
from mailslot.server.bus import open_bus
from mailslot.server.config import ServerConfig
from mailslot.server.storage import LATEST_VERSION, MemoryStorage, SqliteStorage, open_storage

__all__ = ["CONNECT_TIMEOUT_S", "Check", "check_blob_store", "check_bus", "check_storage", "check_tls", "run"]

CONNECT_TIMEOUT_S = 5.0  # per database or Redis connection attempt


@dataclass(frozen=True)
class Check:
    """What one check found: ``detail`` describes it when ``ok``, else states the problem."""

    name: str
    ok: bool
    detail: str


async def run(config: ServerConfig, now: datetime.datetime) -> list[Check]:
    """Every check but the configuration's own, in the order a node needs them."""
    return [
        check_tls(config, now),
        await check_storage(config.storage_url),
        await check_blob_store(config.blob_store_url, config.storage_url),
        await check_bus(config.bus_url),
    ]


# --- TLS ---------------------------------------------------------------------------------------
def check_tls(config: ServerConfig, now: datetime.datetime) -> Check:
    """The certificate and key parse, match, load as the server loads them, and are current."""
    if not config.tls:
        return Check("tls", True, "off: a reverse proxy in front must terminate TLS")
    try:
        cert = x509.load_pem_x509_certificate(_read(config.cert_path, "TLS certificate"))
        key = serialization.load_pem_private_key(_read(config.key_path, "TLS key"), password=None)
    except ConfigError as exc:
        return Check("tls", False, exc.message)
    except (ValueError, TypeError) as exc:
        return Check("tls", False, f"{config.cert_path} or {config.key_path} does not parse: {exc}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return Check("tls", False, f"the key {config.key_path} does not match the certificate")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(config.cert_path, config.key_path)
    except ssl.SSLError as exc:
        return Check("tls", False, f"the TLS files do not load: {exc.reason or exc}")
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return Check("tls", False, f"the certificate is valid only from {start:%Y-%m-%d %H:%M} UTC")
    if now > end:
        return Check("tls", False, f"the certificate expired on {end:%Y-%m-%d} UTC")
    return Check(
        "tls",
        True,
        f"{config.cert_path} and its key match; valid until {end:%Y-%m-%d}"
        f"; names: {', '.join(_names(cert)) or 'none'}",
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the {what} {path} is missing") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san]


# --- storage -----------------------------------------------------------------------------------
async def check_storage(url: str, name: str = "storage") -> Check:
    """The database opens and its schema version is known to this code (nothing is migrated)."""
    try:
        store = open_storage(url)
    except ConfigError as exc:
        return Check(name, False, exc.message)
    if isinstance(store, MemoryStorage):
        return Check(name, True, "memory:// (everything is lost at restart: tests only)")
    try:
        if isinstance(store, SqliteStorage):
            shown = store.path
            version = await asyncio.to_thread(_sqlite_version, Path(store.path))
        else:
            shown = _redacted(url)
            version = await _postgres_version(url)
    except ConfigError as exc:
        return Check(name, False, exc.message)
    if version is None:
        return Check(name, True, f"{shown}: no database yet; the first start creates it")
    return _versioned(name, shown, version)


def _versioned(name: str, shown: str, version: int) -> Check:
    if version > LATEST_VERSION:
        return Check(
            name,
            False,
            f"{shown} is at schema version {version}, newer than this mailslot knows ({LATEST_VERSION}):"
            " upgrade mailslot or restore a matching backup",
        )
    if version < LATEST_VERSION:
        return Check(
            name,
            True,
            f"{shown}: schema version {version}, {LATEST_VERSION - version} migration(s) pending"
            " (`mailslot server migrate` or the next start applies them)",
        )
    return Check(name, True, f"{shown}: schema version {version} (up to date)")


def _sqlite_version(path: Path) -> int | None:
    """The schema version of a SQLite file opened read-only; None if there is no file yet."""
    if not path.exists():
        folder = path.absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"{path} does not exist and its folder {folder} is not writable")
        return None
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the database {path}: {exc}") from exc
    try:
        known = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        if known.fetchone() is None:
            return 0
        return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the database {path}: {exc}") from exc
    finally:
        conn.close()


async def _postgres_version(url: str) -> int:
    import psycopg  # only where PostgreSQL is configured

    try:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=round(CONNECT_TIMEOUT_S)
        ) as conn:
            cursor = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return 0
            cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot use the database at {_redacted(url)}: {reason}") from exc


def _redacted(url: str) -> str:
    from mailslot.server.storage.postgres import redacted

    return redacted(url)


# --- blob store --------------------------------------------------------------------------------
async def check_blob_store(url: str, storage_url: str) -> Check:
    """The blob store's URL is valid and its folder or database usable."""
    try:
        store = open_blob_store(url)
    except ConfigError as exc:
        return Check("blobs", False, exc.message)
    if isinstance(store, MemoryBlobStore):
        return Check("blobs", True, "memory:// (blobs are lost at restart: tests only)")
    if isinstance(store, FilesystemBlobStore):
        return _check_folder(store.root)
    if url == storage_url:
        return Check("blobs", True, "in the storage database (checked above)")
    found = await check_storage(url, "blobs")
    return Check("blobs", found.ok, found.detail)


def _check_folder(root: Path) -> Check:
    if root.exists():
        if not root.is_dir():
            return Check("blobs", False, f"{root} is not a folder")
        if not os.access(root, os.W_OK | os.X_OK):
            return Check("blobs", False, f"{root} is not writable")
        return Check("blobs", True, f"{root} (one node only: several need a shared blob store)")
    parent = next((p for p in root.parents if p.exists()), Path("/"))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Check("blobs", False, f"{root} does not exist and cannot be created under {parent}")
    return Check("blobs", True, f"{root}: the first start creates it")


# --- wake-up bus -------------------------------------------------------------------------------
async def check_bus(url: str) -> Check:
    """The bus URL is valid and, for Redis, the server answers a PING."""
    try:
        open_bus(url)
    except ConfigError as exc:
        return Check("bus", False, exc.message)
    if url in {"", "memory://"}:
        return Check("bus", True, "memory:// (one node only)")
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from mailslot.server.bus.redis import parse_redis_url, redacted

    client_url, prefix = parse_redis_url(url)
    shown = redacted(client_url)
    client: Redis = Redis.from_url(
        client_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return Check(
            "bus", False, f"Redis at {shown} is unreachable ({exc}); nodes would deliver by polling only"
        )
    finally:
        await client.aclose()
    return Check("bus", True, f"Redis at {shown} answers; channel {prefix}:wakeup")
