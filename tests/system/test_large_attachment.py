"""A 1 GiB attachment end to end, with the peak memory of every process measured and bounded.

Three processes: the server (``python -m mailslot serve``), the sending client (``mailslot
send bob -a FILE``) and the receiving client (``mailslot receive``, which downloads, checks and
decrypts the file into its downloads folder). Each must peak under ``LIMIT``, and the file that
arrives must have the SHA-256 of the one sent.

Each process's peak is its own ``VmHWM`` (the high-water mark of its resident set, which the
kernel keeps per address space, from ``/proc/<pid>/status``): the clients write theirs when
they exit (an ``atexit`` hook in a two-line launcher around the real ``mailslot`` command),
the server's is read after both clients are done. ``ru_maxrss`` from ``wait4`` would not do:
Linux carries the parent's high-water mark over into a child at ``exec``, so every child of
a test process that has grown to a few hundred MiB would seem to use that much.

The source file is written block by block from pseudo-random data (never held in memory),
and hashed as it is written; the received file is hashed block by block too. The times and
peaks are printed (``pytest -s`` shows them) for the record.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_data_dir
from tests.system.test_crash import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc"),
]

MIB = 1024 * 1024
SIZE = 1024 * MIB
LIMIT = 100 * MIB
BLOCK = MIB
PEAK_FILE = "MEASURE_PEAK_FILE"

# Runs ``mailslot`` with the given arguments and, at exit, writes the process's VmHWM (KiB).
LAUNCHER = """
import atexit, os, runpy, sys
def report():
    with open("/proc/self/status") as status, open(os.environ["MEASURE_PEAK_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(report)
sys.argv[0] = "mailslot"
runpy.run_module("mailslot", run_name="__main__", alter_sys=True)
"""


def peak_of(pid: int) -> int:
    """The current VmHWM of a live process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) * 1024


def write_source(path: Path) -> str:
    """``SIZE`` bytes of pseudo-random blocks, written and hashed block by block."""
    digest = hashlib.sha256()
    noise = os.urandom(BLOCK)
    with path.open("wb") as out:
        for index in range(SIZE // BLOCK):
            block = hashlib.sha256(index.to_bytes(8, "big")).digest() + noise[32:]
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


class Devices:
    """The ``mailslot`` command, one home per device, each run its own measured process."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.env = {**os.environ, "MAILSLOT_PASSPHRASE": "large attachment test"}
        self.env.pop("MAILSLOT_HOME", None)

    def run(self, device: str, *args: str) -> tuple[int, float]:
        """Run one command to completion; its peak resident set (bytes) and wall time."""
        log, peak = self.tmp_path / f"{device}.log", self.tmp_path / f"{device}.peak"
        command = [sys.executable, "-c", LAUNCHER, "--home", str(self.tmp_path / device), *args]
        started = time.monotonic()
        with log.open("ab") as sink:
            done = subprocess.run(
                command,
                env={**self.env, PEAK_FILE: str(peak)},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                timeout=600,
                check=False,
            )
        assert done.returncode == 0, log.read_text(errors="replace")
        return int(peak.read_text()) * 1024, time.monotonic() - started


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    log = data_dir / "server.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailslot",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    deadline = time.monotonic() + 30
    with httpx.Client(verify=False) as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http.get(f"https://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the server did not come up: {log.read_text(errors='replace')}")


def test_one_gib_attachment_in_bounded_memory(tmp_path: Path) -> None:
    blob_room = SIZE + 64 * MIB
    config = make_data_dir(
        tmp_path / "server", max_blob_bytes=blob_room, account_blob_quota_bytes=2 * blob_room
    )
    port = free_port()
    server = start_server(config.data_dir, port)
    try:
        devices = Devices(tmp_path)
        for handle in ("alice", "bob"):
            devices.run(
                handle,
                "account",
                "register",
                handle,
                "--server",
                f"https://127.0.0.1:{port}",
                "--ca",
                str(config.cert_path),
            )
        source = tmp_path / "one-gib.bin"
        sent_digest = write_source(source)
        sender, send_s = devices.run("alice", "send", "bob", "-m", "a big one", "-a", str(source))
        receiver, receive_s = devices.run(
            "bob", "-o", "json", "receive", "--downloads", str(tmp_path / "downloads")
        )
        served = peak_of(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(
        f"\n1 GiB attachment: send {send_s:.1f} s, peak {sender / MIB:.1f} MiB; "
        f"receive {receive_s:.1f} s, peak {receiver / MIB:.1f} MiB; "
        f"server peak {served / MIB:.1f} MiB (limit {LIMIT / MIB:.0f} MiB)"
    )
    received = tmp_path / "downloads" / "one-gib.bin"
    assert received.stat().st_size == SIZE
    assert file_digest(received) == sent_digest
    assert sender < LIMIT, f"sending client peaked at {sender / MIB:.1f} MiB"
    assert receiver < LIMIT, f"receiving client peaked at {receiver / MIB:.1f} MiB"
    assert served < LIMIT, f"server peaked at {served / MIB:.1f} MiB"
