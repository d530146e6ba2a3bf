"""`mailslot admin`: an operator's maintenance of a node's data, run on the server machine.

Accounts (list, disable, enable), invites (create, list, revoke), purging expired data now,
and backups. Every command opens the configured database directly, so it works whether the
server runs or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import click
from rich.table import Table
from rich.text import Text

from mailslot.cli.output import Output, iso_time, safe
from mailslot.cli.server_cmd import DATA_DIR
from mailslot.errors import ConfigError, InputError, NotFoundError
from mailslot.server.blobs import open_blob_store
from mailslot.server.config import ServerConfig, load_config
from mailslot.server.services.directory import INVITE_PREFIX, invite_hash, new_invite
from mailslot.server.storage import Storage, open_storage
from mailslot.server.storage.base import InviteRow

T = TypeVar("T")

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _output() -> Output:
    """Output in the root group's ``-o`` format (text or json)."""
    mode = click.get_current_context().find_root().params.get("output")
    return Output("json" if mode == "json" else "text")


@contextlib.asynccontextmanager
async def _opened(config: ServerConfig) -> AsyncIterator[Storage]:
    store = open_storage(config.storage_url, synchronous=config.sqlite_synchronous)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _with_store(data_dir: Path, job: Callable[[ServerConfig, Storage], Awaitable[T]]) -> T:
    config = load_config(data_dir.resolve())

    async def run() -> T:
        async with _opened(config) as store:
            return await job(config, store)

    return asyncio.run(run())


@click.group("admin")
def admin() -> None:
    """Maintain a server node's data (run on the server machine)."""


@admin.group("accounts")
def accounts() -> None:
    """List, disable and enable accounts."""


@accounts.command("list")
@DATA_DIR
def list_accounts(data_dir: Path) -> None:
    """Every account: handle, device count, device-list version, creation time, disabled."""

    async def job(_: ServerConfig, store: Storage) -> list[tuple[str, int, int, int, bool]]:
        rows = await store.list_accounts()
        return [(a.handle, count, a.list_version, a.created_at_ms, a.disabled) for a, count in rows]

    rows = _with_store(data_dir, job)
    out = _output()
    if out.mode == "json":
        for handle, count, version, created, disabled in rows:
            out.json(
                {
                    "handle": handle,
                    "devices": count,
                    "list_version": version,
                    "created": iso_time(created),
                    "disabled": disabled,
                }
            )
        return
    table = Table(title=f"accounts ({len(rows)})")
    for column in ("handle", "devices", "list version", "created", "disabled"):
        table.add_column(column)
    for handle, count, version, created, disabled in rows:
        table.add_row(
            Text(safe(handle)),
            str(count),
            str(version),
            iso_time(created),
            Text("yes", style="red") if disabled else "no",
        )
    out.text(table)


def _set_disabled(data_dir: Path, handle: str, disabled: bool) -> None:
    async def job(_: ServerConfig, store: Storage) -> None:
        await store.set_disabled(handle, disabled)

    _with_store(data_dir, job)
    state = "disabled" if disabled else "enabled"
    _output().result({"handle": handle, "disabled": disabled}, f"{safe(handle)} {state}")


@accounts.command("disable")
@DATA_DIR
@click.argument("handle")
def disable(data_dir: Path, handle: str) -> None:
    """Disable HANDLE: its devices are refused (401) from their next request on; its data
    stays. Unknown handle: exit 3."""
    _set_disabled(data_dir, handle, True)


@accounts.command("enable")
@DATA_DIR
@click.argument("handle")
def enable(data_dir: Path, handle: str) -> None:
    """Enable HANDLE again. Unknown handle: exit 3."""
    _set_disabled(data_dir, handle, False)


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
HASH_SHOWN = 12  # hex digits of an invite's hash shown by `invite list`; any unique prefix revokes it
MIN_PREFIX = 6


