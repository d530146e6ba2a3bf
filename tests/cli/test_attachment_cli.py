"""``mailslot send -a``, ``receive`` with attachments, ``attachment get``: through the real server.

The flows run the CLI as separate processes (``Cli`` from ``test_cli``); argument errors run
in-process. A progress bar must appear only on a terminal and never in JSON mode, so two tests
give the command a pseudo-terminal as its standard error.
"""

from __future__ import annotations

import hashlib
import os
import pty
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.cli.test_cli import Cli, assert_one_error_line, invoke, json_lines


@pytest.fixture
def mailslot(live_server: Any, tmp_path: Path) -> Cli:
    return Cli(live_server, tmp_path)


def write(path: Path, size: int) -> Path:
    path.write_bytes(random.Random(size).randbytes(size))
    return path


def digest(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- in-process: errors before anything is sent ---------------------------------------------------


def test_a_missing_attachment_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    result = invoke(
        ["--home", str(tmp_path), "send", "bob", "-a", str(missing)], env={"MAILSLOT_PASSPHRASE": "x"}
    )
    assert_one_error_line(result, 2, "cannot read the attachment")
    assert "nope.bin" in result.stderr


def test_a_folder_as_attachment_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = invoke(["--home", str(tmp_path), "send", "bob", "-m", "hi", "-a", str(tmp_path)])
    assert_one_error_line(result, 2, "not a regular file")


def test_a_malformed_attachment_id_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = invoke(["--home", str(tmp_path), "attachment", "get", "../etc"])
    assert_one_error_line(result, 2, "invalid attachment id")


# --- subprocesses through the real server ---------------------------------------------------------


def test_send_files_receive_them_and_get_one_again(mailslot: Cli, tmp_path: Path) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    photo = write(tmp_path / "photo.jpg", 10)
    data = write(tmp_path / "data.bin", 200_000)
    (sent,) = json_lines(
        mailslot.ok(
            "alice", "-o", "json", "send", "bob", "-m", "two files", "-a", str(photo), "-a", str(data)
        )
    )
    assert [a["name"] for a in sent["attachments"]] == ["photo.jpg", "data.bin"]
    only = mailslot.ok("alice", "send", "bob", "-a", str(data)).strip()  # no -m: stdin is not read
    assert len(only) == 32

    downloads = tmp_path / "bob-downloads"
    first, second = json_lines(mailslot.ok("bob", "-o", "json", "receive", "--downloads", str(downloads)))
    assert first["text"] == "two files" and second["text"] == ""
    assert [set(a) for a in first["attachments"]] == [{"id", "name", "size", "media_type", "path"}] * 2
    jpg, binary = first["attachments"]
    assert (jpg["name"], jpg["size"], jpg["media_type"]) == ("photo.jpg", 10, "image/jpeg")
    assert binary["id"] == f"{sent['id']}-1" and binary["media_type"] == "application/octet-stream"
    assert Path(jpg["path"]).parent == downloads.resolve() and digest(jpg["path"]) == digest(photo)
    assert Path(second["attachments"][0]["path"]).name == "data (1).bin"

    (again,) = json_lines(
        mailslot.ok("bob", "-o", "json", "attachment", "get", binary["id"], "--downloads", str(downloads))
    )
    assert Path(again["path"]).name == "data (2).bin" and digest(again["path"]) == digest(data)
    history = json_lines(mailslot.ok("bob", "-o", "json", "history"))
    assert history[0]["attachments"][1]["path"] == again["path"]

    text = mailslot.ok("bob", "history")
    assert "attachment photo.jpg  image/jpeg, 10 B  saved to" in text and f"id {binary['id']}" in text
    shown = mailslot.ok("bob", "attachment", "get", jpg["id"], "--downloads", str(downloads))
    assert "photo (1).jpg" in shown


def test_receive_without_download_lists_the_files(mailslot: Cli, tmp_path: Path) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    mailslot.ok("alice", "send", "bob", "-m", "later", "-a", str(write(tmp_path / "a.txt", 3)))
    text = mailslot.ok("bob", "receive", "--no-download")
    assert (
        "later" in text
        and "attachment a.txt  text/plain, 3 B  not downloaded: mailslot attachment get" in text
    )
    (entry,) = json_lines(mailslot.ok("bob", "-o", "json", "history"))
    assert entry["attachments"][0]["path"] is None
    assert not (tmp_path / "home-bob" / "downloads").exists()
    (got,) = json_lines(mailslot.ok("bob", "-o", "json", "attachment", "get", entry["attachments"][0]["id"]))
    assert Path(got["path"]).parent == (tmp_path / "home-bob" / "downloads").resolve()


def test_a_long_message_from_stdin_arrives_as_text(mailslot: Cli) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    letter = "Dear Bob,\n" + "this is a long letter. " * 1000
    mailslot.ok("alice", "send", "bob", stdin=letter + "\n")
    (got,) = json_lines(mailslot.ok("bob", "-o", "json", "receive"))
    assert got["text"] == letter and got["attachments"] == []


def test_preview_an_image_before_downloading_it(mailslot: Cli, tmp_path: Path) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    picture = tmp_path / "cat.png"
    Image.new("RGB", (400, 300), (200, 120, 40)).save(picture)
    mailslot.ok("alice", "send", "bob", "-a", str(picture))
    (got,) = json_lines(mailslot.ok("bob", "-o", "json", "receive", "--no-download"))
    (preview,) = json_lines(
        mailslot.ok("bob", "-o", "json", "attachment", "preview", got["attachments"][0]["id"])
    )
    assert Path(preview["path"]).name == "cat.png.preview.jpg"
    with Image.open(preview["path"]) as image:
        assert image.format == "JPEG" and image.size == (160, 120)


def test_unknown_attachment_id_exit_code(mailslot: Cli) -> None:
    mailslot.register("bob")
    done = mailslot.run("bob", "attachment", "get", "ab" * 16 + "-0")
    assert (
        done.returncode == 3
        and done.stderr.startswith("error: no attachment")
        and "Traceback" not in done.stderr
    )


def _run_on_a_terminal(mailslot: Cli, device: str, *args: str) -> tuple[int, str]:
    """Run with a pseudo-terminal as standard error; its exit code and what it drew there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        mailslot.args(device, *args),
        env=mailslot.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    drawn = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return proc.wait(timeout=60), drawn.decode("utf-8", errors="replace")


def test_progress_bars_on_a_terminal_only_in_text_mode(mailslot: Cli, tmp_path: Path) -> None:
    mailslot.register("alice")
    mailslot.register("bob")
    big = write(tmp_path / "big.bin", 3 * 1024 * 1024)
    code, drawn = _run_on_a_terminal(mailslot, "alice", "send", "bob", "-a", str(big))
    assert code == 0 and "upload big.bin" in drawn and "MiB" in drawn
    code, drawn = _run_on_a_terminal(mailslot, "alice", "-o", "json", "send", "bob", "-a", str(big))
    assert code == 0 and drawn == ""
    code, drawn = _run_on_a_terminal(mailslot, "bob", "receive")
    assert code == 0 and "download big.bin" in drawn
