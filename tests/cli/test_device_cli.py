"""``mailslot device list|rename|remove|alerts|rotate-keys`` and alerts in ``mailslot receive``.

One open-registration server for the module (each test uses its own handles); commands run as
subprocesses, as a user runs them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailslot.cli.device_cmd import resolve_device_id
from mailslot.client.models import DeviceInfo
from mailslot.errors import InputError, NotFoundError
from mailslot.server.runner import ServerThread
from tests.cli.test_cli import Cli, answer_on_a_terminal, json_lines
from tests.conftest import LiveServer, make_data_dir


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_data_dir(tmp_path_factory.mktemp("server"), registration="open")
    with ServerThread(config) as thread:
        yield LiveServer(thread.url, config.cert_path, config.data_dir, config, thread.metrics_url)


@pytest.fixture
def mailslot(open_server: LiveServer, tmp_path: Path) -> Cli:
    return Cli(open_server, tmp_path)


def register(mailslot: Cli, handle: str) -> str:
    """Register ``handle`` (home ``handle``); its device id."""
    server = ["--server", mailslot.server.url, "--ca", str(mailslot.server.ca)]
    (done,) = json_lines(mailslot.ok(handle, "-o", "json", "account", "register", handle, *server))
    return str(done["device_id"])


def link(mailslot: Cli, approver: str, home: str, name: str) -> str:
    """Link a new device (home ``home``) to ``approver``'s account; its device id."""
    server = ["--server", mailslot.server.url, "--ca", str(mailslot.server.ca)]
    linking = mailslot.popen(home, "-o", "json", "device", "link", *server, "--name", name, "--timeout", "30")
    try:
        assert linking.stdout is not None
        code = linking.stdout.readline().strip()
        mailslot.ok(approver, "device", "approve", code)
        out, err = linking.communicate(timeout=60)
    finally:
        linking.kill()
    assert linking.returncode == 0, err
    return str(json_lines(out)[0]["device_id"])


def alerts(mailslot: Cli, home: str, *flags: str) -> list[dict[str, Any]]:
    return json_lines(mailslot.ok(home, "-o", "json", "device", "alerts", *flags))


def assert_removed(mailslot: Cli, home: str, *command: str) -> None:
    done = mailslot.run(home, *command)
    assert done.returncode == 4, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert "removed" in done.stderr and "Traceback" not in done.stderr


def test_list_rename_alerts_and_remove(mailslot: Cli) -> None:
    primary = register(mailslot, "dana")
    phone = link(mailslot, "dana", "dana-phone", "phone")

    (listed,) = json_lines(mailslot.ok("dana", "-o", "json", "device", "list"))
    by_id = {d["id"]: d for d in listed["devices"]}
    assert set(by_id) == {primary, phone} and listed["version"] == 2
    assert by_id[primary]["this_device"] is True and by_id[phone]["this_device"] is False
    assert by_id[phone]["name"] == "phone" and isinstance(by_id[phone]["created_at_ms"], int)
    assert isinstance(by_id[primary]["last_seen_ms"], int)  # it has just made requests
    assert abs(by_id[primary]["last_seen_ms"] - time.time() * 1000) < 120_000
    table = " ".join(mailslot.ok("dana", "device", "list").split())
    assert "this device" in table and "phone" in table and "last seen" in table
    assert re.search(r"just now|\b1 min ago", table)  # last seen is kept to the minute

    alerts(mailslot, "dana")  # the link's own alert, if any, is now seen
    (renamed,) = json_lines(mailslot.ok("dana-phone", "-o", "json", "device", "rename", "tablet"))
    assert (renamed["device_id"], renamed["name"]) == (phone, "tablet")
    (alert,) = alerts(mailslot, "dana")
    assert alert["type"] == "alert" and alert["kind"] == "renamed" and alert["device_id"] == phone
    assert alert["device_name"] == "tablet" and alert["approver_id"] == phone
    assert (alert["attack"], alert["own"], alert["version"]) == (False, True, 3)
    assert "no new device alerts" in mailslot.ok("dana", "device", "alerts")
    shown = " ".join(mailslot.ok("dana", "device", "alerts", "--all").split())
    assert f"ALERT: device {phone} of your account was renamed to 'tablet'" in shown

    (other,) = json_lines(
        mailslot.ok("dana", "-o", "json", "device", "rename", "old phone", "--device", phone[:6].upper())
    )
    assert (other["device_id"], other["name"]) == (phone, "old phone")  # a unique start names it
    for bad in ("ab", "zz" * 16, f"{phone[:4]}-x"):
        refused = mailslot.run("dana", "device", "rename", "x", "--device", bad)
        assert refused.returncode == 2 and "invalid device id" in refused.stderr

    code, _, shown = answer_on_a_terminal(mailslot, "dana", ["device", "remove", phone], "[y/N]", "n")
    assert code == 1 and f"Remove device 'old phone' ({phone}) from dana?" in shown
    assert "nothing removed" in shown
    itself = mailslot.run("dana-phone", "device", "remove", phone, "--yes")
    assert itself.returncode == 2 and "another device" in itself.stderr
    unknown = mailslot.run("dana", "device", "remove", "ab" * 16, "--yes")
    assert unknown.returncode == 3 and unknown.stderr.startswith("error: ")
    (removed,) = json_lines(mailslot.ok("dana", "-o", "json", "device", "remove", phone[:8], "--yes"))
    assert removed["device_id"] == phone
    assert_removed(mailslot, "dana-phone", "receive")
    assert_removed(mailslot, "dana-phone", "device", "alerts")  # fails fast: the home knows now
    (listed,) = json_lines(mailslot.ok("dana", "-o", "json", "device", "list"))
    assert [d["id"] for d in listed["devices"]] == [primary]


