"""Scale-out benchmark: the relay's throughput and delivery phases on three deployments.

1. ``sqlite``: one ``mailslot serve`` on SQLite (the shipped default, ``synchronous=FULL``);
2. ``postgres``: one node on PostgreSQL;
3. ``postgres x2``: two nodes on one PostgreSQL database with the Redis wake-up bus; the
   senders' requests are split between the nodes, and half the recipient devices fetch their
   queues from each.

The load is bench/relay.py's: 1 KB messages, sealed and signed before the clock starts, posted
closed loop over ``--concurrency`` keep-alive connections (split evenly between the nodes),
then every recipient device drains its queue (fetch a page, ack it while fetching the next).
The same sealed request bytes go to every deployment in a round (each has its own database, so
the same accounts and message ids are new to each), and the order of the deployments rotates
from round to round.

The cost figure is the CPU time (user + system, from ``/proc``) that all the deployment's
``mailslot serve`` processes spent on the send phase and the drain phase together, per thousand
messages delivered to every recipient device. PostgreSQL's and Redis's own CPU is reported
beside it (backends of the run's database, and the Redis server), since on PostgreSQL work moves
out of the server process. This is a benchmark, not a test: it asserts nothing about speed.
See bench/README.md.

    .venv/bin/python bench/scaleout.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import _load
import _report
import _servers
import psycopg
import redis
import relay
from _load import Account, Prepared
from _servers import ServerProcess
from psycopg import sql

from mailslot.protocol.identity import DeviceKeys
from mailslot.server.config import ServerConfig, load_config, write_config

POSTGRES_URL = os.environ.get("MAILSLOT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MAILSLOT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TARGET_CPU_RATIO = 1.25  # two nodes' server CPU per message over one node's, same engine
TARGET_DELIVERED_RATIO = 0.70  # PostgreSQL node's delivered/s over the SQLite node's
CONNECT_TIMEOUT_S = 3
WARM_UP_MESSAGES = 200  # per deployment, before the measured rounds


@dataclass(frozen=True)
class Profile:
    name: str
    messages: int  # per round and deployment
    rounds: int  # the best round of each deployment is reported


QUICK = Profile("quick", messages=300, rounds=1)
FULL = Profile("full", messages=3000, rounds=3)


# --- PostgreSQL and Redis --------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _admin() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


@contextlib.contextmanager
def fresh_database(tag: str) -> Iterator[str]:
    """A new database ``mailslot_bench_<tag>_<hex>`` for the block, dropped after it."""
    name = f"mailslot_bench_{tag}_{secrets.token_hex(4)}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(POSTGRES_URL, name)
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def services_unavailable() -> str | None:
    """Why PostgreSQL or Redis cannot be used, or None."""
    try:
        with _admin() as admin:
            admin.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc}); set MAILSLOT_BENCH_POSTGRES_URL"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {REDIS_URL} is not reachable ({exc}); set MAILSLOT_BENCH_REDIS_URL"
    finally:
        client.close()
    return None


def clean_redis(prefix: str) -> None:
    """The bus keeps nothing in Redis; remove anything under the run's prefix all the same."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        with contextlib.suppress(redis.RedisError, OSError):
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
    finally:
        client.close()


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServiceCpu:
    """CPU seconds used by the PostgreSQL backends of some databases and by the Redis server.

    Only meaningful when both run on this machine: the backends are found in
    ``pg_stat_activity`` and read from ``/proc``; Redis reports its own (``INFO cpu``, the whole
    server). A backend that exits during a phase takes its CPU with it (an undercount). NaN when
    nothing could be read.
    """

    def __init__(self) -> None:
        self._admin = _admin()
        self._redis = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT_S)

    def sample(self, databases: list[str], with_redis: bool) -> dict[str, float]:
        seconds: dict[str, float] = {}
        if databases:
            rows = self._admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", (databases,)
            ).fetchall()
            for (pid,) in rows:
                cpu = _proc_cpu(pid)
                if cpu is not None:
                    seconds[f"pg:{pid}"] = cpu
        if with_redis:
            with contextlib.suppress(redis.RedisError, OSError):
                info = cast(dict[str, Any], self._redis.info("cpu"))
                seconds["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return seconds

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> float:
        if not after:
            return float("nan")
        return sum(value - before.get(key, 0.0) for key, value in after.items())

    def close(self) -> None:
        self._admin.close()
        self._redis.close()


# --- deployments -------------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Running nodes of one deployment and the load generator's connections to each."""

    key: str
    label: str
    database: str | None = None  # the PostgreSQL database name, if any
    uses_redis: bool = False
    processes: list[ServerProcess] = field(default_factory=list)
    conns: list[_load.Connections] = field(default_factory=list)

    def server_cpu(self) -> float:
        return sum(p.cpu_seconds() for p in self.processes)

    def check_alive(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited; last lines of its log:\n{process.log_tail()}")

    async def aclose(self) -> None:
        try:
            for conns in self.conns:
                await conns.aclose()
        finally:
            for process in self.processes:
                process.stop()


def node_config(root: Path, synchronous: str, **settings: object) -> ServerConfig:
    """``mailslot server init`` as bench/relay.py does it (rate limit lifted), plus ``settings``;
    no metrics listener (two nodes would want the same port, and it is not what is measured)."""
    config = _servers.prepare_data_dir(root, synchronous)
    config = load_config(config.data_dir).with_overrides(metrics=False, **settings)
    write_config(config)
    return config


def start_nodes(deployment: Deployment, configs: list[ServerConfig], concurrency: int) -> None:
    """One ``mailslot serve`` per config; the connections are split evenly among them."""
    per_node = max(1, concurrency // len(configs))
    for i, config in enumerate(configs):
        process = _servers.start_mailslot(config, config.data_dir.parent)
        process.name = f"{deployment.key}-{i + 1}"
        deployment.processes.append(process)
        context = _servers.tls_context(config.cert_path)
        deployment.conns.append(_load.Connections(process.url, context, per_node))


# --- measuring -----------------------------------------------------------------------------------------


@dataclass
class Round:
    accepted: int
    send_wall_s: float
    deliveries: int
    drain_wall_s: float
    server_cpu_s: float
    service_cpu_s: float
    errors: int

    def as_dict(self, devices: int) -> dict[str, float]:
        delivered = self.deliveries / devices  # messages that reached every recipient device
        per_k = 1000 / max(delivered, 1)
        return {
            "accepted": self.accepted,
            "accepted_per_s": self.accepted / self.send_wall_s,
            "deliveries_per_s": self.deliveries / self.drain_wall_s,
            "delivered_per_s": delivered / self.drain_wall_s,
            "end_to_end_per_s": delivered / (self.send_wall_s + self.drain_wall_s),
            "server_cpu_s_per_1k": self.server_cpu_s * per_k,
            "service_cpu_s_per_1k": self.service_cpu_s * per_k,
            "errors": self.errors,
        }


async def one_round(
    deployment: Deployment, requests: list[Prepared], devices: list[DeviceKeys], services: ServiceCpu | None
) -> Round:
    """Post ``requests`` (split among the nodes), then drain every device (split likewise)."""
    deployment.check_alive()
    nodes = len(deployment.conns)
    databases = [deployment.database] if deployment.database else []
    cpu_before = deployment.server_cpu()
    svc_before = services.sample(databases, deployment.uses_redis) if services and databases else {}
    start = time.perf_counter()
    runs = await asyncio.gather(
        *(_load.run_closed(conns, requests[i::nodes]) for i, conns in enumerate(deployment.conns))
    )
    send_wall = time.perf_counter() - start
    accepted = sum(run.statuses[201] for run in runs)
    start = time.perf_counter()
    drains = await asyncio.gather(
        *(_load.drain(conns, devices[i::nodes], accepted) for i, conns in enumerate(deployment.conns))
    )
    drain_wall = time.perf_counter() - start
    server_cpu = deployment.server_cpu() - cpu_before
    svc_after = services.sample(databases, deployment.uses_redis) if services and databases else {}
    deliveries = sum(count for _, count in drains)
    errors = (len(requests) - accepted) + (accepted * len(devices) - deliveries)
    service_cpu = ServiceCpu.spent(svc_before, svc_after) if databases else float("nan")
    return Round(accepted, send_wall, deliveries, drain_wall, server_cpu, service_cpu, errors)


def best_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Highest rates and lowest costs over the rounds (a shared machine only ever slows a run)."""
    return {
        "accepted_per_s": max(r["accepted_per_s"] for r in rounds),
        "deliveries_per_s": max(r["deliveries_per_s"] for r in rounds),
        "delivered_per_s": max(r["delivered_per_s"] for r in rounds),
        "end_to_end_per_s": max(r["end_to_end_per_s"] for r in rounds),
        "server_cpu_s_per_1k": min(r["server_cpu_s_per_1k"] for r in rounds),
        "service_cpu_s_per_1k": min(r["service_cpu_s_per_1k"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
    }


async def measure(
    deployments: list[Deployment], args: argparse.Namespace, profile: Profile
) -> dict[str, list[dict[str, float]]]:
    senders = [Account.generate(f"s{i}", 1) for i in range(relay.SENDERS)]
    recipients = relay.recipients_for(args.devices)
    devices = [k for a in recipients for k in a.devices]
    for deployment in deployments:
        for conns in deployment.conns:
            await conns.warm_up()
        for account in senders + recipients:
            await _load.register(deployment.conns[0], account)
    services = ServiceCpu() if any(d.database for d in deployments) else None
    results: dict[str, list[dict[str, float]]] = {d.key: [] for d in deployments}
    try:
        # Not measured: every node's first requests (database pool connections opening, statements
        # prepared after their first few uses) would otherwise count against the first round.
        sends = _load.seal_sends(senders, recipients, WARM_UP_MESSAGES, args.size)
        for deployment in deployments:
            await one_round(deployment, _load.presign(sends), devices, services)
        for number in range(profile.rounds):
            sends = _load.seal_sends(senders, recipients, profile.messages, args.size)
            shift = number % len(deployments)
            for deployment in deployments[shift:] + deployments[:shift]:
                requests = _load.presign(sends)  # fresh signatures: each node keeps its own nonces
                result = (await one_round(deployment, requests, devices, services)).as_dict(len(devices))
                results[deployment.key].append(result)
                print(
                    f"  round {number + 1} {deployment.label}: {result['accepted_per_s']:.0f} accepted/s, "
                    f"{result['delivered_per_s']:.0f} delivered/s, "
                    f"{result['server_cpu_s_per_1k']:.2f} CPU s/1k",
                    file=sys.stderr,
                )
                await asyncio.sleep(relay.SETTLE_S)
    finally:
        if services is not None:
            services.close()
    return results


async def run(args: argparse.Namespace, profile: Profile, work: Path, summary: dict[str, Any]) -> None:
    """Start the deployments, measure, and take everything down again (servers first, then
    the databases they use, then the Redis prefix), whatever happens."""
    missing = services_unavailable()
    if missing:
        summary["skipped"] = missing
        print(f"only SQLite: {missing}", file=sys.stderr)
    deployments: list[Deployment] = []
    async with contextlib.AsyncExitStack() as stack:

        def add(deployment: Deployment, configs: list[ServerConfig]) -> None:
            deployments.append(deployment)
            stack.push_async_callback(deployment.aclose)
            start_nodes(deployment, configs, args.concurrency)

        add(Deployment("sqlite", "sqlite, 1 node"), [node_config(work / "sqlite", args.synchronous)])
        if not missing:
            prefix = f"mailslot_bench_{secrets.token_hex(4)}"
            stack.callback(clean_redis, prefix)
            url = stack.enter_context(fresh_database("pg"))
            add(
                Deployment("postgres", "postgres, 1 node", database=urlsplit(url).path[1:]),
                [node_config(work / "pg", args.synchronous, database_url=url)],
            )
            url = stack.enter_context(fresh_database("pg2"))
            bus = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}prefix={prefix}"
            add(
                Deployment("postgres_x2", "postgres+redis, 2 nodes", urlsplit(url).path[1:], uses_redis=True),
                [
                    node_config(work / f"pg2-{n}", args.synchronous, database_url=url, bus_url=bus)
                    for n in "ab"
                ],
            )
        try:
            rounds = await measure(deployments, args, profile)
        except BaseException:
            for deployment in deployments:
                for process in deployment.processes:
                    print(f"--- {process.name} log (last lines) ---\n{process.log_tail()}", file=sys.stderr)
            raise
        summary["rounds"] = rounds
        summary["results"] = {key: best_of(r) for key, r in rounds.items()}
        summary["nodes"] = {d.key: len(d.processes) for d in deployments}
        summary["labels"] = {d.key: d.label for d in deployments}
        summary["server_log_errors"] = {
            p.name: p.log_errors() for d in deployments for p in d.processes if p.log_errors()
        }


# --- the report ----------------------------------------------------------------------------------------


def _ratio(summary: dict[str, Any], top: str, bottom: str, field_name: str) -> float | None:
    results = summary.get("results", {})
    if top not in results or bottom not in results:
        return None
    below = results[bottom][field_name]
    return results[top][field_name] / below if below else float("nan")


def render(summary: dict[str, Any]) -> str:
    header = [
        "deployment",
        "nodes",
        "accepted/s",
        "delivered/s",
        "deliveries/s",
        "end-to-end/s",
        "server CPU s/1k msgs",
        "+ postgres/redis CPU s/1k",
        "errors",
    ]
    rows = []
    for key, r in summary.get("results", {}).items():
        rows.append(
            [
                summary["labels"][key],
                str(summary["nodes"][key]),
                f"{r['accepted_per_s']:.0f}",
                f"{r['delivered_per_s']:.0f}",
                f"{r['deliveries_per_s']:.0f}",
                f"{r['end_to_end_per_s']:.0f}",
                f"{r['server_cpu_s_per_1k']:.2f}",
                f"{r['service_cpu_s_per_1k']:.2f}" if key != "sqlite" else "-",
                str(r["errors"]),
            ]
        )
    settings = summary["settings"]
    lines = [
        f"scale-out ({summary['profile']}: {settings['messages']} messages x {settings['rounds']} rounds, "
        f"{settings['message_bytes']} B, {settings['devices']} recipient devices, "
        f"{settings['concurrency']} connections, {summary['machine']['cpus']} CPUs; best round)",
        "",
        _report._table(header, rows),
        "",
    ]
    checks = [
        (
            "two-node server CPU per message / one-node PostgreSQL",
            _ratio(summary, "postgres_x2", "postgres", "server_cpu_s_per_1k"),
            TARGET_CPU_RATIO,
            False,
        ),
        (
            "PostgreSQL delivered/s / SQLite delivered/s",
            _ratio(summary, "postgres", "sqlite", "delivered_per_s"),
            TARGET_DELIVERED_RATIO,
            True,
        ),
        (
            "PostgreSQL end-to-end/s / SQLite end-to-end/s",
            _ratio(summary, "postgres", "sqlite", "end_to_end_per_s"),
            TARGET_DELIVERED_RATIO,
            True,
        ),
    ]
    ratio_rows = []
    for name, value, target, at_least in checks:
        if value is None:
            continue
        ok = value >= target if at_least else value <= target
        ratio_rows.append([name, f"{value:.2f}", f"{'≥' if at_least else '≤'} {target}", _report._yes(ok)])
    if ratio_rows:
        lines += [_report._table(["ratio", "value", "target", "met"], ratio_rows), ""]
    if summary.get("skipped"):
        lines.append(f"PostgreSQL deployments skipped: {summary['skipped']}")
    for name, errors in summary.get("server_log_errors", {}).items():
        lines.append(f"{name} logged {len(errors)} errors, first: {errors[0]}")
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="mailslot scale-out benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="small counts; well under a minute")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary as JSON")
    parser.add_argument("--concurrency", type=int, default=16, help="client connections in all (default 16)")
    parser.add_argument("--devices", type=int, default=4, help="recipient devices (default 4)")
    parser.add_argument("--size", type=int, default=1024, help="message text bytes (default 1024)")
    parser.add_argument("--messages", type=int, help="override messages per round")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="the SQLite node's sqlite_synchronous (default FULL, as shipped)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 16:
        parser.error("--devices is from 1 to 16")
    if args.concurrency < 2:
        parser.error("--concurrency is at least 2 (one connection per node)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    profile = Profile(profile.name, args.messages or profile.messages, args.rounds or profile.rounds)
    # SIGTERM unwinds like Ctrl-C: servers stopped, databases dropped, temp dir removed.
    _report.unwind_on_sigterm()
    summary: dict[str, Any] = {
        "bench": "scaleout",
        "profile": profile.name,
        "machine": _report.machine(),
        "settings": {
            "messages": profile.messages,
            "rounds": profile.rounds,
            "message_bytes": args.size,
            "devices": args.devices,
            "concurrency": args.concurrency,
            "senders": relay.SENDERS,
            "sqlite_synchronous": args.synchronous,
            "rate_limit": "lifted (bench config)",
        },
    }
    with tempfile.TemporaryDirectory(prefix="mailslot-scaleout-") as tmp:
        relay.run_async(run(args, profile, Path(tmp), summary))
    print(render(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
