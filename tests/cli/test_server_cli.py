"""`mailslot server init|check-config|migrate` and `mailslot serve` as an operator runs them,
in real processes."""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from mailslot.server.storage import LATEST_VERSION
from mailslot.server.tls import write_self_signed
from tests.conftest import make_data_dir
from tests.server.services import CLOSED_PORT_REDIS_URL, fresh_database, redis_url
from tests.system.test_crash import free_port


def mailslot(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailslot", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_init_writes_config_and_certificate(tmp_path: Path) -> None:
    data = tmp_path / "d"
    result = mailslot("server", "init", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert (data / "config.toml").read_text().count("max_body_bytes = ") == 1
    lines = (data / "config.toml").read_text().splitlines()
    at = lines.index('registration = "invite"')
    assert lines[at - 1].startswith("# ") and "mailslot admin invite create" in lines[at - 2]
    assert "mailslot admin invite create" in result.stdout
    assert stat.S_IMODE((data / "tls" / "key.pem").stat().st_mode) == 0o600
    assert b"BEGIN CERTIFICATE" in (data / "tls" / "cert.pem").read_bytes()
    again = mailslot("server", "init", "--data-dir", str(data))
    assert again.returncode == 3
    assert again.stderr.strip().startswith("error:") and "--force" in again.stderr
    assert "Traceback" not in again.stderr


def test_serve_answers_over_tls_with_the_pinned_certificate(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert mailslot("server", "init", "--data-dir", str(data)).returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailslot", "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        context = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
        deadline = time.monotonic() + 20
        status = None
        while status is None and time.monotonic() < deadline:
            try:
                status = httpx.get(f"https://127.0.0.1:{port}/health", verify=context, timeout=1).status_code
            except httpx.ConnectError:
                time.sleep(0.1)
        assert status == 200
        untrusted = ssl.create_default_context()
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/health", verify=untrusted, timeout=2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_refuses_a_newer_schema(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert mailslot("server", "init", "--data-dir", str(data)).returncode == 0
    db = data / "mailslot.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (999, 'from the future')")
    result = mailslot("serve", "--data-dir", str(data), "--port", str(free_port()))
    assert result.returncode == 3, result.stderr
    assert "schema version 999" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (999,)


def test_serve_without_init_is_a_clear_error(tmp_path: Path) -> None:
    result = mailslot("serve", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode == 3
    assert "mailslot server init" in result.stderr and "Traceback" not in result.stderr


# --- server check-config and server migrate ----------------------------------------------------
def mailslot_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``mailslot`` in a subprocess with ``env`` added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "mailslot", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def report(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[bool, str]]:
    """``-o json server check-config`` output: check name -> (ok, detail)."""
    value = json.loads(result.stdout)
    return {check["name"]: (check["ok"], check["detail"]) for check in value["checks"]}


def set_schema_version(db: Path, version: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO schema_version VALUES (?, 'from the future')", (version,))


def test_check_config_on_a_fresh_data_dir(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "d").data_dir
    result = mailslot("server", "check-config", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = [line.split(maxsplit=2) for line in result.stdout.splitlines()]
    assert [(status, name) for status, name, _ in rows] == [
        ("ok", "config"),
        ("ok", "tls"),
        ("ok", "storage"),
        ("ok", "blobs"),
        ("ok", "bus"),
    ]
    as_json = mailslot("-o", "json", "server", "check-config", "--data-dir", str(data))
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ok"] is True
    found = report(as_json)
    assert "key match" in found["tls"][1] and "no database yet" in found["storage"][1]
    assert "registration open" in found["config"][1]  # as the tests' data directories have it
    assert not (data / "mailslot.db").exists() and not (data / "blobs").exists()  # nothing made


def test_check_config_gives_one_line_per_problem(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "d").data_dir
    write_self_signed(tmp_path / "other.pem", tmp_path / "other.key")
    (data / "tls" / "key.pem").write_bytes((tmp_path / "other.key").read_bytes())  # another cert's key
    set_schema_version(data / "mailslot.db", 999)
    result = mailslot_with(
        {"MAILSLOT_BUS_URL": CLOSED_PORT_REDIS_URL}, "server", "check-config", "--data-dir", str(data)
    )
    assert result.returncode == 3, result.stderr
    errors = result.stderr.splitlines()
    assert [line.split(":")[:2] for line in errors] == [
        ["error", " tls"],
        ["error", " storage"],
        ["error", " bus"],
    ]
    assert "does not match the certificate" in errors[0]
    assert "schema version 999" in errors[1] and "newer" in errors[1]
    assert "127.0.0.1:1" in errors[2] and "unreachable" in errors[2]
    assert "Traceback" not in result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ok", "FAIL", "FAIL", "ok", "FAIL"]
    with sqlite3.connect(data / "mailslot.db") as conn:  # looked at, not migrated
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(999,)]


def test_check_config_reports_a_bad_environment_and_hides_passwords(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "d").data_dir
    bad = mailslot_with({"MAILSLOT_PORT": "eighty"}, "server", "check-config", "--data-dir", str(data))
    assert (bad.returncode, bad.stderr) == (
        3,
        "error: config: MAILSLOT_PORT must be an integer, not 'eighty'\n",
    )
    closed = mailslot_with({"MAILSLOT_REGISTRATION": "closed"}, "server", "check-config", "--data-dir", str(data))
    assert (closed.returncode, closed.stderr) == (3, "error: config: registration must be 'invite' or 'open'\n")
    nowhere = "postgresql://mailslot:hunter2@127.0.0.1:1/mailslot"
    result = mailslot_with(
        {"MAILSLOT_DATABASE_URL": nowhere}, "server", "check-config", "--data-dir", str(data)
    )
    assert result.returncode == 3
    assert result.stderr.startswith(
        "error: storage: cannot use the database at postgresql://mailslot:***@127.0.0.1:1"
    )
    assert "hunter2" not in result.stdout + result.stderr


def test_migrate_a_sqlite_database(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "d").data_dir
    first = mailslot("server", "migrate", "--data-dir", str(data))
    assert (first.returncode, first.stdout) == (0, f"schema version 0 -> {LATEST_VERSION}\n"), first.stderr
    again = mailslot("-o", "json", "server", "migrate", "--data-dir", str(data))
    assert json.loads(again.stdout) == {
        "database": f"sqlite:///{data / 'mailslot.db'}",
        "before": LATEST_VERSION,
        "after": LATEST_VERSION,
    }
    set_schema_version(data / "mailslot.db", 999)
    newer = mailslot("server", "migrate", "--data-dir", str(data))
    assert newer.returncode == 3 and "schema version 999" in newer.stderr and newer.stderr.count("\n") == 1


def test_check_and_migrate_postgresql_configured_by_environment(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path / "d").data_dir
    with fresh_database() as url, fresh_database() as blob_url:
        secret = tmp_path / "database_url"
        secret.write_text(url + "\n")
        env = {
            "MAILSLOT_DATABASE_URL_FILE": str(secret),
            "MAILSLOT_BLOB_URL": blob_url,
            "MAILSLOT_BUS_URL": redis_url(),
        }
        checked = mailslot_with(env, "-o", "json", "server", "check-config", "--data-dir", str(data))
        assert checked.returncode == 0, checked.stderr
        found = report(checked)
        assert found["config"][1].endswith(
            "environment: MAILSLOT_BLOB_URL, MAILSLOT_BUS_URL, MAILSLOT_DATABASE_URL_FILE"
        )
        assert (
            found["storage"][0]
            and f"schema version 0, {LATEST_VERSION} migration(s) pending" in found["storage"][1]
        )
        assert found["blobs"][0] and "schema version 0" in found["blobs"][1]
        assert found["bus"][0] and "answers" in found["bus"][1]
        with psycopg.connect(url) as conn:  # check-config migrated nothing
            assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)
        migrated = mailslot_with(env, "server", "migrate", "--data-dir", str(data))
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.splitlines() == [
            f"schema version 0 -> {LATEST_VERSION}",
            f"blob database schema version 0 -> {LATEST_VERSION}",
        ]
        checked = mailslot_with(env, "-o", "json", "server", "check-config", "--data-dir", str(data))
        assert (
            "(up to date)" in report(checked)["storage"][1] and "(up to date)" in report(checked)["blobs"][1]
        )
