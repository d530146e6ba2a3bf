"""The ``mailslot`` command line: argument errors in-process, real flows in subprocesses.

Every user mistake must end as ONE ``error:`` line on standard error and the documented exit
code, never a traceback.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from mailslot.cli.main import cli
from mailslot.client.keystore import DeviceSecrets, KdfParams, Keystore
from mailslot.errors import ConflictError, DeviceRemoved
from mailslot.protocol.identity import AccountKey, DeviceKeys

NO_PASSPHRASE: dict[str, str | None] = {"MAILSLOT_PASSPHRASE": None, "MAILSLOT_HOME": None}


def invoke(args: list[str], env: dict[str, str | None] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, args, env={**NO_PASSPHRASE, **(env or {})}, input=stdin)


def assert_one_error_line(result: Result, exit_code: int, contains: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert contains in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def make_home(home: Path, passphrase: bytes = b"pw") -> None:
    """A device home without a server: enough for the offline commands."""
    secrets = DeviceSecrets("alice", "https://127.0.0.1:1", "x", DeviceKeys.generate(), AccountKey.generate())
    Keystore(home).save(secrets, passphrase, KdfParams(log2_n=10))


# --- in-process: argument and local errors ------------------------------------------------------


def test_bad_handle_is_exit_2_and_one_line(tmp_path: Path) -> None:
    result = invoke(["--home", str(tmp_path), "account", "register", "Bad!", "--server", "https://x"])
    assert_one_error_line(result, 2, "invalid handle 'Bad!'")


def test_bad_recipient_handle(tmp_path: Path) -> None:
    result = invoke(["--home", str(tmp_path), "send", "ok", "NOT OK", "-m", "hi"])
    assert_one_error_line(result, 2, "invalid handle")


def test_missing_passphrase_without_a_terminal_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke(["--home", str(tmp_path), "history"])
    assert_one_error_line(result, 3, "no passphrase")
    assert "--passphrase-file" in result.stderr and "MAILSLOT_PASSPHRASE" in result.stderr


def test_wrong_passphrase(tmp_path: Path) -> None:
    make_home(tmp_path)
    result = invoke(["--home", str(tmp_path), "history"], env={"MAILSLOT_PASSPHRASE": "nope"})
    assert_one_error_line(result, 3, "wrong passphrase or damaged key file")


def test_passphrase_file_and_empty_history(tmp_path: Path) -> None:
    make_home(tmp_path / "home", b"from a file")
    (tmp_path / "pass").write_text("from a file\n")
    args = ["--home", str(tmp_path / "home"), "--passphrase-file", str(tmp_path / "pass")]
    result = invoke([*args, "-o", "json", "history"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_no_device_set_up(tmp_path: Path) -> None:
    result = invoke(["--home", str(tmp_path / "empty"), "history"], env={"MAILSLOT_PASSPHRASE": "pw"})
    assert_one_error_line(result, 3, "account register")


def test_plain_http_server_is_refused(tmp_path: Path) -> None:
    result = invoke(
        ["--home", str(tmp_path), "account", "register", "alice", "--server", "http://127.0.0.1:1"],
        env={"MAILSLOT_PASSPHRASE": "pw"},
    )
    assert_one_error_line(result, 2, "invalid server URL")


def test_unreachable_server_is_a_network_error(tmp_path: Path) -> None:
    result = invoke(
        ["--home", str(tmp_path), "account", "register", "alice", "--server", "https://127.0.0.1:1"],
        env={"MAILSLOT_PASSPHRASE": "pw"},
    )
    assert_one_error_line(result, 9, "cannot reach https://127.0.0.1:1")
    assert not (tmp_path / "device.key").exists()


def test_empty_message_from_stdin(tmp_path: Path) -> None:
    make_home(tmp_path)
    result = invoke(["--home", str(tmp_path), "send", "bob"], env={"MAILSLOT_PASSPHRASE": "pw"}, stdin="\n")
    assert_one_error_line(result, 2, "empty")


def _run_failing(error: BaseException) -> Result:
    """Run a throwaway subcommand that raises ``error``."""

    @click.command("boom")
    def boom() -> None:
        raise error

    cli.add_command(boom)
    try:
        return invoke(["boom"])
    finally:
        cli.commands.pop("boom")


def test_device_removed_inside_a_task_group_is_one_line() -> None:
    removed = DeviceRemoved("this device was removed from account alice (device list version 3)")
    result = _run_failing(ExceptionGroup("tasks", [removed, ConflictError("and then this")]))
    assert_one_error_line(result, DeviceRemoved.exit_code, "was removed from account alice")
    bug = _run_failing(ExceptionGroup("tasks", [removed, ValueError("a bug")]))
    assert isinstance(bug.exception, ExceptionGroup)  # a bug is never hidden


def test_help_documents_exit_codes() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    assert "Exit codes:" in result.output
    for line in ("2  bad request", "8  key changed", "9  network", "11  link timeout", "130  interrupted"):
        assert line in result.output


# --- subprocesses through the real server --------------------------------------------------------


class Cli:
    """Runs ``python -m mailslot.cli.main`` as a separate process, one home per device."""

    def __init__(self, live_server: Any, tmp_path: Path) -> None:
        self.server = live_server
        self.tmp_path = tmp_path
        self.env = {**os.environ, "MAILSLOT_PASSPHRASE": "cli test passphrase"}
        self.env.pop("MAILSLOT_HOME", None)

    def args(self, device: str, *rest: str) -> list[str]:
        home = str(self.tmp_path / f"home-{device}")
        return [sys.executable, "-m", "mailslot.cli.main", "--home", home, *rest]

    def run(self, device: str, *rest: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.args(device, *rest), env=self.env, input=stdin, capture_output=True, text=True, timeout=60
        )

    def ok(self, device: str, *rest: str, stdin: str | None = None) -> str:
        done = self.run(device, *rest, stdin=stdin)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    def popen(self, device: str, *rest: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.args(device, *rest),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def register(self, handle: str) -> None:
        server = ["--server", self.server.url, "--ca", str(self.server.ca)]
        self.ok(handle, "account", "register", handle, *server)


def answer_on_a_terminal(
    cli: Cli, device: str, args: list[str], prompt: str, answer: str
) -> tuple[int, str, str]:
    """Run with a pseudo-terminal as standard input and error; type ``answer`` when ``prompt``
    shows there. The exit code, standard output, and what the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cli.args(device, *args), env=cli.env, stdin=slave, stdout=subprocess.PIPE, stderr=slave, text=True
    )
    os.close(slave)
    shown = bytearray()
    answered = False
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        shown += chunk
        if not answered and prompt.encode() in shown:
            os.write(master, answer.encode() + b"\n")
            answered = True
    os.close(master)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out, shown.decode("utf-8", errors="replace")


