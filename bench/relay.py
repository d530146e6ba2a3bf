"""Relay benchmark: a real ``mailslot serve`` over TLS on loopback, driven by real clients.

Measures, in one run so that every figure has a baseline taken on the same noisy machine:

1. baseline req/s: the same signed request bytes posted to a bare ASGI app (bench/bare_app.py)
   served by the same runner, certificate and uvicorn settings;
2. relay accepted/s (201s) for 1 KB messages to 2, 4 and 8 recipient devices, as a ratio of (1),
   and deliveries/s as the recipient devices fetch and ack their queues;
3. delivery latency (p50/p95/p99) at half the peak accepted rate, recipients on the WebSocket;
4. client cost of ``seal_message`` per recipient device against one bare ``hpke_seal``.

This is a benchmark, not a test: it asserts nothing about speed. See bench/README.md.

    .venv/bin/python bench/relay.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import _latency
import _load
import _report
import _seal_cost
import _servers
from _load import Account, Prepared
from _servers import ServerProcess

T = TypeVar("T")
SENDERS = 4
SETTLE_S = 1.0


@dataclass(frozen=True)
class Profile:
    name: str
    messages: int  # per throughput round and device count
    rounds: int  # throughput rounds per device count; the best is reported
    latency_s: float  # length of each latency run at the steady rate
    latency_max: int  # cap on messages per latency run
    seal_rounds: int
    seal_calls: int


QUICK = Profile("quick", messages=300, rounds=1, latency_s=3.0, latency_max=600, seal_rounds=20, seal_calls=5)
FULL = Profile(
    "full", messages=3000, rounds=2, latency_s=10.0, latency_max=6000, seal_rounds=60, seal_calls=10
)


@dataclass
class Usage:
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float

    def server_us(self, requests: int) -> float:
        return self.server_cpu_s / max(requests, 1) * 1e6

    def busy(self) -> tuple[float, float]:
        return self.server_cpu_s / self.wall_s, self.client_cpu_s / self.wall_s


async def measured(server: ServerProcess, work: Callable[[], Awaitable[T]]) -> tuple[T, Usage]:
    """Run ``work`` and report the wall time and the CPU the server and this process used."""
    server_before, client_before, start = server.cpu_seconds(), time.process_time(), time.perf_counter()
    result = await work()
    wall = time.perf_counter() - start
    usage = Usage(wall, server.cpu_seconds() - server_before, time.process_time() - client_before)
    return result, usage


def recipients_for(devices: int) -> list[Account]:
    """``devices`` recipient devices as accounts of two devices each (one of one if odd)."""
    sizes = [2] * (devices // 2) + [1] * (devices % 2)
    return [Account.generate(f"r{devices}-{i}", size) for i, size in enumerate(sizes)]


class Bench:
    """The network phases, against a relay and a baseline server that are already running."""

    def __init__(
        self, relay: Server, baseline: Server, ca: Path, args: argparse.Namespace, profile: Profile
    ) -> None:
        self.relay, self.baseline, self.ca = relay, baseline, ca
        self.args, self.profile = args, profile
        self.senders = [Account.generate(f"s{i}", 1) for i in range(SENDERS)]

    async def setup(self) -> None:
        await self.baseline.conns.warm_up()
        await self.relay.conns.warm_up()
        for account in self.senders:
            await _load.register(self.relay.conns, account)

    def prepare(self, recipients: list[Account], count: int) -> list[Prepared]:
        sends = _load.seal_sends(self.senders, recipients, count, self.args.size)
        return _load.presign(sends)

    async def closed_run(self, server: Server, requests: list[Prepared]) -> tuple[_load.RunResult, Usage]:
        return await measured(server.process, lambda: _load.run_closed(server.conns, requests))

    async def one_round(self, recipients: list[Account], flip: bool) -> dict[str, Any]:
        """Baseline and relay on the same bytes (order alternating by round), then draining."""
        requests = self.prepare(recipients, self.profile.messages)
        devices = [k for a in recipients for k in a.devices]
        if flip:
            relay, relay_use = await self.closed_run(self.relay, requests)
            base, base_use = await self.closed_run(self.baseline, requests)
        else:
            base, base_use = await self.closed_run(self.baseline, requests)
            relay, relay_use = await self.closed_run(self.relay, requests)
        count = self.profile.messages
        (_, delivered), drain_use = await measured(
            self.relay.process, lambda: _load.drain(self.relay.conns, devices, count)
        )
        accepted = relay.statuses[201]
        return {
            "baseline_rps": base.rate(200),
            "accepted_per_s": relay.rate(201),
            "deliveries_per_s": delivered / drain_use.wall_s,
            "messages_delivered_per_s": delivered / len(devices) / drain_use.wall_s,
            "errors": (count - accepted) + (count - base.statuses[200]) + (count * len(devices) - delivered),
            "statuses": {"baseline": dict(base.statuses), "relay": dict(relay.statuses)},
            "request_bytes": sum(len(r.body) for r in requests) / len(requests),
            "cpu": {
                "baseline_server_us": base_use.server_us(count),
                "relay_server_us": relay_use.server_us(accepted),
                "delivery_server_us": drain_use.server_us(delivered),
                "baseline_server_busy": base_use.busy()[0],
                "baseline_client_busy": base_use.busy()[1],
                "relay_server_busy": relay_use.busy()[0],
                "relay_client_busy": relay_use.busy()[1],
            },
        }

    async def throughput(self, devices: int, recipients: list[Account]) -> dict[str, Any]:
        rounds = [await self.one_round(recipients, flip=i % 2 == 1) for i in range(self.profile.rounds)]
        best = max(rounds, key=lambda r: r["accepted_per_s"])
        best_base = max(r["baseline_rps"] for r in rounds)
        return {
            **best,
            "devices": devices,
            "baseline_rps": best_base,
            "ratio": best["accepted_per_s"] / best_base,
            "deliveries_per_s": max(r["deliveries_per_s"] for r in rounds),
            "messages_delivered_per_s": max(r["messages_delivered_per_s"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds),
            "rounds": rounds,
        }

    async def latency(self, devices: int, recipients: list[Account], peak: float) -> dict[str, Any]:
        rate = self.args.latency_rate or peak / 2
        count = max(10, min(int(rate * self.profile.latency_s), self.profile.latency_max))
        requests = self.prepare(recipients, count)
        keys = [k for a in recipients for k in a.devices]
        context = _servers.tls_context(self.ca)
        got = await _latency.measure(self.relay.conns, context, keys, requests, rate)
        pct = _report.percentile
        return {
            "devices": devices,
            "rate": rate,
            "messages": count,
            "expected": got.expected,
            "received": len(got.delivery_ms),
            "lost": got.expected - len(got.delivery_ms),
            "p50_ms": pct(got.delivery_ms, 50),
            "p95_ms": pct(got.delivery_ms, 95),
            "p99_ms": pct(got.delivery_ms, 99),
            "max_ms": max(got.delivery_ms, default=float("nan")),
            "accept_p50_ms": pct(got.accept_ms, 50),
            "accept_p99_ms": pct(got.accept_ms, 99),
            "statuses": got.statuses,
            "errors": got.errors[:10],
        }

    async def run(self) -> dict[str, Any]:
        await self.setup()
        throughput, latency = [], []
        for devices in self.args.devices:
            recipients = recipients_for(devices)
            for account in recipients:
                await _load.register(self.relay.conns, account)
            result = await self.throughput(devices, recipients)
            throughput.append(result)
            print(
                f"  {devices} devices: {result['accepted_per_s']:.0f} accepted/s "
                f"(baseline {result['baseline_rps']:.0f} req/s)",
                file=sys.stderr,
            )
            latency.append(await self.latency(devices, recipients, result["accepted_per_s"]))
            await asyncio.sleep(SETTLE_S)  # let the server finish the last acks before the next phase
        return {"throughput": throughput, "latency": latency}


@dataclass
class Server:
    """A running server process and the client connections to it."""

    process: ServerProcess
    conns: _load.Connections


async def network_phases(args: argparse.Namespace, profile: Profile, work_dir: Path) -> dict[str, Any]:
    config = _servers.prepare_data_dir(work_dir, args.synchronous)
    context = _servers.tls_context(config.cert_path)
    processes: list[ServerProcess] = []
    servers: list[Server] = []
    try:
        for start in (_servers.start_mailslot, _servers.start_baseline):
            process = start(config, work_dir)
            processes.append(process)
            servers.append(Server(process, _load.Connections(process.url, context, args.concurrency)))
        results = await Bench(servers[0], servers[1], config.cert_path, args, profile).run()
        results["server_log_errors"] = {p.name: p.log_errors() for p in processes}
        return results
    except BaseException:
        for process in processes:
            print(f"--- {process.name} log (last lines) ---\n{process.log_tail()}", file=sys.stderr)
        raise
    finally:
        for server in servers:
            await server.conns.aclose()
        for process in processes:
            process.stop()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """On uvloop when installed (it is, with uvicorn[standard]): a cheaper load generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="mailslot relay benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="small counts; finishes in under a minute")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary as JSON")
    parser.add_argument("--concurrency", type=int, default=16, help="client connections (default 16)")
    parser.add_argument("--devices", type=int, nargs="+", default=[2, 4, 8], help="recipient devices")
    parser.add_argument("--size", type=int, default=1024, help="message text bytes (default 1024)")
    parser.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="the server's sqlite_synchronous setting (default FULL, as shipped)",
    )
    parser.add_argument("--messages", type=int, help="override messages per throughput round")
    parser.add_argument(
        "--latency-rate", type=float, help="send rate of the latency phase, msg/s (default: half the peak)"
    )
    args = parser.parse_args(argv)
    if not all(1 <= d <= 16 for d in args.devices) or len(set(args.devices)) != len(args.devices):
        parser.error("--devices are distinct counts from 1 to 16")
    if args.concurrency < 1:
        parser.error("--concurrency is at least 1")
    return args


