"""Numbered schema migrations, one sequence for every storage engine.

Policy
------
* The scripts live in the ``migrations/`` folder next to this module, named
  ``NNNN_name.sql``: a four-digit version, then a lowercase name. Versions start at 1 and have
  no gaps; a script is never edited once released, a change is a new number.
* ``NNNN_name.sql`` is the script every engine runs. Write it in portable SQL.
* Where a dialect must differ, add ``NNNN_name.<engine>.sql`` (engine: one of ``ENGINES``). It
  replaces the base script for that engine only, and must leave the same logical schema (table,
  column, key and index names). An override without its base script is an error, so the
  numbered sequence is always defined by the base scripts.
* Each engine applies the pending scripts in order inside one transaction and records every
  applied version in ``schema_version``; an upgrade either completes or leaves the database as
  it was. A database whose recorded version is above ``LATEST_VERSION`` was written by a newer
  mailslot: opening it raises ``SchemaTooNew`` and the server refuses to start.
* ``schema_version`` itself is created by the runner (``SCHEMA_VERSION_DDL``), not by a script:
  it must exist before the runner can ask which scripts are pending.
* The SQLite runner is ``upgrade_sqlite`` below; another engine adds its own runner next to it,
  built on ``pending``. PostgreSQL's is ``upgrade_postgresql``: it takes an advisory lock
  first, so nodes starting together migrate one after the other. ``migrate(url)`` runs the
  runner of any URL's engine explicitly (``mailslot server migrate``); opening a store does too.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from mailslot.errors import ConfigError, SchemaTooNew

if TYPE_CHECKING:  # psycopg is imported only where PostgreSQL is used
    from psycopg import AsyncConnection

__all__ = [
    "ENGINES",
    "LATEST_VERSION",
    "SCHEMA_VERSION_DDL",
    "Migration",
    "migrate",
    "migrations_for",
    "pending",
    "plan",
    "upgrade_postgresql",
    "upgrade_sqlite",
]

ENGINES = frozenset({"sqlite", "postgresql"})

# Created outside the numbered scripts: it must exist before we can ask what version we are at.
SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
)

_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<engine>[a-z]+))?\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered script as a given engine runs it."""

    version: int
    name: str
    sql: str


def plan(scripts: Mapping[str, str], engine: str) -> tuple[Migration, ...]:
    """The migrations ``engine`` runs, in order, from ``{filename: sql}``; checks the policy."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown storage engine {engine!r}")
    parsed = {filename: _parse(filename) for filename in scripts}
    base: dict[int, str] = {}
    for filename, (version, _, for_engine) in parsed.items():
        if for_engine is None:
            if version in base:
                raise ConfigError(f"two migrations are numbered {version:04d}")
            base[version] = filename
    if sorted(base) != list(range(1, len(base) + 1)):
        raise ConfigError(f"migration versions must run 1..N without gaps, got {sorted(base)}")
    chosen = dict(base)
    for filename, (version, name, for_engine) in parsed.items():
        if for_engine is None:
            continue
        if version not in base or parsed[base[version]][1] != name:
            raise ConfigError(f"override {filename!r} has no base script")
        if for_engine == engine:
            chosen[version] = filename
    return tuple(
        Migration(version, parsed[filename][1], scripts[filename])
        for version, filename in sorted(chosen.items())
    )


def _parse(filename: str) -> tuple[int, str, str | None]:
    """(version, name, engine or None) of a script's file name."""
    match = _FILENAME.match(filename)
    if match is None:
        raise ConfigError(f"migration {filename!r} is not named NNNN_name[.engine].sql")
    if match["engine"] is not None and match["engine"] not in ENGINES:
        raise ConfigError(f"migration {filename!r} names an unknown engine")
    return int(match["version"]), match["name"], match["engine"]


def _packaged_scripts() -> dict[str, str]:
    """Every ``.sql`` file shipped in the ``migrations/`` folder, by file name."""
    folder = resources.files("mailslot.server.storage").joinpath("migrations")
    return {entry.name: entry.read_text("utf-8") for entry in folder.iterdir() if entry.name.endswith(".sql")}


def migrations_for(engine: str) -> tuple[Migration, ...]:
    """The packaged migrations as ``engine`` runs them."""
    return plan(_SCRIPTS, engine)


