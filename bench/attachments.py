"""Attachment benchmark: a large file end to end over loopback TLS, against bare AES-256-GCM.

One real ``mailslot serve`` process (TLS, SQLite, the filesystem blob store, on a fresh data
directory in a temp dir), two real ``Client`` devices (alice sends, bob receives), and one file
of pseudo-random blocks on disk (256 MiB by default). Each round measures, in this order:

1. **bare AES-256-GCM** (the baseline): pyca ``AESGCM`` encrypting the file in 64 KiB chunks
   (the blob chunk size) as it is read from disk, one cipher object, counter nonces;
2. **ChunkSealer** (informative): ``chunked.ChunkSealer`` over the file read in 1 MiB blocks,
   as the client's ``blobs.seal_source`` reads it: the blob format's own cost, no network;
3. **upload**: ``alice.send(["bob"], "", attachments=[file])`` (encrypt, upload, seal, post);
4. **download**: ``bob.receive(download=True)`` (fetch, verify, decrypt, write, fsync, rename);
5. **HTTPS ceilings** (informative): the client's own ``Transport`` moving the same number of
   bytes with nothing else to do: upload pieces of the same size, signed the same way, to
   ``bench/bare_app.py`` (which reads the body and answers), and a download of the blob just
   sent into a sink that drops the bytes. They show how much of the gap to (1) is the HTTP+TLS
   stack itself rather than mailslot's work on the bytes.

Throughput is plaintext MiB per second (the ceilings: the same byte count over their time);
ratios are against (1) of the same run; the best round of each phase is reported. This is a
benchmark, not a test: it asserts nothing about speed (it does check that the file arrived
intact). See bench/README.md.

    .venv/bin/python bench/attachments.py [--quick] [--size MIB] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import _report
import _servers
from _servers import ServerProcess
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailslot.client.blobs import PIECE_SIZE, READ_SIZE
from mailslot.client.client import Client
from mailslot.client.keystore import KdfParams
from mailslot.client.models import Attachment
from mailslot.client.transport import Transport
from mailslot.protocol import chunked, wire
from mailslot.protocol.identity import DeviceKeys
from mailslot.server.config import ServerConfig, load_config, write_config

T = TypeVar("T")
MIB = 1024 * 1024
BLOCK = MIB  # the source file is written this much at a time
TARGET_RATIO = _report.TARGET_RATIO
PASSPHRASE = b"attachment bench"
CHEAP_KDF = KdfParams(log2_n=12)  # unlocking a device must not show in the timings
SETUP_TIMEOUT_S = 60.0
BARE_REPEATS = 3  # the in-process passes are short: each round keeps the best of a few
BUSY_OTHERS = 0.5  # cores used by other processes that the report warns about


@dataclass(frozen=True)
class Profile:
    name: str
    size_mib: int
    rounds: int


QUICK = Profile("quick", size_mib=32, rounds=1)
FULL = Profile("full", size_mib=256, rounds=3)


def phase_timeout(size_mib: int) -> float:
    """A generous bound for one network phase: a minute plus a second per MiB (1 MiB/s)."""
    return 60.0 + size_mib


# --- the input file and the in-process passes ---------------------------------------------------


def write_source(path: Path, size: int) -> str:
    """``size`` bytes of pseudo-random blocks (never all in memory); their SHA-256."""
    digest = hashlib.sha256()
    noise = os.urandom(BLOCK)
    with path.open("wb") as out:
        for index in range(-(-size // BLOCK)):
            block = hashlib.sha256(index.to_bytes(8, "big")).digest() + noise[32:]
            block = block[: size - index * BLOCK]
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def machine_cpu_s() -> float:
    """CPU seconds every process on the machine has used so far (``/proc/stat``); NaN elsewhere."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timed:
    """One measured phase: its wall time, the CPU time of this process (the client) and of
    the server, and the CPU time everything else on the machine took meanwhile."""

    seconds: float
    client_cpu_s: float
    server_cpu_s: float
    others_cpu_s: float

    def record(self, size: int) -> dict[str, float]:
        return {
            "seconds": self.seconds,
            "mib_per_s": size / MIB / self.seconds,
            "client_busy": self.client_cpu_s / self.seconds,
            "server_busy": self.server_cpu_s / self.seconds,
            "others_cores": self.others_cpu_s / self.seconds,
        }


