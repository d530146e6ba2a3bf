"""`mailslot demo`: the whole product on one machine, narrated.

A real server (TLS, SQLite, in a temporary directory) on a free loopback port; alice and bob
with two devices each, the second of each linked through a link code; messages both ways and
in a group; and a look into the server's own database to show what it holds: one ciphertext
body, a different wrapped key per device, and each device's copy gone once it has it.

Then the trust features: the recovery code each registration issues (shown masked here), the
device alerts a link records, a lost device removed (it is told so; new mail skips it, and a
contact is told its devices changed) and a forced key rotation that mail still gets through.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailslot.client import Client, ReceivedMessage
from mailslot.client.keystore import KdfParams
from mailslot.client.models import DeviceAlert
from mailslot.errors import DeviceRemoved
from mailslot.protocol.safety import format_code
from mailslot.server.config import ServerConfig, write_config
from mailslot.server.runner import ServerThread
from mailslot.server.tls import write_self_signed

PASSPHRASE = b"demo passphrase"
# The demo's key files are thrown away at the end, so a cheaper scrypt keeps it quick.
DEMO_KDF = KdfParams(log2_n=12)


@dataclass
class Cast:
    """The demo's devices by name, e.g. ``alice/phone``."""

    devices: dict[str, Client]

    def __getitem__(self, name: str) -> Client:
        return self.devices[name]


class ServerPeek:
    """Read-only look into the server's SQLite database: what an operator could see."""

    def __init__(self, db: Path) -> None:
        self._db = db

    def copies(self, message_id: str) -> list[tuple[str, str]]:
        """(device id, fingerprint of its wrapped key) for every queued copy of a message."""
        with sqlite3.connect(f"file:{self._db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT device_id, wrapped_key FROM queue WHERE message_id = ? ORDER BY device_id",
                (bytes.fromhex(message_id),),
            ).fetchall()
        return [(bytes(d).hex(), hashlib.sha256(bytes(k)).hexdigest()[:16]) for d, k in rows]

    def body(self, message_id: str) -> bytes | None:
        with sqlite3.connect(f"file:{self._db}?mode=ro", uri=True) as conn:
            row = conn.execute(
                "SELECT body FROM messages WHERE message_id = ?", (bytes.fromhex(message_id),)
            ).fetchone()
        return None if row is None else bytes(row[0])


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


_DONE = {"rekeyed": "given a new encryption key", "recovered": "made the only device by recovery"}


def _alert_line(name: str, me: str, alert: DeviceAlert) -> str:
    """``alert on alice/phone: device 'laptop' added, approved by 'phone'`` (or a notice), and
    why it needs the user's attention or not; ``me`` is the id of the device that has it."""
    done = _DONE.get(alert.kind, alert.kind)
    device, approver = escape(repr(alert.device_name)), escape(repr(alert.approver_name))
    if not alert.own:
        return f"notice on {name}: {alert.handle}'s devices changed: device {device} {done}"
    line = f"alert on {name}: device {device} {done}, approved by {approver}"
    if alert.attack:
        why = "[bold red](NO device of the account approved this)[/]"
    elif not alert.seen:
        why = "[dim](waits for the user: `mailslot device alerts`)[/]"
    elif alert.approver_id == me:
        why = "[dim](this device made the change: recorded as seen)[/]"
    else:
        why = "[dim](a routine key rotation: recorded as seen)[/]"
    return f"{line} {why}"


