"""``mailslot account register|recover``: invites, the recovery code shown once, recovery.

One invite-only server for the module (each test uses its own handles); commands run as
subprocesses, as a user runs them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailslot.server.runner import ServerThread
from mailslot.server.services.directory import new_invite
from mailslot.server.storage import open_storage
from tests.cli.test_cli import Cli, answer_on_a_terminal, assert_one_error_line, invoke, json_lines
from tests.conftest import LiveServer, make_data_dir

CODE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){7}\b")


@pytest.fixture(scope="module")
def invite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_data_dir(tmp_path_factory.mktemp("server"), registration="invite")
    with ServerThread(config) as thread:
        yield LiveServer(thread.url, config.cert_path, config.data_dir, config, thread.metrics_url)


@pytest.fixture
def mailslot(invite_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(invite_server, tmp_path)


def make_invite(server: LiveServer, uses: int = 1) -> str:
    """An invite token, stored the way `mailslot admin invite create` stores one."""

    async def run() -> str:
        store = open_storage(server.config.storage_url)
        await store.open()
        try:
            invite = new_invite(int(time.time() * 1000), uses=uses, expires_in_ms=3_600_000)
            await store.create_invite(invite.row)
            return invite.token
        finally:
            await store.close()

    return asyncio.run(run())


def server_args(mailslot: Cli) -> list[str]:
    return ["--server", mailslot.server.url, "--ca", str(mailslot.server.ca)]


def files_contain(home: Path, needle: str) -> bool:
    return any(needle.encode() in p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_register_needs_an_invite_and_prints_the_recovery_code_once(mailslot: Cli) -> None:
    refused = mailslot.run("ann", "account", "register", "ann", *server_args(mailslot))
    assert refused.returncode == 4, refused.stderr
    assert refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1
    assert "invite" in refused.stderr and "mailslot admin invite create" in refused.stderr
    assert not (mailslot.tmp_path / "home-ann" / "device.key").exists()
    forged = mailslot.run("ann", "account", "register", "ann", *server_args(mailslot), "--invite", "inv_nope")
    assert forged.returncode == 4 and "Traceback" not in forged.stderr

    token = make_invite(mailslot.server)
    out = mailslot.ok("ann", "account", "register", "ann", *server_args(mailslot), "--invite", token)
    assert "registered ann" in out and "shown only once" in " ".join(out.split())
    codes = CODE.findall(out)
    assert len(codes) == 1, out
    home = mailslot.tmp_path / "home-ann"
    assert not files_contain(home, codes[0]) and not files_contain(home, codes[0].replace("-", ""))

    used_up = mailslot.run("ben", "account", "register", "ben", *server_args(mailslot), "--invite", token)
    assert used_up.returncode == 4 and "invite" in used_up.stderr


def test_invite_from_the_environment_and_recovery_code_in_json(mailslot: Cli) -> None:
    mailslot.env["MAILSLOT_INVITE"] = make_invite(mailslot.server)
    (done,) = json_lines(mailslot.ok("cy", "-o", "json", "account", "register", "cy", *server_args(mailslot)))
    assert done["handle"] == "cy" and len(done["device_id"]) == 32
    assert CODE.fullmatch(done["recovery_code"])


def test_recover_replaces_every_device_and_the_code(mailslot: Cli) -> None:
    token = make_invite(mailslot.server)
    args = server_args(mailslot)
    (registered,) = json_lines(
        mailslot.ok("dee", "-o", "json", "account", "register", "dee", *args, "--invite", token)
    )
    old_code = registered["recovery_code"]

    wrong = "".join("A" if c != "A" else "B" for c in old_code.replace("-", ""))
    refused = mailslot.run("dee-2", "account", "recover", "dee", *args, "--code", wrong)
    assert refused.returncode in (4, 7), refused.stderr
    assert refused.stderr.startswith("error: ") and len(refused.stderr.splitlines()) == 1
    assert not (mailslot.tmp_path / "home-dee-2" / "device.key").exists()

    # the code as a person might type it, on standard input (not a terminal: one line is read)
    typed = old_code.lower().replace("-", " ") + "\n"
    out = mailslot.ok("dee-2", "account", "recover", "dee", *args, "--name", "new laptop", stdin=typed)
    flat = " ".join(out.split())
    assert "recovered dee" in flat and "only device" in flat and "contacts will see" in flat
    assert "shown only once" in flat
    (new_code,) = CODE.findall(out)
    assert new_code != old_code

    for command in (["device", "list"], ["receive"]):
        gone = mailslot.run("dee", *command)
        assert gone.returncode == 4, gone.stderr
        assert gone.stderr.startswith("error: ") and len(gone.stderr.splitlines()) == 1
        assert "removed" in gone.stderr and "Traceback" not in gone.stderr

    (listed,) = json_lines(mailslot.ok("dee-2", "-o", "json", "device", "list"))
    assert [(d["name"], d["this_device"]) for d in listed["devices"]] == [("new laptop", True)]

    stale = mailslot.run("dee-3", "account", "recover", "dee", *args, "--code", old_code)
    assert stale.returncode in (4, 7) and "Traceback" not in stale.stderr
    recover = ["-o", "json", "account", "recover", "dee", *args]
    code, out, shown = answer_on_a_terminal(mailslot, "dee-3", recover, "Recovery code:", new_code)
    assert code == 0, shown
    assert new_code not in shown  # typed without echo
    (again,) = json_lines(out)
    assert again["handle"] == "dee" and CODE.fullmatch(again["recovery_code"])
    assert again["recovery_code"] != new_code


def test_malformed_or_missing_code_fails_before_any_request(tmp_path: Path) -> None:
    base = ["--home", str(tmp_path), "account", "recover", "alice", "--server", "https://127.0.0.1:1"]
    env: dict[str, str | None] = {"MAILSLOT_PASSPHRASE": "pw"}
    assert_one_error_line(invoke([*base, "--code", "NOT-A-CODE"], env=env), 2, "recovery code has 32 letters")
    assert_one_error_line(invoke(base, env=env, stdin="\n"), 2, "no recovery code")
    assert not (tmp_path / "device.key").exists()
