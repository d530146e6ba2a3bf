"""The two servers the benchmark drives, each in its own process on a loopback port.

* ``mailslot serve`` on a fresh data directory made by ``mailslot server init``;
* ``bench/bare_app.py``: a raw ASGI app run by the same runner code (same certificate, key,
  uvicorn settings and listening socket), the baseline.

Both are started with the same interpreter as the benchmark. ``ServerProcess.cpu_seconds``
reads the process's user+system time from ``/proc`` (every thread, so the SQLite worker thread
counts too), which lets the report say whether the server or the load generator was saturated.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mailslot.server.config import ServerConfig, load_config, write_config

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# A benchmark measures capacity, not the per-device limiter refusing a flood from few devices.
# "2025-01-01 12:00:00,000 ERROR name message" (mailslot serve) or "ERROR:    message" (uvicorn).
_LEVEL = re.compile(r"^(?:\S+ \S+ )?(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)(?::| )")
UNLIMITED_RATE = {"rate_per_device_per_s": 1e9, "rate_burst": 1_000_000_000}


def free_port() -> int:
    """A port that was free a moment ago: bind to port 0, read it, close."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tls_context(ca: Path) -> ssl.SSLContext:
    """The client side: TLS 1.3, the server's self-signed certificate as the only anchor."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _tool(name: str) -> str:
    """A console script of the running virtual environment (``.venv/bin/mailslot``)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(f"{path} not found: run the bench with the project's .venv/bin/python")
    return str(path)


@dataclass
class ServerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux ``/proc``); NaN elsewhere."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_errors(self) -> list[str]:
        """The ERROR entries of the server's log, without timestamps, each with the last line
        of its traceback (the exception), so a run that "worked" while the server failed says so.
        """
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        errors = []
        for i, line in enumerate(lines):
            level = _LEVEL.search(line)
            if level is None or level["level"] != "ERROR":
                continue
            block = list(itertools.takewhile(lambda t: _LEVEL.search(t) is None, lines[i + 1 :]))
            errors.append(line[level.end() :].strip() + (f" -> {block[-1].strip()}" if block else ""))
        return errors

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it is still there."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT_S)


def prepare_data_dir(root: Path, synchronous: str) -> ServerConfig:
    """``mailslot server init`` into ``root/data``, then lift the per-device rate limit and open
    registration (benchmark accounts register without invites)."""
    data_dir = root / "data"
    subprocess.run(
        [_tool("mailslot"), "server", "init", "--data-dir", str(data_dir), "--port", "0"],
        check=True,
        capture_output=True,
    )
    config = load_config(data_dir).with_overrides(
        **UNLIMITED_RATE, sqlite_synchronous=synchronous, registration="open"
    )
    write_config(config)
    return config


def _spawn(name: str, argv: list[str], port: int, log_dir: Path) -> ServerProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return ServerProcess(name, popen, f"https://{HOST}:{port}", log_path)


def _wait_ready(server: ServerProcess, ca: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(verify=tls_context(ca), timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.popen.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if client.get(server.url + "/health").status_code == 200:
                    return
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not start; last lines of its log:\n{server.log_tail()}")


def start_mailslot(config: ServerConfig, log_dir: Path) -> ServerProcess:
    """``mailslot serve`` on a free port, logging warnings only (no per-request access log)."""
    port = free_port()
    argv = [_tool("mailslot"), "serve", "--data-dir", str(config.data_dir), "--port", str(port)]
    server = _spawn("mailslot", [*argv, "--log-level", "warning", "--log-format", "text"], port, log_dir)
    _wait_ready(server, config.cert_path)
    return server


def start_baseline(config: ServerConfig, log_dir: Path) -> ServerProcess:
    """``bench/bare_app.py`` with the data directory's certificate and the runner's settings."""
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "bare_app.py"), "--data-dir", str(config.data_dir)]
    server = _spawn("baseline", [*argv, "--port", str(port), "--log-level", "warning"], port, log_dir)
    _wait_ready(server, config.cert_path)
    return server