def test_receive_prints_alerts_at_start_and_as_they_happen(mailslot: Cli) -> None:
    register(mailslot, "eli")
    register(mailslot, "fay")
    phone = link(mailslot, "fay", "fay-phone", "phone")
    mailslot.ok("fay", "receive")  # shows (and marks seen) what the link brought
    mailslot.ok("fay-phone", "device", "rename", "pocket")
    text = " ".join(mailslot.ok("fay", "receive").split())
    assert f"ALERT: device {phone} of your account was renamed to 'pocket' by " in text
    assert mailslot.ok("fay", "receive") == ""  # shown once

    mailslot.ok("fay-phone", "device", "rename", "pager")
    mailslot.ok("eli", "send", "fay", "-m", "hi fay")
    lines = json_lines(mailslot.ok("fay", "-o", "json", "receive"))
    kinds = {line["type"]: line for line in lines}
    assert set(kinds) == {"alert", "message"}, lines
    assert kinds["alert"]["kind"] == "renamed" and kinds["alert"]["device_name"] == "pager"
    assert kinds["message"]["text"] == "hi fay" and kinds["message"]["from"] == "eli"

    receiving = mailslot.popen("fay", "-o", "json", "receive", "--timeout", "20")
    try:
        time.sleep(2)  # let it drain the queue and open the WebSocket
        mailslot.ok("fay-phone", "device", "rename", "watch")
        assert receiving.stdout is not None
        line = json.loads(receiving.stdout.readline())  # pushed on the server's devices frame
        assert (line["type"], line["kind"], line["device_name"]) == ("alert", "renamed", "watch")
    finally:
        receiving.kill()
        receiving.communicate(timeout=30)

    link(mailslot, "eli", "eli-phone", "eli's phone")  # a contact's new device: a notice
    mailslot.ok("eli-phone", "send", "fay", "-m", "new phone")
    shown = " ".join(mailslot.ok("fay", "receive").split())
    assert "NOTICE: eli's devices changed: added 'eli's phone'" in shown and "new phone" in shown


def test_rotate_keys_then_messages_still_arrive(mailslot: Cli) -> None:
    register(mailslot, "hal")
    register(mailslot, "ivy")
    (fresh,) = json_lines(mailslot.ok("ivy", "-o", "json", "device", "rotate-keys"))
    assert fresh["rotated"] is False
    assert "rotated this device's encryption key" in mailslot.ok("ivy", "device", "rotate-keys", "--force")
    mailslot.ok("hal", "send", "ivy", "-m", "after rotation")
    lines = json_lines(mailslot.ok("ivy", "-o", "json", "receive"))
    assert [m["text"] for m in lines if m["type"] == "message"] == ["after rotation"]


def test_a_device_id_prefix_must_fit_exactly_one_device() -> None:
    def info(device_id: str) -> DeviceInfo:
        return DeviceInfo(device_id, "d", 0, None, "", False)

    first, second, third = "abcd" + "0" * 28, "abcd" + "1" * 28, "1234" + "5" * 28
    devices = [info(first), info(second), info(third)]
    assert resolve_device_id(devices, "1234") == third
    assert resolve_device_id(devices, " ABCD0 ") == first
    assert resolve_device_id(devices, second) == second
    with pytest.raises(InputError, match="several device ids"):
        resolve_device_id(devices, "abcd")
    with pytest.raises(InputError, match="invalid device id"):
        resolve_device_id(devices, "123")  # shorter than the minimum
    with pytest.raises(NotFoundError):
        resolve_device_id(devices, "9999")
