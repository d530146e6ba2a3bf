"""Kill the server process hard in the middle of a burst of sends, restart it, and check that
every send it acknowledged is delivered, and that the recipient sees each message once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mailslot.client import Client
from mailslot.client.keystore import KdfParams
from mailslot.errors import MailslotError
from mailslot.server.runner import bind
from tests.conftest import make_data_dir

pytestmark = pytest.mark.slow
PASS = b"crash test"
KDF = KdfParams(log2_n=12)
BURST = 120
KILL_AFTER_ACKS = 50


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    log = data_dir / "server.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailslot", "serve", "--data-dir", str(data_dir), "--port", str(port),
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=sink,
        )
    deadline = time.monotonic() + 20
    with httpx.Client(verify=False) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text(errors='replace')}")
            try:
                if http.get(f"https://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not come up")


def free_port() -> int:
    sock = bind("127.0.0.1", 0)
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def burst(alice: Client, proc: subprocess.Popen[bytes]) -> tuple[set[str], int]:
    """Send BURST messages 8 at a time; SIGKILL the server after KILL_AFTER_ACKS acks."""
    acked: set[str] = set()
    failed = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(BURST):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal failed
        while not queue.empty():
            i = queue.get_nowait()
            try:
                sent = await alice.send(["bob"], f"message {i}")
            except MailslotError:
                failed += 1
                continue
            acked.add(sent.id)
            if len(acked) == KILL_AFTER_ACKS:
                os.kill(proc.pid, signal.SIGKILL)

    await asyncio.gather(*(worker() for _ in range(8)))
    return acked, failed


async def test_acknowledged_sends_survive_a_hard_kill(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "server")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    proc = start_server(config.data_dir, port)
    try:
        alice = await Client.register(tmp_path / "alice", url, "alice", passphrase=PASS, ca=config.cert_path, kdf=KDF)
        bob = await Client.register(tmp_path / "bob", url, "bob", passphrase=PASS, ca=config.cert_path, kdf=KDF)
        acked, failed = await burst(alice, proc)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert len(acked) >= KILL_AFTER_ACKS
        assert failed > 0, "the kill should have cut some sends off"

        proc = start_server(config.data_dir, port)
        received = [m.id async for m in bob.receive()]
        assert len(received) == len(set(received)), "a message was shown twice"
        missing = acked - set(received)
        assert not missing, f"{len(missing)} acknowledged sends were lost"
        again = [m.id async for m in bob.receive()]
        assert again == []
        await alice.close()
        await bob.close()
    finally:
        proc.kill()
        proc.wait()
