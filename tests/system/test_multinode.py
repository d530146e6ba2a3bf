"""Three real server processes behind no load balancer, sharing one PostgreSQL database (directory,
queues, bodies and blob bytes) and one Redis (wake-ups), driven by the real client library.

Each node is ``python -m mailslot serve`` with a data directory of its own, made by ``mailslot
server init`` and then edited (database, bus and blob URLs, no metrics listener). All three
serve the same certificate (node A's, copied into the others before they start), so one CA
file works for every node; a client picks its node by its server URL.

    node A: alice's phone       node B: bob's laptop, alice's laptop (linked here)
    node C: carol's desk

What is shown, in order:

1. a message sent through A reaches bob streaming from B at once, over Redis (the nodes'
   periodic queue re-check is set to 30 s, so only a wake-up can deliver within 2 s);
2. an attachment uploaded through A is downloaded by carol through C;
3. alice links a laptop through B and approves it from her phone on A; carol on C, whose copy
   of alice's device list is now stale, sends to alice: the server refuses the first attempt
   (device mismatch), carol's client fetches the new list and the send covers both devices;
   the new laptop gets it in real time;
4. B is killed (SIGKILL) while alice keeps sending through A and bob streams from B; bob's
   device home is pointed at C (the client library has no call to change a device's server,
   so the test re-writes the server URL in the device's keystore and opens the home again),
   and every send the server acknowledged reaches bob exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from mailslot.client import Client
from mailslot.client.keystore import KdfParams, Keystore
from mailslot.client.models import ReceivedMessage
from mailslot.errors import NetworkError
from mailslot.protocol.linking import LinkCode
from mailslot.server.config import load_config, write_config
from tests.server.services import fresh_database, redis_url
from tests.system.test_crash import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PASS = b"multi-node test"
KDF = KdfParams(log2_n=12)
START_TIMEOUT_S = 30.0
RECHECK_S = 30.0  # the nodes' queue re-check without a wake-up: far longer than PROMPT_S
PROMPT_S = 2.0  # "real time": sent through one node, read from another within this
ATTACHMENT_BYTES = 3 * 1024 * 1024 + 12345
KILL_AFTER_ACKS = 25  # phase 4: B is killed once this many of alice's sends were acknowledged
SENDS_AFTER_SWITCH = 20  # ... and alice stops once this many more went out after bob moved to C
MAX_BURST = 1000  # a bound on phase 4's sends, whatever happens
CATCH_UP_S = 10.0  # once the sender is done, how long bob (on C) has to show every acknowledged send
SEND_GAP_S = 0.02
MAILSLOT = [sys.executable, "-m", "mailslot"]


@dataclass
class Node:
    name: str
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        if self.proc is not None:
            self.proc.wait(timeout=10)


def init_nodes(root: Path, names: list[str], **settings: object) -> list[Node]:
    """``mailslot server init`` for every node (in parallel), then the shared settings (with
    registration open, so test accounts need no invite), and node A's certificate and key
    copied over the others' so that one CA file fits every node."""
    nodes = [Node(name, root / name, free_port()) for name in names]
    inits = [
        subprocess.Popen(
            [*MAILSLOT, "server", "init", "--data-dir", str(n.data_dir), "--port", str(n.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in nodes
    ]
    for node, init in zip(nodes, inits, strict=True):
        _, err = init.communicate(timeout=60)
        assert init.returncode == 0, f"server init {node.name}: {err.decode(errors='replace')}"
    first = load_config(nodes[0].data_dir)
    for node in nodes:
        config = load_config(node.data_dir).with_overrides(**{"registration": "open", **settings})
        write_config(config)
        if node is not nodes[0]:
            shutil.copy2(first.cert_path, config.cert_path)
            shutil.copy2(first.key_path, config.key_path)
    return nodes


def start_nodes(nodes: list[Node], ca: Path) -> None:
    """Start every node (in parallel) and wait until each answers /health over TLS."""
    for node in nodes:
        argv = [*MAILSLOT, "serve", "--data-dir", str(node.data_dir), "--port", str(node.port)]
        with node.log.open("ab") as sink:
            node.proc = subprocess.Popen(
                [*argv, "--log-level", "warning"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=1.0) as http:
        for node in nodes:
            assert node.proc is not None
            while True:
                if node.proc.poll() is not None:
                    pytest.fail(f"node {node.name} exited at start:\n{node.log_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{node.url}/health").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"node {node.name} did not come up:\n{node.log_text()}")
                time.sleep(0.05)


def clean_redis(bus_url: str) -> None:
    """The bus keeps nothing in Redis, but remove anything under the run's prefix all the same."""
    prefix = bus_url.rpartition("prefix=")[2]
    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(bus_url.partition("?")[0], socket_connect_timeout=3, socket_timeout=3)
        try:
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
        finally:
            client.close()


@contextlib.contextmanager
def three_nodes(root: Path) -> Iterator[list[Node]]:
    """Nodes A, B and C on one fresh database and one fresh Redis prefix; all killed, the
    database dropped and the prefix cleaned on the way out, whatever happened."""
    bus_url = redis_url()
    with fresh_database() as database_url:
        nodes: list[Node] = []
        try:
            nodes = init_nodes(
                root,
                ["a", "b", "c"],
                database_url=database_url,
                bus_url=bus_url,
                blob_url=database_url,
                metrics=False,
                queue_recheck_s=RECHECK_S,
            )
            start_nodes(nodes, nodes[0].data_dir / "tls" / "cert.pem")
            yield nodes
        except BaseException:
            for node in nodes:
                print(f"--- node {node.name} log ---\n{node.log_text()[-4000:]}", file=sys.stderr)
            raise
        finally:
            for node in nodes:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    node.stop()
            clean_redis(bus_url)


# --- the client side ----------------------------------------------------------------------------


@dataclass
class Devices:
    ca: Path
    root: Path

    async def register(self, node: Node, handle: str) -> Client:
        return await Client.register(
            self.root / f"{handle}-primary", node.url, handle, passphrase=PASS, ca=self.ca, kdf=KDF
        )


@dataclass
class Inbox:
    """What one device's ``receive(timeout=...)`` yielded, with the time each was read."""

    got: list[ReceivedMessage] = dataclasses.field(default_factory=list)
    at: dict[str, float] = dataclasses.field(default_factory=dict)
    arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def add(self, message: ReceivedMessage) -> None:
        self.got.append(message)
        self.at.setdefault(message.id, time.monotonic())
        self.arrived.set()

    async def wait_for(self, message_id: str, seconds: float) -> float:
        """Wait until ``message_id`` was read; the monotonic time it was."""
        async with asyncio.timeout(seconds):
            while message_id not in self.at:
                self.arrived.clear()
                await self.arrived.wait()
        return self.at[message_id]


async def listen(client: Client, inbox: Inbox, seconds: float, *, download: bool = False) -> None:
    async with contextlib.aclosing(client.receive(timeout=seconds, download=download)) as messages:
        async for message in messages:
            inbox.add(message)


async def collect(client: Client, ids: list[str], seconds: float) -> None:
    async with contextlib.aclosing(client.receive(timeout=seconds)) as messages:
        async for message in messages:
            ids.append(message.id)


@contextlib.asynccontextmanager
async def streaming(client: Client, seconds: float = 60.0) -> AsyncIterator[Inbox]:
    """``client`` receiving (queue, then WebSocket) in the background for the block."""
    inbox = Inbox()
    task = asyncio.create_task(listen(client, inbox, seconds))
    try:
        yield inbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_streaming(sender: Client, recipient: str, inbox: Inbox) -> None:
    """Send one message and wait for it, so that the receiver's socket is certainly open."""
    warm_up = await sender.send([recipient], "warm-up")
    await inbox.wait_for(warm_up.id, 15)
    await asyncio.sleep(0.3)  # the receiver has moved on from its queue check to the socket


async def timed_send(sender: Client, recipient: str, text: str, inbox: Inbox) -> float:
    """Seconds from the start of ``send`` until the recipient's stream has the message."""
    started = time.monotonic()
    sent = await sender.send([recipient], text)
    return await inbox.wait_for(sent.id, PROMPT_S * 5) - started


def repoint(home: Path, server: str) -> Client:
    """Open the device in ``home`` against another node: same keys, same local store (so the
    same record of messages already seen), another server URL in its keystore."""
    keystore = Keystore(home)
    device = keystore.load(PASS)
    keystore.save(dataclasses.replace(device, server=server), PASS, KDF)
    return Client.open(home, passphrase=PASS)


# --- the phases -----------------------------------------------------------------------------------


async def realtime_across_nodes(alice: Client, bob: Client) -> list[float]:
    """Alice on A sends to bob streaming from B, five times; each arrives within PROMPT_S."""
    async with streaming(bob) as inbox:
        await until_streaming(alice, "bob", inbox)
        took = []
        for i in range(5):
            took.append(await timed_send(alice, "bob", f"across {i}", inbox))
            await asyncio.sleep(0.1)
    assert max(took) < PROMPT_S, f"wake-ups across nodes took {took} s"
    return took


async def attachment_across_nodes(alice: Client, carol: Client, tmp: Path) -> None:
    """Uploaded by alice through A, downloaded and checked by carol through C."""
    source = tmp / "report.bin"
    data = os.urandom(ATTACHMENT_BYTES)
    source.write_bytes(data)
    sent = await alice.send(["carol"], "the report", [source])
    assert sent.devices == 1 and len(sent.attachments) == 1
    inbox = Inbox()
    async with asyncio.timeout(30):
        await listen(carol, inbox, 0, download=True)
    (message,) = inbox.got
    assert message.id == sent.id and message.text == "the report"
    (attachment,) = message.attachments
    assert attachment.error is None and attachment.path is not None, attachment
    assert attachment.path.read_bytes() == data


async def device_list_change(
    alice: Client, carol: Client, devices: Devices, node_a: Node, node_b: Node, clients: dict[str, Client]
) -> None:
    """Alice links a laptop through B, approving it from her phone on A; carol on C (holding
    alice's old list) sends to alice, and her send covers the new device."""
    assert (await carol.device_list("alice", refresh=False)).version == 1  # cached in phase 2
    pending = await Client.start_link(
        devices.root / "alice-laptop",
        node_b.url,
        passphrase=PASS,
        ca=devices.ca,
        device_name="laptop",
        kdf=KDF,
    )
    try:
        # The link code names node B. The phone talks to A and accepts codes for its own server
        # only; behind a load balancer both are one URL, so say so in the code.
        code = dataclasses.replace(LinkCode.parse(pending.code), server=node_a.url).to_uri()
        record = await alice.approve(code)
        laptop = clients["alice-laptop"] = await pending.wait(30)
    finally:
        await pending.aclose()
    assert laptop.device_id == record.device_id.hex()
    assert (await carol.device_list("alice", refresh=False)).version == 1  # still the old one

    async with streaming(laptop) as inbox:
        await until_streaming(carol, "alice", inbox)  # the first send after the change
        assert (await carol.device_list("alice", refresh=False)).version == 2
        took = await timed_send(carol, "alice", "to both of your devices", inbox)
        assert took < PROMPT_S
    assert [m.text for m in inbox.got] == ["warm-up", "to both of your devices"]
    assert {m.sender_device for m in inbox.got} == {carol.device_id}
    # The phone (on A) has both too.
    phone = Inbox()
    async with asyncio.timeout(30):
        await listen(alice, phone, 0)
    assert [m.text for m in phone.got][-2:] == ["warm-up", "to both of your devices"]
    await clients.pop("alice-laptop").close()


@dataclass
class Traffic:
    """Alice's sends in phase 4: she keeps sending until bob has switched nodes and then some."""

    acked: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    switched: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    after_switch: int = 0  # sends acknowledged after bob's device was pointed at C
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


async def keep_sending(alice: Client, traffic: Traffic) -> None:
    try:
        for i in range(MAX_BURST):
            try:
                sent = await alice.send(["bob"], f"burst {i}")
            except NetworkError as exc:
                traffic.failed.append(str(exc))
                continue
            traffic.acked.append(sent.id)
            if traffic.switched.is_set():
                traffic.after_switch += 1
                if traffic.after_switch >= SENDS_AFTER_SWITCH:
                    return
            await asyncio.sleep(SEND_GAP_S)
    finally:
        traffic.done.set()


async def survive_a_kill(alice: Client, clients: dict[str, Client], node_b: Node, node_c: Node) -> None:
    """Kill B under bob's stream while alice sends through A; bob carries on through C."""
    traffic = Traffic()
    shown: list[str] = []  # every message bob's client yielded, over both nodes

    async def receive_on_b() -> None:
        with pytest.raises(NetworkError):  # the stream ends so once B is gone
            await collect(clients["bob"], shown, 60)

    sender = asyncio.create_task(keep_sending(alice, traffic))
    receiver = asyncio.create_task(receive_on_b())
    try:
        async with asyncio.timeout(30):
            while len(traffic.acked) < KILL_AFTER_ACKS or len(shown) < KILL_AFTER_ACKS // 2:
                await asyncio.sleep(0.01)
        node_b.stop(signal.SIGKILL)
        killed_at, acked_at_kill = time.monotonic(), len(traffic.acked)
        assert node_b.proc is not None and node_b.proc.returncode == -signal.SIGKILL
        async with asyncio.timeout(15):
            await receiver
        on_b = len(shown)
        home = clients["bob"].home
        await clients.pop("bob").close()
        bob = clients["bob"] = repoint(home, node_c.url)
        traffic.switched.set()
        async with asyncio.timeout(30):
            await traffic.done.wait()
        deadline = time.monotonic() + CATCH_UP_S
        while not set(traffic.acked) <= set(shown) and time.monotonic() < deadline:
            async with asyncio.timeout(CATCH_UP_S + 10):
                await collect(bob, shown, 1.0)
        caught_up = time.monotonic() - killed_at
        await sender
    finally:
        for task in (sender, receiver):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert traffic.failed == [], "sends through A failed while B died"
    assert traffic.after_switch == SENDS_AFTER_SWITCH, "the sender stopped before bob switched nodes"
    assert len(shown) == len(set(shown)), "a message was shown twice"
    missing = set(traffic.acked) - set(shown)
    stored = missing & {entry.id for entry in bob.history()}
    assert not missing, (
        f"acknowledged sends never shown to bob: {len(missing)}, of which {len(stored)} are in his "
        "local history: stored and marked seen, then redelivered and dropped as already seen"
    )
    assert set(shown) <= set(traffic.acked), "bob was shown a message nobody sent"
    leftover = Inbox()
    await listen(bob, leftover, 0)
    assert leftover.got == []
    print(
        f"kill: {len(traffic.acked)} sends acknowledged ({acked_at_kill} before the kill), "
        f"{on_b} read from B, the rest from C; all read {caught_up:.1f} s after the kill"
    )


async def test_three_nodes_share_postgres_and_redis(tmp_path: Path) -> None:
    with three_nodes(tmp_path / "nodes") as (node_a, node_b, node_c):
        devices = Devices(node_a.data_dir / "tls" / "cert.pem", tmp_path / "devices")
        clients: dict[str, Client] = {}
        try:
            for handle, node in (("alice", node_a), ("bob", node_b), ("carol", node_c)):
                clients[handle] = await devices.register(node, handle)
            alice, carol = clients["alice"], clients["carol"]

            took = await realtime_across_nodes(alice, clients["bob"])
            await attachment_across_nodes(alice, carol, tmp_path)
            await device_list_change(alice, carol, devices, node_a, node_b, clients)
            await survive_a_kill(alice, clients, node_b, node_c)
            print(f"A -> B delivery: {', '.join(f'{t * 1000:.0f} ms' for t in took)}")
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    await client.close()
        for node in (node_a, node_c):
            assert "Traceback" not in node.log_text(), f"node {node.name} logged an error"
