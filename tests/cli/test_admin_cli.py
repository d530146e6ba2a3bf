"""`mailslot admin` as an operator runs it: real commands in subprocesses, against a data
directory made by `mailslot server init` and served by a live node."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from mailslot.server.config import load_config
from mailslot.server.runner import ServerThread
from tests.server.rawapi import Api, RawAccount


def mailslot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailslot", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


def admin(
    data: Path, *args: str, json_output: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    root = ("-o", "json") if json_output else ()
    return mailslot(*root, "admin", *args, "--data-dir", str(data), env=env)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data = tmp_path / "d"
    ok(mailslot("server", "init", "--data-dir", str(data)))
    return data


@pytest.fixture
def live(data: Path) -> Iterator[Api]:
    """A node serving ``data`` (any free port, no metrics listener), and an API caller."""
    config = load_config(data).with_overrides(port=0, metrics=False)
    with ServerThread(config) as server:
        api = Api(server.url, data / "tls" / "cert.pem")
        try:
            yield api
        finally:
            api.close()


def invite(data: Path, *options: str) -> str:
    """A fresh invite token from `mailslot admin invite create`."""
    token: str = json.loads(ok(admin(data, "invite", "create", *options, json_output=True)))["token"]
    return token


def test_list_disable_enable(data: Path, live: Api) -> None:
    alice = RawAccount("alice")
    token = invite(data, "--uses", "2")
    assert live.register(alice, token).status_code == 201
    assert live.register(RawAccount("bob"), token).status_code == 201
    queue = "/v1/queue?after=0&limit=10"
    assert live.call("GET", queue, alice.devices[0]).status_code == 200

    text = ok(admin(data, "accounts", "list"))
    assert "alice" in text and "bob" in text and "accounts (2)" in text
    rows = [json.loads(line) for line in ok(admin(data, "accounts", "list", json_output=True)).splitlines()]
    assert [(r["handle"], r["devices"], r["list_version"], r["disabled"]) for r in rows] == [
        ("alice", 1, 1, False),
        ("bob", 1, 1, False),
    ]
    assert rows[0]["created"].endswith("Z")

    assert "alice disabled" in ok(admin(data, "accounts", "disable", "alice"))
    assert live.call("GET", queue, alice.devices[0]).status_code == 401
    rows = [json.loads(line) for line in ok(admin(data, "accounts", "list", json_output=True)).splitlines()]
    assert [r["disabled"] for r in rows] == [True, False]

    enabled = json.loads(ok(admin(data, "accounts", "enable", "alice", json_output=True)))
    assert enabled == {"handle": "alice", "disabled": False}
    assert live.call("GET", queue, alice.devices[0]).status_code == 200


def test_unknown_handle_exits_3(data: Path) -> None:
    for verb in ("disable", "enable"):
        line = failed(admin(data, "accounts", verb, "nobody"), 3)
        assert "nobody" in line


def test_purge_deletes_expired_blobs_with_their_bytes(data: Path, live: Api) -> None:
    alice = RawAccount("alice")
    assert live.register(alice, invite(data)).status_code == 201
    created = live.create_blob(alice.devices[0], 10)
    assert created.status_code == 201, created.text
    blob_id: str = created.json()["blob_id"]
    blob_file = data / "blobs" / blob_id[:2] / blob_id
    assert blob_file.exists()
    with sqlite3.connect(data / "mailslot.db") as conn:
        conn.execute("UPDATE blobs SET expires_at_ms = 1")
        conn.execute(
            "INSERT INTO links (link_id, request, expires_at_ms) VALUES (?, ?, 1)", (b"l" * 16, b"r")
        )
    conn.close()

    counts = json.loads(ok(admin(data, "purge", json_output=True)))
    assert counts == {"queue_entries": 0, "link_sessions": 1, "blobs": 1}
    assert not blob_file.exists()
    assert live.blob_status(alice.devices[0], blob_id).status_code == 404
    assert "purged 0 queue entries, 0 link sessions, 0 blobs" in ok(admin(data, "purge"))


def test_backup_copies_a_live_database_and_never_overwrites(data: Path, live: Api, tmp_path: Path) -> None:
    assert live.register(RawAccount("alice"), invite(data)).status_code == 201
    target = tmp_path / "backup.db"
    assert "backed up" in ok(admin(data, "backup", "--to", str(target)))
    with sqlite3.connect(target) as conn:
        handles = conn.execute("SELECT handle FROM accounts").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert handles == [("alice",)]

    before = target.read_bytes()
    line = failed(admin(data, "backup", "--to", str(target)), 3)
    assert "exists" in line
    assert target.read_bytes() == before


def test_backup_of_postgres_points_to_pg_dump(data: Path, tmp_path: Path) -> None:
    url = "postgresql://mailslot:s3cret@db.example:5433/mail"
    line = failed(admin(data, "backup", "--to", str(tmp_path / "b"), env={"MAILSLOT_DATABASE_URL": url}), 3)
    assert "pg_dump" in line and "db.example" in line and "5433" in line and "mail" in line
    assert "s3cret" not in line
    assert not (tmp_path / "b").exists()


def test_invites_create_list_revoke(data: Path, live: Api) -> None:
    """Registration is closed after `server init`; an invite opens it once, for one account."""
    refused = live.register(RawAccount("alice"))
    assert refused.status_code == 403 and "mailslot admin invite create" in refused.json()["message"]

    made = json.loads(ok(admin(data, "invite", "create", "--note", "for alice", json_output=True)))
    assert made["token"].startswith("inv_") and made["uses"] == 1 and made["note"] == "for alice"
    week = time.time() + 7 * 86400
    expires = datetime.fromisoformat(made["expires"]).timestamp()
    assert week - 60 < expires < week + 60
    text = ok(admin(data, "invite", "create", "--uses", "3", "--expires-in", "2h"))
    other = next(word for word in text.split() if word.startswith("inv_"))
    assert "shown only once" in text

    listed = [json.loads(line) for line in ok(admin(data, "invite", "list", json_output=True)).splitlines()]
    assert sorted((r["uses_left"], r["note"], r["state"]) for r in listed) == [
        (1, "for alice", "valid"),
        (3, "", "valid"),
    ]
    shown = ok(admin(data, "invite", "list"))
    assert made["token"] not in shown and other not in shown and made["hash"] in shown

    assert live.register(RawAccount("alice"), made["token"]).status_code == 201
    assert live.register(RawAccount("bob"), made["token"]).status_code == 403
    listed = [json.loads(line) for line in ok(admin(data, "invite", "list", json_output=True)).splitlines()]
    assert {r["hash"]: r["state"] for r in listed}[made["hash"]] == "used up"

    prefix = next(r["hash"] for r in listed if r["uses_left"] == 3)[:8]
    assert "revoked" in ok(admin(data, "invite", "revoke", prefix))
    assert live.register(RawAccount("bob"), other).status_code == 403
    assert "no invite matches" in failed(admin(data, "invite", "revoke", other), 3)
    assert "duration" in failed(admin(data, "invite", "create", "--expires-in", "soon"), 2)