def parse_duration(text: str) -> int:
    """A duration such as ``30m``, ``12h``, ``7d`` or ``2w`` (a bare number is seconds), in ms."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw]?)\s*", text.lower())
    if match is None or int(match[1]) == 0:
        raise InputError(f"{text!r} is not a duration: use a positive number with s, m, h, d or w (e.g. 7d)")
    return int(match[1]) * _UNITS_S[match[2] or "s"] * 1000


def _invite_state(row: InviteRow, now_ms: int) -> str:
    if row.uses_left < 1:
        return "used up"
    return "expired" if row.expires_at_ms <= now_ms else "valid"


@admin.group("invite")
def invite() -> None:
    """Create, list and revoke invite tokens (registration needs one unless it is open)."""


@invite.command("create")
@DATA_DIR
@click.option(
    "--uses",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="How many accounts may register with the token.",
)
@click.option(
    "--expires-in",
    "expires_in",
    default="7d",
    show_default=True,
    help="How long the token is valid: e.g. 30m, 12h, 7d, 2w.",
)
@click.option("--note", default="", help="A note for `invite list` (who it is for).")
def create_invite(data_dir: Path, uses: int, expires_in: str, note: str) -> None:
    """Create an invite token and print it. It is shown only this once: the server keeps only
    its SHA-256."""
    lifetime_ms = parse_duration(expires_in)
    made = new_invite(int(time.time() * 1000), uses=uses, expires_in_ms=lifetime_ms, note=note)

    async def job(_: ServerConfig, store: Storage) -> None:
        await store.create_invite(made.row)

    _with_store(data_dir, job)
    row = made.row
    value = {
        "token": made.token,
        "hash": row.token_hash.hex()[:HASH_SHOWN],
        "uses": row.uses_left,
        "expires": iso_time(row.expires_at_ms),
        "note": row.note,
    }
    text = (
        f"{made.token}\n"
        f"invite for {row.uses_left} registration(s), valid until {iso_time(row.expires_at_ms)}"
        f" (hash {value['hash']}); it is shown only once: give it to the person who registers\n"
        f"(mailslot account register HANDLE --server URL --invite {made.token})"
    )
    _output().result(value, text)


@invite.command("list")
@DATA_DIR
def list_invites(data_dir: Path) -> None:
    """Every invite, newest first: hash prefix, uses left, expiry, state, note (never tokens)."""

    async def job(_: ServerConfig, store: Storage) -> list[InviteRow]:
        return await store.list_invites()

    rows = _with_store(data_dir, job)
    now = int(time.time() * 1000)
    out = _output()
    if out.mode == "json":
        for row in rows:
            out.json(
                {
                    "hash": row.token_hash.hex()[:HASH_SHOWN],
                    "uses_left": row.uses_left,
                    "created": iso_time(row.created_at_ms),
                    "expires": iso_time(row.expires_at_ms),
                    "state": _invite_state(row, now),
                    "note": row.note,
                }
            )
        return
    table = Table(title=f"invites ({len(rows)})")
    for column in ("hash", "uses left", "created", "expires", "state", "note"):
        table.add_column(column)
    for row in rows:
        state = _invite_state(row, now)
        table.add_row(
            row.token_hash.hex()[:HASH_SHOWN],
            str(row.uses_left),
            iso_time(row.created_at_ms),
            iso_time(row.expires_at_ms),
            Text(state, style="green" if state == "valid" else "red"),
            Text(safe(row.note)),
        )
    out.text(table)


def _matching_invite(rows: list[InviteRow], given: str) -> bytes:
    """The hash of the one invite that ``given`` (a token, or a prefix of a hash) names."""
    given = given.strip()
    if given.startswith(INVITE_PREFIX):
        wanted = invite_hash(given)
        found = [row.token_hash for row in rows if row.token_hash == wanted]
    else:
        prefix = given.lower()
        if len(prefix) < MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", prefix):
            raise InputError(
                f"give the token or at least {MIN_PREFIX} hex digits of the hash from `invite list`"
            )
        found = [row.token_hash for row in rows if row.token_hash.hex().startswith(prefix)]
    if not found:
        raise NotFoundError(f"no invite matches {given[:HASH_SHOWN]!r}")
    if len(found) > 1:
        raise InputError(f"{len(found)} invites match {given!r}; give more digits of the hash")
    return found[0]


@invite.command("revoke")
@DATA_DIR
@click.argument("invite_id", metavar="HASH-PREFIX-OR-TOKEN")
def revoke_invite(data_dir: Path, invite_id: str) -> None:
    """Revoke an invite at once, named by its token or a unique prefix of its hash."""

    async def job(_: ServerConfig, store: Storage) -> bytes:
        token_hash = _matching_invite(await store.list_invites(), invite_id)
        if not await store.revoke_invite(token_hash):
            raise NotFoundError("the invite was revoked meanwhile")
        return token_hash

    shown = _with_store(data_dir, job).hex()[:HASH_SHOWN]
    _output().result({"hash": shown, "revoked": True}, f"invite {shown} revoked")


@admin.command("purge")
@DATA_DIR
def purge(data_dir: Path) -> None:
    """Delete expired queue entries (and their bodies), link sessions and blobs now, as the
    server's sweeper does every interval, and print how many of each went."""

    async def job(config: ServerConfig, store: Storage) -> dict[str, int]:
        now = int(time.time() * 1000)
        entries = await store.expire(now)
        links = await store.expire_links(now)
        expired_blobs = await store.expire_blobs(now)  # metadata first, then the bytes
        blob_bytes = open_blob_store(config.blob_store_url)
        await blob_bytes.open()
        try:
            for blob_id in expired_blobs:
                await blob_bytes.delete(blob_id)
        finally:
            await blob_bytes.close()
        return {"queue_entries": entries, "link_sessions": links, "blobs": len(expired_blobs)}

    counts = _with_store(data_dir, job)
    text = (
        f"purged {counts['queue_entries']} queue entries, {counts['link_sessions']} link sessions, "
        f"{counts['blobs']} blobs"
    )
    _output().result(counts, text)