def pending(current: int, engine: str) -> tuple[Migration, ...]:
    """Migrations still to apply on a database at ``current``; ``SchemaTooNew`` if ahead."""
    if current > LATEST_VERSION:
        raise SchemaTooNew(
            f"the database is at schema version {current}, but this mailslot only knows up to "
            f"{LATEST_VERSION}: upgrade mailslot or restore a matching backup",
            details={"database": current, "known": LATEST_VERSION},
        )
    return tuple(m for m in migrations_for(engine) if m.version > current)


_SCRIPTS = _packaged_scripts()
LATEST_VERSION = len(plan(_SCRIPTS, "sqlite"))


# --- SQLite ------------------------------------------------------------------------------------
def upgrade_sqlite(conn: sqlite3.Connection) -> int:
    """Apply the pending migrations on an autocommit connection, in one transaction.

    Returns the schema version the database is at afterwards; raises ``SchemaTooNew`` (and
    changes nothing) when it is ahead of this code.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(SCHEMA_VERSION_DDL)
        (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        todo = pending(current, "sqlite")
        for migration in todo:
            for statement in _sqlite_statements(migration.sql):
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO schema_version (version, name) VALUES (?, ?)",
            [(m.version, m.name) for m in todo],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION


def _sqlite_statements(script: str) -> Iterator[str]:
    """Split a script into single statements (``executescript`` would commit our transaction).

    A ``;`` ends a statement only where SQLite agrees the text so far is complete, so semicolons
    in strings, comments or trigger bodies do not split.
    """
    start = 0
    for end, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : end + 1]):
            yield script[start : end + 1]
            start = end + 1
    if script[start:].strip():
        yield script[start:]  # comments only, or an incomplete statement SQLite will reject


# --- PostgreSQL --------------------------------------------------------------------------------
# Key of the transaction-level advisory lock every PostgreSQL upgrade takes first, so that nodes
# starting together migrate one after the other (the later ones find nothing pending).
PG_MIGRATION_LOCK = int.from_bytes(b"mailslot", "big") >> 1  # fits a signed BIGINT


async def upgrade_postgresql(conn: AsyncConnection[Any]) -> int:
    """Apply the pending migrations on an autocommit connection, in one transaction.

    Same contract as ``upgrade_sqlite``: returns the version the database is at afterwards and
    raises ``SchemaTooNew`` (changing nothing) when the database is ahead of this code. Each
    script is sent whole through the simple query protocol, so it may hold several statements
    and PL/pgSQL bodies.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
        await conn.execute(SCHEMA_VERSION_DDL)
        cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        row = await cursor.fetchone()
        todo = pending(int(row[0]) if row else 0, "postgresql")
        for migration in todo:
            await conn.execute(migration.sql.encode())
        if todo:
            await cursor.executemany(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                [(m.version, m.name) for m in todo],
            )
    return LATEST_VERSION


# --- running them explicitly -------------------------------------------------------------------
async def migrate(url: str) -> tuple[int, int]:
    """Bring the database at ``url`` up to ``LATEST_VERSION``: (version before, version after).

    Opening a store migrates too; this is for an operator who wants the upgrade as its own step
    (``mailslot server migrate``, before new nodes roll out). ``SchemaTooNew`` if the database
    is ahead; ``ConfigError`` for a URL with no schema (``memory://``) or no database behind it.
    """
    # Imported here: the engines import this module.
    from mailslot.server.storage import open_storage
    from mailslot.server.storage.sqlite import SqliteStorage

    if url.startswith(("postgresql://", "postgres://")):
        from mailslot.server.storage.postgres import migrate_postgresql

        return await migrate_postgresql(url)
    store = open_storage(url)
    if not isinstance(store, SqliteStorage):
        raise ConfigError(f"{url} has no schema to migrate")
    return await asyncio.to_thread(_migrate_sqlite_file, store.path)


def _migrate_sqlite_file(path: str) -> tuple[int, int]:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the database {path}: {exc}") from exc
    try:
        known = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        before = 0
        if known:
            (before,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        return int(before), upgrade_sqlite(conn)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot migrate the database {path}: {exc}") from exc
    finally:
        conn.close()