@pytest.fixture
def mailslot(live_server: Any, tmp_path: Path) -> Cli:
    return Cli(live_server, tmp_path)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_register_send_receive_history(mailslot: Cli) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    taken = mailslot.run(
        "carol",
        "account",
        "register",
        "alice",
        "--server",
        mailslot.server.url,
        "--ca",
        str(mailslot.server.ca),
    )
    assert taken.returncode == 5 and taken.stderr.startswith("error: ")

    sent = json_lines(mailslot.ok("alice", "-o", "json", "send", "bob", "-m", "hello bob"))
    assert sent[0]["devices"] == 1 and len(sent[0]["id"]) == 32
    piped = mailslot.ok("alice", "send", "bob", stdin="from stdin\n").strip()
    assert len(piped) == 32

    (first, second) = json_lines(mailslot.ok("bob", "-o", "json", "receive"))
    assert first["type"] == "message" and first["id"] == sent[0]["id"]
    assert first["from"] == "alice" and first["to"] == ["alice", "bob"]
    assert first["text"] == "hello bob" and first["sent_at"].endswith("Z") and len(first["from_device"]) == 32
    assert second["text"] == "from stdin"
    assert mailslot.ok("bob", "-o", "json", "receive") == ""

    history = json_lines(mailslot.ok("bob", "-o", "json", "history", "alice"))
    assert [(h["type"], h["text"]) for h in history] == [("message", "hello bob"), ("message", "from stdin")]
    assert "hello bob" in mailslot.ok("bob", "history")


def test_unknown_recipient_exit_code(mailslot: Cli) -> None:
    mailslot.register("alice")
    done = mailslot.run("alice", "send", "nobody", "-m", "hi")
    assert done.returncode == 3 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_link_approve_and_list(mailslot: Cli) -> None:
    mailslot.register("alice")
    server = ["--server", mailslot.server.url, "--ca", str(mailslot.server.ca)]
    linking = mailslot.popen(
        "phone", "-o", "json", "device", "link", *server, "--name", "phone", "--timeout", "30"
    )
    try:
        assert linking.stdout is not None
        code = linking.stdout.readline().strip()  # printed and flushed before the wait
        assert code.startswith("mailslot://link?")
        approved = json_lines(mailslot.ok("alice", "-o", "json", "device", "approve", code))
        assert approved[0]["name"] == "phone"
        out, err = linking.communicate(timeout=60)
    finally:
        linking.kill()
    assert linking.returncode == 0, err
    assert json_lines(out)[0]["handle"] == "alice"

    listed = json_lines(mailslot.ok("phone", "-o", "json", "device", "list"))[0]
    assert listed["version"] == 2 and {d["name"] for d in listed["devices"]} == {"primary", "phone"}
    assert "this device" in mailslot.ok("phone", "device", "list")


def test_receive_keeps_streaming_until_the_timeout(mailslot: Cli) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    receiving = mailslot.popen("bob", "-o", "json", "receive", "--timeout", "8")
    try:
        time.sleep(2)  # let it drain the empty queue and open the WebSocket
        mailslot.ok("alice", "send", "bob", "-m", "live")
        assert receiving.stdout is not None
        line = receiving.stdout.readline()  # flushed per message, while still running
        assert json.loads(line)["text"] == "live"
        _, err = receiving.communicate(timeout=30)
    finally:
        receiving.kill()
    assert receiving.returncode == 0, err


def test_link_timeout_exit_code(mailslot: Cli) -> None:
    server = ["--server", mailslot.server.url, "--ca", str(mailslot.server.ca)]
    done = mailslot.run("lonely", "device", "link", *server, "--timeout", "1")
    assert done.returncode == 11, done.stderr
    assert done.stdout.startswith("mailslot://link?")
    assert done.stderr.splitlines()[-1].startswith("error: nobody approved")
