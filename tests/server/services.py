"""The real PostgreSQL and Redis the scale-out tests run against.

Where they are: ``MAILSLOT_TEST_POSTGRES_URL`` (a maintenance database the tests may create
databases from; default ``postgresql://postgres@127.0.0.1:5432/test``) and
``MAILSLOT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). In CI (``CI`` set) an
unreachable service fails the test; elsewhere the test is skipped, saying why.

Every test run makes its own database (``mailslot_test_<random hex>``, dropped at the end even
on failure) and its own Redis channel prefix, so runs on one machine never meet.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from psycopg import sql

POSTGRES_URL = os.environ.get("MAILSLOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MAILSLOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLOSED_PORT_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def unavailable(service: str, reason: object) -> NoReturn:
    """Fail in CI, where the service must run; skip elsewhere."""
    message = f"{service} is not reachable ({reason}); set MAILSLOT_TEST_{service.upper()}_URL"
    if os.environ.get("CI"):
        pytest.fail(f"{message} -- CI must provide it", pytrace=False)
    pytest.skip(message)


def _database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + name))


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the maintenance database (``test``, else ``postgres``)."""
    last: Exception | None = None
    for url in (POSTGRES_URL, _database_url(POSTGRES_URL, "postgres")):
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=3)
        except psycopg.Error as exc:
            last = exc
    unavailable("postgres", last)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database for the duration of the block; its URL."""
    name = f"mailslot_test_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _database_url(POSTGRES_URL, name)
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def empty_database(url: str) -> None:
    """Delete every row except the schema version, so the next test starts from nothing."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename <> 'schema_version'"
            )
        ]
        if tables:
            names = sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(names))


def redis_url() -> str:
    """The test Redis with a channel prefix of its own (``?prefix=mailslot_test_<hex>``)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable("redis", exc)
    finally:
        client.close()
    joiner = "&" if "?" in REDIS_URL else "?"
    return f"{REDIS_URL}{joiner}prefix=mailslot_test_{secrets.token_hex(6)}"
