"""The migration policy: numbering, per-engine overrides, the version guard, atomic upgrades."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from mailslot.errors import ConfigError, SchemaTooNew
from mailslot.server.storage import migrations
from mailslot.server.storage.base import RemovedDevice
from mailslot.server.storage.migrations import LATEST_VERSION, pending, plan
from mailslot.server.storage.sqlite import SqliteStorage


def test_packaged_migrations_are_numbered_from_one() -> None:
    for engine in sorted(migrations.ENGINES):
        versions = [m.version for m in migrations.migrations_for(engine)]
        assert versions == list(range(1, LATEST_VERSION + 1))
    assert LATEST_VERSION >= 1


def test_override_replaces_the_base_script_for_its_engine_only() -> None:
    scripts = {
        "0001_initial.sql": "base 1",
        "0001_initial.postgresql.sql": "postgres 1",
        "0002_more.sql": "base 2",
    }
    assert [m.sql for m in plan(scripts, "postgresql")] == ["postgres 1", "base 2"]
    assert [m.sql for m in plan(scripts, "sqlite")] == ["base 1", "base 2"]
    assert [(m.version, m.name) for m in plan(scripts, "sqlite")] == [(1, "initial"), (2, "more")]


@pytest.mark.parametrize(
    "scripts",
    [
        {"0001_a.sql": "", "0003_c.sql": ""},  # gap
        {"0002_b.sql": ""},  # does not start at 1
        {"0001_a.sql": "", "0001_b.sql": ""},  # two scripts, one number
        {"0001_a.sql": "", "0002_b.sqlite.sql": ""},  # override with no base
        {"0001_a.sql": "", "0001_other.sqlite.sql": ""},  # override of another name
        {"0001_a.sql": "", "0001_a.mysql.sql": ""},  # unknown engine
        {"1_a.sql": ""},  # badly named
        {"0001-a.sql": ""},
    ],
)
def test_policy_violations_are_refused(scripts: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        plan(scripts, "sqlite")


def test_unknown_engine() -> None:
    with pytest.raises(ConfigError):
        plan({"0001_a.sql": ""}, "oracle")


def test_pending() -> None:
    assert [m.version for m in pending(0, "sqlite")] == list(range(1, LATEST_VERSION + 1))
    assert pending(LATEST_VERSION, "sqlite") == ()
    with pytest.raises(SchemaTooNew):
        pending(LATEST_VERSION + 1, "sqlite")


@pytest.fixture
def two_migrations(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Swap the packaged scripts for two small ones the test may edit."""
    scripts = {
        "0001_first.sql": "CREATE TABLE first (note TEXT DEFAULT 'a; b');\n-- trailing; note\n",
        "0002_second.sql": "CREATE TABLE second (x INTEGER);\nINSERT INTO first VALUES ('x;y');",
    }
    monkeypatch.setattr(migrations, "_SCRIPTS", scripts)
    monkeypatch.setattr(migrations, "LATEST_VERSION", 2)
    return scripts


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows}


def test_upgrade_applies_only_what_is_pending(two_migrations: dict[str, str]) -> None:
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        conn.execute(migrations.SCHEMA_VERSION_DDL)
        conn.execute("CREATE TABLE first (note TEXT)")
        conn.execute("INSERT INTO schema_version VALUES (1, 'first')")
        assert migrations.upgrade_sqlite(conn) == 2
        assert tables(conn) == {"schema_version", "first", "second"}
        assert conn.execute("SELECT note FROM first").fetchall() == [("x;y",)]
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,), (2,)]


def test_failed_upgrade_changes_nothing(two_migrations: dict[str, str]) -> None:
    two_migrations["0002_second.sql"] = "CREATE TABLE second (x INTEGER);\nNOT SQL AT ALL;"
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        with pytest.raises(sqlite3.OperationalError):
            migrations.upgrade_sqlite(conn)
        assert not conn.in_transaction
        assert tables(conn) == set()


# --- 0004: device list history ------------------------------------------------------------------
def scripts_up_to(version: int) -> dict[str, str]:
    return {name: sql for name, sql in migrations._SCRIPTS.items() if int(name[:4]) <= version}


def sqlite_at(path: Path, version: int) -> None:
    """A SQLite file migrated only up to ``version``, as an older mailslot left it."""
    with pytest.MonkeyPatch.context() as patch, closing(sqlite3.connect(path, isolation_level=None)) as conn:
        patch.setattr(migrations, "_SCRIPTS", scripts_up_to(version))
        patch.setattr(migrations, "LATEST_VERSION", version)
        assert migrations.upgrade_sqlite(conn) == version


async def test_0004_backfills_the_history_with_the_current_lists(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    sqlite_at(path, 3)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("INSERT INTO accounts VALUES ('alice', x'aa', 2, x'0102', 1000, FALSE)")
        conn.execute("INSERT INTO accounts VALUES ('bob', x'bb', 1, x'03', 1500, TRUE)")
        conn.execute("INSERT INTO devices VALUES (x'01', 'alice', x'51')")
    store = SqliteStorage(path)
    await store.open()
    try:
        assert await store.schema_version() == LATEST_VERSION
        assert await store.list_history("alice", 0, 10) == [b"\x01\x02"]
        assert await store.list_history("bob", 0, 10) == [b"\x03"]
        assert await store.devices_seen("alice") == {b"\x01": None}
        found = await store.get_device(b"\x01")
        assert found is not None and found.list_version == 2
        await store.replace_devices("alice", 2, 3, b"list-3", [], now_ms=9_000)
        assert await store.list_history("alice", 1, 10) == [b"\x01\x02", b"list-3"]
        assert await store.removed_device(b"\x01") == RemovedDevice(b"\x01", "alice", 3, 9_000)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT handle, version, published_at_ms FROM device_list_history ORDER BY 1, 2")
        assert rows.fetchall() == [("alice", 2, 1000), ("alice", 3, 9000), ("bob", 1, 1500)]
