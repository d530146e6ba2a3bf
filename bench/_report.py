"""Turning measurements into the JSON summary and the printed tables.

The summary is plain JSON-ready data (``dict``/``list``/numbers); the tables are rendered from
it, so what is printed and what is saved with ``--json`` cannot disagree.
"""

from __future__ import annotations

import math
import os
import platform
import signal
from typing import Any

Summary = dict[str, Any]

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_SEAL_RATIO = 1.3
BUSY = 0.7  # a closed-loop side this busy (in CPU time over wall time) is taken as the limit


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _throughput(summary: Summary) -> str:
    header = [
        "devices",
        "baseline req/s",
        "relay accepted/s",
        "ratio",
        f"≥{TARGET_RATIO}",
        "deliveries/s",
        "msgs fully delivered/s",
        "errors",
    ]
    rows = []
    for t in summary["throughput"]:
        rows.append(
            [
                str(t["devices"]),
                f"{t['baseline_rps']:.0f}",
                f"{t['accepted_per_s']:.0f}",
                f"{t['ratio']:.2f}",
                _yes(t["ratio"] >= TARGET_RATIO),
                f"{t['deliveries_per_s']:.0f}",
                f"{t['messages_delivered_per_s']:.0f}",
                str(t["errors"]),
            ]
        )
    return _table(header, rows)


def limited_by(server_busy: float, client_busy: float, cores: int) -> str:
    """A rough reading of what held a closed-loop run back, from the CPU each side used.

    A side that is busy most of the time is the limit (an event loop never reaches 100%: it
    also waits on its sockets); if neither is, requests were waiting on something else, such as
    the disk or a serialised storage thread.
    """
    if max(server_busy, client_busy) >= BUSY:
        return "server CPU" if server_busy >= client_busy else "client CPU"
    if server_busy + client_busy >= BUSY * cores:
        return "both cores"
    return "waiting (I/O)"


def _cpu(summary: Summary) -> str:
    cores = summary["machine"]["cpus"] or 1
    header = [
        "devices",
        "body KB",
        "server µs/req: baseline",
        "relay send",
        "base/relay",
        "per delivery",
        "busy server/client: baseline",
        "relay",
        "limited by: baseline",
        "relay",
    ]
    rows = []
    for t in summary["throughput"]:
        c = t["cpu"]
        rows.append(
            [
                str(t["devices"]),
                f"{t['request_bytes'] / 1024:.1f}",
                f"{c['baseline_server_us']:.0f}",
                f"{c['relay_server_us']:.0f}",
                f"{c['baseline_server_us'] / c['relay_server_us']:.2f}",
                f"{c['delivery_server_us']:.0f}",
                f"{c['baseline_server_busy']:.0%}/{c['baseline_client_busy']:.0%}",
                f"{c['relay_server_busy']:.0%}/{c['relay_client_busy']:.0%}",
                limited_by(c["baseline_server_busy"], c["baseline_client_busy"], cores),
                limited_by(c["relay_server_busy"], c["relay_client_busy"], cores),
            ]
        )
    return _table(header, rows)


def _latency(summary: Summary) -> str:
    header = [
        "devices",
        "send rate/s",
        "deliveries",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        f"p99<{TARGET_P99_MS:.0f}",
        "accept p50 ms",
        "accept p99 ms",
        "lost",
    ]
    rows = []
    for lat in summary["latency"]:
        rows.append(
            [
                str(lat["devices"]),
                f"{lat['rate']:.0f}",
                str(lat["received"]),
                f"{lat['p50_ms']:.1f}",
                f"{lat['p95_ms']:.1f}",
                f"{lat['p99_ms']:.1f}",
                f"{lat['max_ms']:.1f}",
                _yes(lat["p99_ms"] < TARGET_P99_MS),
                f"{lat['accept_p50_ms']:.1f}",
                f"{lat['accept_p99_ms']:.1f}",
                str(lat["lost"]),
            ]
        )
    return _table(header, rows)


def _seal(summary: Summary) -> str:
    s = summary["seal_cost"]
    by_n = ", ".join(f"{n} dev {us:.0f}" for n, us in s["seal_us"].items())
    return (
        f"seal_message, {s['size']} B, µs per call: {by_n}\n"
        f"per recipient device (slope): {s['per_device_us']:.1f} µs; bare hpke_seal of a 32-byte key: "
        f"{s['hpke_us']:.1f} µs; ratio {s['ratio']:.2f} (target ≤ {TARGET_SEAL_RATIO}: "
        f"{_yes(s['ratio'] <= TARGET_SEAL_RATIO)})"
    )


def render(summary: Summary) -> str:
    s = summary["settings"]
    head = (
        f"mailslot relay benchmark ({summary['profile']}): {summary['machine']['cpus']} CPUs, "
        f"Python {summary['machine']['python']}, {s['message_bytes']} B messages, "
        f"{s['concurrency']} connections, {s['senders']} sender devices, recipients "
        f"{s['recipient_layout']}, sqlite synchronous={s['sqlite_synchronous']}"
    )
    parts = [head, ""]
    if "throughput" in summary:
        parts += [
            f"Throughput: best of {s['rounds']} round(s) of {s['messages']} messages per device count",
            _throughput(summary),
            "",
            "Where the time went (server µs/req = server CPU, all threads; busy = CPU / wall time)",
            _cpu(summary),
            "",
        ]
    if "latency" in summary:
        rate = s["latency_rate"] if isinstance(s["latency_rate"], str) else f"{s['latency_rate']:g} msg/s"
        parts += [
            f"Latency: sending at {rate}, recipients on the WebSocket, each delivery",
            _latency(summary),
            "",
        ]
    parts += ["Client cost per recipient device", _seal(summary)]
    for name, errors in summary.get("server_log_errors", {}).items():
        if errors:
            shown = "\n  ".join(sorted(set(errors))[:5])
            parts += ["", f"{name} server logged {len(errors)} error(s) during the run; distinct:\n  {shown}"]
    return "\n".join(parts)


def machine() -> dict[str, Any]:
    """What the figures were measured on, for the JSON summary."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def unwind_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``finally`` blocks stop servers and remove temp dirs."""
    signal.signal(signal.SIGTERM, _interrupt)
