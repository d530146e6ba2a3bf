"""``mailslot identity``: codes, verify, trust, block and list, in subprocesses against a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import Cli, assert_one_error_line, invoke, json_lines, make_home


@pytest.fixture
def mailslot(live_server: Any, tmp_path: Path) -> Cli:
    return Cli(live_server, tmp_path)


def test_show_verify_and_list(mailslot: Cli) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    (alice_view,) = json_lines(mailslot.ok("alice", "-o", "json", "identity", "show", "bob"))
    (bob_view,) = json_lines(mailslot.ok("bob", "-o", "json", "identity", "show", "alice"))
    assert set(alice_view) == {"handle", "code", "fingerprint", "trust"}
    assert alice_view["code"] == bob_view["code"] and len(alice_view["code"]) == 60
    assert alice_view["trust"] == "trusted-unverified" and alice_view["handle"] == "bob"

    text = mailslot.ok("alice", "identity", "show", "bob")
    groups = [alice_view["code"][i : i + 5] for i in range(0, 60, 5)]
    assert "  ".join(groups[:4]) in text and alice_view["fingerprint"] in text

    wrong = ("1" if alice_view["code"][0] != "1" else "2") + alice_view["code"][1:]
    failed = mailslot.run("alice", "identity", "verify", "bob", wrong)
    assert (
        failed.returncode == 7
        and failed.stderr.startswith("error: ")
        and len(failed.stderr.splitlines()) == 1
    )
    assert "does not match" in failed.stderr
    (listed,) = json_lines(mailslot.ok("alice", "-o", "json", "identity", "list"))
    assert (listed["handle"], listed["trust"]) == ("bob", "trusted-unverified")

    done = mailslot.ok(
        "alice", "identity", "verify", "bob", *" ".join(groups).split(" ")[:6], "".join(groups[6:])
    )
    assert "verified" in done
    assert "trusted-verified" in mailslot.ok("alice", "identity", "list")

    mailslot.ok("bob", "send", "alice", "-m", "hello")
    (got,) = json_lines(mailslot.ok("alice", "-o", "json", "receive"))
    assert got["verified"] is True
    mailslot.ok("alice", "send", "bob", "-m", "back")
    (back,) = json_lines(mailslot.ok("bob", "-o", "json", "receive"))
    assert back["verified"] is False


def test_never_policy_then_trust_and_block(mailslot: Cli) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    refused = mailslot.run("alice", "--trust-new-identities", "never", "send", "bob", "-m", "hi")
    assert refused.returncode == 8 and "not trusted yet" in refused.stderr
    assert "identity trust bob" in refused.stderr
    (shown,) = json_lines(mailslot.ok("alice", "-o", "json", "identity", "list"))
    assert shown["trust"] == "untrusted"

    (trusted,) = json_lines(mailslot.ok("alice", "-o", "json", "identity", "trust", "bob"))
    assert trusted["trust"] == "trusted-unverified"
    mailslot.ok("alice", "--trust-new-identities", "never", "send", "bob", "-m", "hi")

    mailslot.ok("bob", "identity", "block", "alice")
    mailslot.ok("alice", "send", "bob", "-m", "dropped")
    assert mailslot.ok("bob", "-o", "json", "receive") == ""  # both, "hi" too: blocking applies at receipt
    blocked = mailslot.run("bob", "send", "alice", "-m", "x")
    assert blocked.returncode == 4 and "blocked" in blocked.stderr


def test_policy_from_the_environment_is_checked(tmp_path: Path) -> None:
    make_home(tmp_path)
    result = invoke(
        ["--home", str(tmp_path), "identity", "list"],
        env={"MAILSLOT_TRUST_NEW_IDENTITIES": "sometimes", "MAILSLOT_PASSPHRASE": "pw"},
    )
    assert result.exit_code == 2 and "sometimes" in result.output


def test_malformed_code_is_an_input_error(tmp_path: Path) -> None:
    make_home(tmp_path)
    result = invoke(
        ["--home", str(tmp_path), "identity", "verify", "bob", "123"], env={"MAILSLOT_PASSPHRASE": "pw"}
    )
    assert_one_error_line(result, 2, "60 digits")
