"""`mailslot server init` and `mailslot serve` as an operator runs them, in real processes."""

from __future__ import annotations

import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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