class Meter:
    """Started on creation; ``stop()`` gives the ``Timed`` since then."""

    def __init__(self, server: ServerProcess | None = None) -> None:
        self._server = server
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        server = self._server.cpu_seconds() if self._server is not None else 0.0
        return time.perf_counter(), time.process_time(), server, machine_cpu_s()

    def stop(self) -> Timed:
        wall, client, server, machine = (e - s for e, s in zip(self._read(), self._start, strict=True))
        return Timed(wall, client, server if self._server else math.nan, machine - client - server)


def best_of(repeats: int, work: Callable[[], Timed]) -> Timed:
    return min((work() for _ in range(repeats)), key=lambda t: t.seconds)


def bare_aesgcm(path: Path) -> Timed:
    """The baseline: the file read in 64 KiB chunks, each encrypted with one ``AESGCM``."""
    aad = chunked.header_bytes(chunked.CHUNK_SIZE)
    meter = Meter()
    aead = AESGCM(os.urandom(32))
    index = 0
    with path.open("rb") as source:
        while data := source.read(chunked.CHUNK_SIZE):
            aead.encrypt(bytes(7) + index.to_bytes(4, "big") + b"\x00", data, aad)
            index += 1
    return meter.stop()


def chunk_sealer(path: Path) -> Timed:
    """``ChunkSealer`` over the file read in the client's 1 MiB blocks (informative)."""
    meter = Meter()
    sealer = chunked.ChunkSealer(os.urandom(32))
    sealed = len(sealer.start())
    with path.open("rb") as source:
        while data := source.read(READ_SIZE):
            for chunk in sealer.update(data):
                sealed += len(chunk)
    sealed += len(sealer.finish())
    use = meter.stop()
    if sealed != chunked.ciphertext_size(path.stat().st_size):
        raise RuntimeError("ChunkSealer produced an unexpected ciphertext size")
    return use


# --- the network phases -------------------------------------------------------------------------


async def timed(server: ServerProcess, seconds: float, work: Callable[[], Awaitable[T]]) -> tuple[T, Timed]:
    """Run ``work`` within ``seconds``; its result, and its ``Timed`` with ``server``'s CPU."""
    meter = Meter(server)
    async with asyncio.timeout(seconds):
        result = await work()
    return result, meter.stop()


async def download(
    bob: Client, server: ServerProcess, folder: Path, seconds: float
) -> tuple[Attachment, Timed]:
    """Bob's queue drained with downloads on: exactly one message with one saved file."""

    async def receive() -> list[Any]:
        return [m async for m in bob.receive(download=True, downloads=folder)]

    messages, use = await timed(server, seconds, receive)
    files = [a for m in messages for a in m.attachments]
    if len(messages) != 1 or len(files) != 1:
        raise RuntimeError(f"bob expected 1 message with 1 file, got {len(messages)} with {len(files)}")
    if files[0].error is not None or files[0].path is None:
        raise RuntimeError(f"bob's download failed: {files[0].error}")
    return files[0], use


async def ceiling_upload(transport: Transport, total: int) -> None:
    """``total`` bytes as signed ``PATCH`` pieces of the client's size, to the bare app."""
    piece = os.urandom(PIECE_SIZE)
    headers = {"Content-Type": "application/offset+octet-stream"}
    for offset in range(0, total, PIECE_SIZE):
        body = piece[: total - offset]
        path = f"/v1/blobs/{'0' * 64}"
        headers["Upload-Offset"] = str(offset)
        await transport.call("PATCH", path, wire.SendResponse, content=body, headers=headers)


async def ceiling_download(transport: Transport, blob_id: str, total: int) -> None:
    """The blob fetched by the client's own download code into a sink that drops it."""
    received = 0

    def drop(data: bytes) -> None:
        nonlocal received
        received += len(data)

    await transport.download(f"/v1/blobs/{blob_id}", start=0, sink=drop)
    if received != total:
        raise RuntimeError(f"the raw download got {received} bytes, not {total}")


@dataclass
class Run:
    """Everything started for one benchmark run; ``close`` stops what was started."""

    server: ServerProcess | None = None
    baseline: ServerProcess | None = None
    clients: tuple[Client, ...] = ()
    transports: tuple[Transport, ...] = ()

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        for transport in self.transports:
            with contextlib.suppress(Exception):
                await transport.aclose()
        for process in (self.server, self.baseline):
            if process is not None:
                process.stop()


def prepare(work_dir: Path, blob_bytes: int, rounds: int) -> ServerConfig:
    """A data directory with room for ``rounds`` blobs of ``blob_bytes`` (and one more)."""
    config = _servers.prepare_data_dir(work_dir, "FULL")
    room = blob_bytes + MIB
    config = load_config(config.data_dir).with_overrides(
        max_blob_bytes=room, account_blob_quota_bytes=(rounds + 1) * room
    )
    write_config(config)
    return config