@admin.command("backup")
@DATA_DIR
@click.option(
    "--to",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The backup file to create (never overwritten).",
)
def backup(data_dir: Path, target: Path) -> None:
    """Copy the SQLite database to a new file TARGET, consistently, even while the server runs
    (SQLite's online backup). A PostgreSQL database is backed up with pg_dump instead."""
    config = load_config(data_dir.resolve())
    url = config.storage_url
    if url.startswith(_POSTGRES_SCHEMES):
        raise ConfigError(_pg_dump_advice(url))
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"cannot back up the storage {url!r}: only SQLite files are backed up here")
    source = Path(url.removeprefix("sqlite:///"))
    if not source.is_file():
        raise ConfigError(f"no database at {source}")
    try:
        target.open("xb").close()  # claim the name; never overwrite
    except FileExistsError:
        raise ConfigError(f"{target} exists; choose a new file (backups never overwrite)") from None
    except OSError as exc:
        raise ConfigError(f"cannot create {target}: {exc.strerror}") from exc
    try:
        _sqlite_backup(source, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    size = target.stat().st_size
    _output().result(
        {"source": str(source), "backup": str(target), "bytes": size},
        f"backed up {source} to {target} ({size} bytes)",
    )


def _sqlite_backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"the backup of {source} failed: {exc}") from exc
    finally:
        src.close()


def _pg_dump_advice(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    database = unquote(parts.path.lstrip("/")) or "postgres"
    user = f" -U {unquote(parts.username)}" if parts.username else ""
    return (
        f"the database is PostgreSQL (host {host}, port {port}, database {database}); back it up with "
        f"pg_dump, e.g. pg_dump -h {host} -p {port}{user} -d {database} -Fc -f mailslot.dump "
        "(the password is not shown; pass it with PGPASSWORD or ~/.pgpass)"
    )