class Demo:
    def __init__(self, root: Path, console: Console) -> None:
        self.root = root
        self.out = console
        self.cast = Cast({})
        self.names: dict[str, str] = {}  # device id -> "alice/phone"
        self.shown: set[tuple[str, int]] = set()  # (device name, alert id) already printed

    def step(self, text: str) -> None:
        self.out.print(f"\n[bold cyan]▶ {text}[/]")

    def say(self, text: str) -> None:
        self.out.print(f"  {text}")

    def _home(self, name: str) -> Path:
        return self.root / "devices" / name.replace("/", "-")

    def _remember(self, name: str, client: Client) -> Client:
        self.cast.devices[name] = client
        self.names[client.device_id] = name
        return client

    async def register(self, server: ServerThread, name: str) -> None:
        handle, device = name.split("/")
        client = await Client.register(
            self._home(name), server.url, handle, passphrase=PASSPHRASE,
            ca=server.config.cert_path, device_name=device, kdf=DEMO_KDF,
        )
        self._remember(name, client)
        self.say(f"{name:14} registered [dim]device {client.device_id[:12]}…[/]")
        if client.recovery_code:
            masked = "-".join([client.recovery_code.split("-")[0], "····", "…"])
            self.say(
                f"{'':14} recovery code issued: [yellow]{masked}[/] [dim](shown in full once; not stored)[/]"
            )

    async def link(self, server: ServerThread, name: str, approver: str) -> None:
        device = name.split("/")[1]
        pending = await Client.start_link(
            self._home(name), server.url, passphrase=PASSPHRASE, ca=server.config.cert_path,
            device_name=device, kdf=DEMO_KDF,
        )
        self.say(f"{name:14} shows link code [dim]{pending.code[:60]}…[/]")
        client, record = await asyncio.gather(pending.wait(30), self.cast[approver].approve(pending.code))
        self._remember(name, client)
        self.say(f"{approver:14} approved it: device list now signed with {record.name!r} in it")

    async def alerts(self, name: str, none: str = "no new alerts") -> list[DeviceAlert]:
        """Print the device alerts and contact notices ``name`` has recorded and not printed
        yet (after checking its own device list), or ``none``; mark them seen."""
        client = self.cast[name]
        await client.check_devices()
        new = [a for a in client.alerts(unseen_only=False) if (name, a.id) not in self.shown]
        for alert in new:
            self.shown.add((name, alert.id))
            self.out.print(f"  [yellow]{_alert_line(name, client.device_id, alert)}[/]")
        if not new:
            self.say(f"{name:14} [dim]{none}[/]")
        client.mark_alerts_seen()
        return new

    async def receive(self, name: str) -> list[ReceivedMessage]:
        got = [m async for m in self.cast[name].receive(download=True)]
        for m in got:
            sender = self.names.get(m.sender_device, m.sender)
            to = ", ".join(h for h in m.members if h != m.sender)
            self.out.print(
                f"  [green]{name:14}[/] ← [bold]{sender}[/] (to {to}) "
                f"[dim]{_time(m.sent_at_ms)}[/] “{m.text}”"
            )
            for a in m.attachments:
                where = a.path.relative_to(self.root) if a.path else a.error
                self.out.print(f"      📎 {a.name} ({a.size} bytes, {a.media_type}) → {where}")
        return got

    def show_copies(self, peek: ServerPeek, message_id: str) -> None:
        body = peek.body(message_id)
        table = Table(title=f"server's copies of message {message_id[:12]}…", title_justify="left")
        table.add_column("recipient device")
        table.add_column("wrapped content key (sha256, first 16 hex)")
        for device_id, fingerprint in peek.copies(message_id):
            table.add_row(self.names.get(device_id, device_id[:12]), fingerprint)
        self.out.print(table)
        if body is not None:
            self.say(f"one encrypted body, {len(body)} bytes, starts {body[:12].hex()}… (no plaintext)")


async def _story(demo: Demo, server: ServerThread, peek: ServerPeek) -> None:
    await _accounts(demo, server)
    copies = await _messages(demo, server, peek)
    await _lost_device(demo, peek, copies)
    await _rotation(demo)


async def _accounts(demo: Demo, server: ServerThread) -> None:
    demo.step("alice and bob each register a phone; each device makes its own keys")
    await demo.register(server, "alice/phone")
    await demo.register(server, "bob/phone")

    demo.step("each links a second device with a one-time link code")
    await demo.link(server, "alice/laptop", "alice/phone")
    await demo.link(server, "bob/tablet", "bob/phone")

    demo.step("every change to an account's device list is a device alert on its devices")
    for name in ("alice/phone", "alice/laptop", "bob/phone", "bob/tablet"):
        await demo.alerts(name, none="no alerts: it joined with this device list")