async def start(run: Run, config: ServerConfig, work_dir: Path) -> None:
    """The server and the baseline app, alice and bob registered, two bare transports."""
    run.server = _servers.start_mailslot(config, work_dir)
    run.baseline = _servers.start_baseline(config, work_dir)
    async with asyncio.timeout(SETUP_TIMEOUT_S):
        for handle in ("alice", "bob"):
            client = await Client.register(
                work_dir / handle,
                run.server.url,
                handle,
                passphrase=PASSPHRASE,
                ca=config.cert_path,
                kdf=CHEAP_KDF,
            )
            run.clients = (*run.clients, client)
    keys = DeviceKeys.generate()  # the bare app checks nothing; a blob GET needs no signature
    run.transports = tuple(Transport(s.url, keys, ca=config.cert_path) for s in (run.baseline, run.server))


async def one_round(run: Run, number: int, source: Path, work_dir: Path, digest: str) -> dict[str, Any]:
    assert run.server is not None
    size = source.stat().st_size
    alice, bob = run.clients
    to_bare, to_server = run.transports
    limit = phase_timeout(size // MIB)
    phases: dict[str, Timed] = {
        "bare": best_of(BARE_REPEATS, lambda: bare_aesgcm(source)),
        "sealer": best_of(BARE_REPEATS, lambda: chunk_sealer(source)),
    }
    _, phases["upload"] = await timed(
        run.server, limit, lambda: alice.send(["bob"], "", attachments=[source])
    )
    saved, phases["download"] = await download(bob, run.server, work_dir / f"downloads-{number}", limit)
    assert saved.path is not None
    if saved.path.stat().st_size != size or file_digest(saved.path) != digest:
        raise RuntimeError(f"round {number}: the file bob saved differs from the one sent")
    saved.path.unlink()  # the disk holds at most one received copy at a time
    blob_size = chunked.ciphertext_size(size)
    assert run.baseline is not None
    _, phases["ceiling_up"] = await timed(run.baseline, limit, lambda: ceiling_upload(to_bare, blob_size))
    _, phases["ceiling_down"] = await timed(
        run.server, limit, lambda: ceiling_download(to_server, saved.blob_id, blob_size)
    )
    return {name: use.record(size) for name, use in phases.items()}


async def run_rounds(profile: Profile, work_dir: Path) -> dict[str, Any]:
    size = profile.size_mib * MIB
    source = work_dir / "attachment.bin"
    print(f"writing a {profile.size_mib} MiB source file...", file=sys.stderr)
    digest = write_source(source, size)
    config = prepare(work_dir, chunked.ciphertext_size(size), profile.rounds)
    run = Run()
    rounds: list[dict[str, Any]] = []
    try:
        await start(run, config, work_dir)
        for number in range(1, profile.rounds + 1):
            record = await one_round(run, number, source, work_dir, digest)
            rounds.append(record)
            shown = ", ".join(f"{name} {r['mib_per_s']:.0f}" for name, r in record.items())
            print(f"  round {number} (MiB/s): {shown}", file=sys.stderr)
        processes = [p for p in (run.server, run.baseline) if p is not None]
        return {"rounds": rounds, "server_log_errors": {p.name: p.log_errors() for p in processes}}
    except BaseException:
        for process in (run.server, run.baseline):
            if process is not None:
                print(f"--- {process.name} log (last lines) ---\n{process.log_tail()}", file=sys.stderr)
        raise
    finally:
        await run.close()


# --- summary and report -------------------------------------------------------------------------

PHASES = {
    "bare": "bare AES-256-GCM, 64 KiB chunks (baseline)",
    "sealer": "ChunkSealer, 1 MiB reads",
    "upload": "upload: alice.send(attachments=[file])",
    "download": "download: bob.receive(download=True)",
    "ceiling_up": "HTTPS ceiling, upload: signed 4 MiB PATCHes to bare app",
    "ceiling_down": "HTTPS ceiling, download: Transport.download, bytes dropped",
}
NETWORK = ("upload", "download", "ceiling_up", "ceiling_down")
MEASURED = ("upload", "download")


def summarise(summary: dict[str, Any]) -> None:
    """Best round of each phase, and the ratios against the best bare baseline."""
    rounds = summary["rounds"]
    best = {name: max((r[name] for r in rounds), key=lambda p: p["mib_per_s"]) for name in PHASES}
    bare = best["bare"]["mib_per_s"]
    summary["best"] = best
    summary["ratios"] = {name: best[name]["mib_per_s"] / bare for name in PHASES}
    summary["of_https_ceiling"] = {
        "upload": best["upload"]["mib_per_s"] / best["ceiling_up"]["mib_per_s"],
        "download": best["download"]["mib_per_s"] / best["ceiling_down"]["mib_per_s"],
    }
    summary["meets_target"] = all(summary["ratios"][n] >= TARGET_RATIO for n in MEASURED)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Like ``_report``'s tables, with the first column aligned left."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        first, *rest = zip(cells, widths, strict=True)
        return "  ".join([first[0].ljust(first[1]), *(c.rjust(w) for c, w in rest)])

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    head = (
        f"mailslot attachment benchmark ({summary['profile']}): {s['size_mib']} MiB file, "
        f"{s['chunk_bytes'] // 1024} KiB chunks, {s['piece_bytes'] // MIB} MiB upload pieces, best of "
        f"{s['rounds']} round(s); {summary['machine']['cpus']} CPUs, Python {summary['machine']['python']};"
        f"\nmailslot serve over TLS 1.3 on loopback, SQLite synchronous=FULL, filesystem blob store "
        f"(fsync per piece)"
    )
    header = ["phase", "MiB/s", "seconds", "÷ bare", f"≥{TARGET_RATIO}", "busy server/client", "others"]
    rows = []
    for name, label in PHASES.items():
        best, ratio = summary["best"][name], summary["ratios"][name]
        rows.append(
            [
                label,
                f"{best['mib_per_s']:.1f}",
                f"{best['seconds']:.2f}",
                f"{ratio:.3f}",
                _report._yes(ratio >= TARGET_RATIO) if name in MEASURED else "",
                f"{best['server_busy']:.0%}/{best['client_busy']:.0%}" if name in NETWORK else "",
                f"{best['others_cores']:.2f}" if name in NETWORK else "",
            ]
        )
    ceiling = summary["of_https_ceiling"]
    parts = [
        head,
        "",
        _table(header, rows),
        "",
        f"share of the HTTPS ceiling: upload {ceiling['upload']:.2f}, download {ceiling['download']:.2f}",
        "busy = CPU time / wall time of each process (all threads; the client is this process; the",
        "upload ceiling's server is the bare app); others = cores busy with anything else meanwhile",
    ]
    others = max(summary["best"][name]["others_cores"] for name in NETWORK)
    if others >= BUSY_OTHERS:
        parts.append(
            f"NOTE: other work kept up to {others:.1f} of {summary['machine']['cpus']} cores busy during"
            " the network phases:\nthey got less CPU than the in-process passes, so their ratios read low"
        )
    for name, errors in summary.get("server_log_errors", {}).items():
        if errors:
            shown = "\n  ".join(sorted(set(errors))[:5])
            parts += ["", f"{name} server logged {len(errors)} error(s) during the run; distinct:\n  {shown}"]
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="mailslot attachment benchmark (see bench/README.md)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK.size_mib} MiB, {QUICK.rounds} round: does it run?"
    )
    parser.add_argument("--size", type=int, metavar="MIB", help=f"file size in MiB (default {FULL.size_mib})")
    parser.add_argument("--rounds", type=int, help=f"rounds, the best reported (default {FULL.rounds})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    if args.size is not None and not 1 <= args.size <= 4096:
        parser.error("--size is 1 to 4096 MiB")
    if args.rounds is not None and not 1 <= args.rounds <= 10:
        parser.error("--rounds is 1 to 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    profile = Profile(base.name, args.size or base.size_mib, args.rounds or base.rounds)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers and remove the temp dir.
    _report.unwind_on_sigterm()
    summary: dict[str, Any] = {
        "bench": "attachments",
        "profile": profile.name,
        "machine": _report.machine(),
        "settings": {
            "size_mib": profile.size_mib,
            "rounds": profile.rounds,
            "chunk_bytes": chunked.CHUNK_SIZE,
            "client_read_bytes": READ_SIZE,
            "piece_bytes": PIECE_SIZE,
            "sqlite_synchronous": "FULL",
            "blob_store": "filesystem (as shipped: fsync per piece)",
            "keystore_kdf": f"scrypt log2_n={CHEAP_KDF.log2_n}",
            "event_loop": "asyncio (as the mailslot command runs it)",
        },
    }
    with tempfile.TemporaryDirectory(prefix="mailslot-bench-attach-") as tmp:
        summary.update(asyncio.run(run_rounds(profile, Path(tmp))))
    summarise(summary)
    print(render(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