def summary_head(args: argparse.Namespace, profile: Profile) -> dict[str, Any]:
    return {
        "bench": "relay",
        "profile": profile.name,
        "machine": _report.machine(),
        "settings": {
            "message_bytes": args.size,
            "concurrency": args.concurrency,
            "senders": SENDERS,
            "recipient_layout": "N/2 accounts x 2 devices (N odd: one more account of 1 device)",
            "sqlite_synchronous": args.synchronous,
            "messages": profile.messages,
            "rounds": profile.rounds,
            "latency_s": profile.latency_s,
            "latency_rate": args.latency_rate or "half the peak accepted rate",
            "rate_limit": "lifted (bench config)",
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.messages:
        profile = dataclasses.replace(profile, messages=args.messages)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers and remove the temp dir.
    _report.unwind_on_sigterm()
    summary = summary_head(args, profile)
    print("sealing cost...", file=sys.stderr)
    seal = _seal_cost.measure(profile.seal_rounds, profile.seal_calls, args.size)
    summary["seal_cost"] = {
        "size": args.size,
        "seal_us": seal.seal_us,
        "hpke_us": seal.hpke_us,
        "per_device_us": seal.per_device_us,
        "ratio": seal.ratio,
    }
    print("network phases...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mailslot-bench-") as tmp:
        summary.update(run_async(network_phases(args, profile, Path(tmp))))
    print(_report.render(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