async def _messages(demo: Demo, server: ServerThread, peek: ServerPeek) -> int:
    """The messaging story; how many copies the server queued for alice's first message."""
    demo.step("alice's phone writes to bob: sealed separately for bob's two devices and alice's laptop")
    sent = await demo.cast["alice/phone"].send(["bob"], "Hi Bob! Lunch at noon?")
    demo.say(f"accepted for {sent.devices} devices, id {sent.id[:12]}…")
    demo.show_copies(peek, sent.id)

    demo.step("bob's phone fetches its copy; the server deletes that copy at once")
    await demo.receive("bob/phone")
    demo.show_copies(peek, sent.id)

    demo.step("bob's tablet and alice's laptop catch up; the last copy takes the body with it")
    await demo.receive("bob/tablet")
    await demo.receive("alice/laptop")
    demo.say(f"server still holds the body: {peek.body(sent.id) is not None}")

    demo.step("bob answers from his tablet")
    await demo.cast["bob/tablet"].send(["alice"], "Noon works. See you there.")
    for name in ("alice/phone", "alice/laptop", "bob/phone"):
        await demo.receive(name)

    demo.step("a file travels encrypted: a fresh key, uploaded once, the key inside the message")
    notes = demo.root / "lunch-menu.txt"
    notes.write_text("Soup of the day: tomato.\n" * 200, "utf-8")
    await demo.cast["alice/laptop"].send(["bob"], "Here is the menu", attachments=[notes])
    await demo.receive("bob/phone")
    await demo.receive("bob/tablet")
    await demo.receive("alice/phone")

    demo.step("alice and bob compare safety codes (in person, or over a call)")
    alice_view = await demo.cast["alice/phone"].identity("bob")
    bob_view = await demo.cast["bob/phone"].identity("alice")
    demo.say(f"alice sees: {format_code(alice_view.code)}")
    demo.say(f"bob sees:   {format_code(bob_view.code)}")
    await demo.cast["alice/phone"].verify("bob", bob_view.code)
    demo.say(f"codes match: {alice_view.code == bob_view.code}; alice marks bob verified")

    demo.step("carol joins; a group is just several recipients")
    await demo.register(server, "carol/phone")
    await demo.cast["carol/phone"].send(["alice", "bob"], "Mind if I join you two?")
    for name in ("alice/phone", "alice/laptop", "bob/phone", "bob/tablet"):
        await demo.receive(name)

    demo.step("alice's history, as her laptop stored it")
    for entry in demo.cast["alice/laptop"].history():
        arrow = "→" if entry.direction == "out" else "←"
        demo.say(f"{_time(entry.sent_at_ms)} {entry.sender:6} {arrow} “{entry.text}”")
    return sent.devices


async def _lost_device(demo: Demo, peek: ServerPeek, copies_before: int) -> None:
    demo.step("bob loses his tablet: his phone removes it from the account at once")
    tablet = demo.cast["bob/tablet"]
    record = await demo.cast["bob/phone"].remove_device(tablet.device_id)
    demo.say(f"bob/phone      removed {record.name!r}: device list now signed without it")
    await demo.alerts("bob/phone")
    try:
        await demo.receive("bob/tablet")
    except DeviceRemoved as removed:
        demo.say(f"[red]bob/tablet     refused: {escape(removed.message)}[/]")
    else:
        raise AssertionError("the removed tablet could still receive")

    demo.step("alice writes again: bob's phone gets a copy, the lost tablet does not")
    sent = await demo.cast["alice/phone"].send(["bob"], "Did you find your tablet?")
    demo.say(f"accepted for {sent.devices} devices, id {sent.id[:12]}… (her first message: {copies_before})")
    demo.show_copies(peek, sent.id)
    await demo.alerts("alice/phone")
    await demo.receive("bob/phone")
    await demo.receive("alice/laptop")


async def _rotation(demo: Demo) -> None:
    demo.step("alice's laptop rotates its encryption key (forced now; due weekly otherwise)")
    laptop = demo.cast["alice/laptop"]

    async def key() -> str:
        infos = await demo.cast["alice/phone"].devices()
        return next(d.enc_key_fingerprint for d in infos if d.device_id == laptop.device_id)

    old = await key()
    rotated = await laptop.rotate_keys(force=True)
    demo.say(f"alice/laptop   rotated: {rotated}; its key {old} → {await key()} (alice/phone's view)")
    await demo.alerts("alice/phone")
    await demo.cast["bob/phone"].send(["alice"], "Found it. Under the sofa. Removing it was right though.")
    await demo.receive("alice/laptop")
    await demo.receive("alice/phone")


async def run_demo(console: Console | None = None, root: Path | None = None) -> None:
    """Run the whole demo in a temporary directory, cleaning everything up."""
    out = console or Console()
    with tempfile.TemporaryDirectory(prefix="mailslot-demo-") as tmp:
        base = root or Path(tmp)
        # Open registration: the demo's accounts need no invite.
        config = ServerConfig(data_dir=base / "server", port=0, registration="open")
        config.data_dir.mkdir(parents=True, exist_ok=True)
        write_self_signed(config.cert_path, config.key_path)
        write_config(config)
        with ServerThread(config) as server:
            out.print(f"[bold]mailslot demo[/]: server on {server.url} (TLS, SQLite in {config.data_dir})")
            demo = Demo(base, out)
            try:
                await _story(demo, server, ServerPeek(config.data_dir / "mailslot.db"))
            finally:
                for client in demo.cast.devices.values():
                    await client.close()
        out.print("\n[bold green]demo finished[/]; server stopped, temporary files removed")
