"""Server logs: one JSON object per line (or plain text on a terminal), never content or keys.

``configure_logging`` installs one handler on the root logger, for mailslot's loggers and
uvicorn's alike (the runner gives uvicorn no handlers of its own and turns its access log off).
Every record passes ``RedactFilter`` first, which replaces

* any ``bytes`` (message bodies, wrapped keys, signatures are all bytes on the server) in the
  message's arguments or in ``extra`` fields,
* any ``extra`` field or mapping key named like a secret (``body``, ``key``, ``wrapped_key``,
  ``signature``, ``authorization``, ``passphrase``, ``token``...), and any argument that
  follows such a name among the arguments (``"< %s: %s", "authorization", value``: the
  request headers uvicorn's WebSocket layer logs at debug level),
* WebSocket frames (which uvicorn's WebSocket layer logs at debug level, with their payload)

by a marker that says only how long the value was. ``AccessLog`` writes one line per request
(``mailslot.access``) with the method, the route template, the status and the duration:
never the path as sent (it may hold a blob id, which is a read capability), the query string,
a header or the body.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.frames import Frame

__all__ = [
    "SECRET_WORDS",
    "AccessLog",
    "JsonFormatter",
    "RedactFilter",
    "TextFormatter",
    "configure_logging",
]

LOG_FORMATS = ("auto", "json", "text")
# A field (or mapping key) is secret if one of its words (split on "_" and "-") is one of these.
SECRET_WORDS = frozenset(
    {"body", "key", "keys", "signature", "authorization", "passphrase", "password", "token", "secret"}
)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}
_MAX_DEPTH = 4

access_log = logging.getLogger("mailslot.access")


def is_secret_name(name: str) -> bool:
    return any(word in SECRET_WORDS for word in name.lower().replace("-", "_").split("_"))


def _redacted(value: Any, depth: int = 0) -> Any:
    """``value`` with bytes, frames and secret-named mapping entries replaced by markers."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes redacted>"
    if isinstance(value, Frame):
        return f"<{value.opcode.name} frame, {len(value.data)} bytes>"
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            k: "<redacted>" if isinstance(k, str) and is_secret_name(k) else _redacted(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redacted(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_redacted(v, depth + 1) for v in value)
    return value


def _after_secret_names(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with every value that follows a secret-named string replaced (a header pair)."""
    if not any(isinstance(a, str) and is_secret_name(a) for a in args[:-1]):
        return args
    return tuple(
        "<redacted>" if i and isinstance(args[i - 1], str) and is_secret_name(args[i - 1]) else arg
        for i, arg in enumerate(args)
    )


class RedactFilter(logging.Filter):
    """Replace bytes, WebSocket frames and secret-named fields in a record before it is
    formatted (see the module docstring). Install it on a handler: it then sees the records
    of every logger below the one the handler is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, bytes | bytearray | memoryview):
            record.msg = _redacted(record.msg)
        if isinstance(record.args, tuple):
            record.args = _after_secret_names(record.args)
        if record.args:
            record.args = _redacted(record.args)
        for name, value in list(vars(record).items()):
            if name in _STANDARD:
                continue
            if is_secret_name(name):
                setattr(record, name, "<redacted>")
            else:
                setattr(record, name, _redacted(value))
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _json_default(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes redacted>"  # the filter does this first; never print bytes
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    then the record's ``extra`` fields, and ``exception`` with the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in _extra_fields(record).items():
            entry.setdefault(name, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=_json_default)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value...`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = " ".join(f"{k}={_json_default(v)}" for k, v in _extra_fields(record).items())
        return f"{line} {extra}" if extra else line


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record, redacted, to ``stream`` (stderr) as JSON or text, from ``level``.

    ``fmt`` is ``json``, ``text`` or ``auto`` (text on a terminal, JSON otherwise, e.g. under
    systemd or in a container). Replaces a handler an earlier call installed; returns the new
    one (tests remove it again)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter())
    handler.set_name("mailslot")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "mailslot"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


class AccessLog:
    """ASGI middleware: one ``mailslot.access`` line per HTTP request or WebSocket session
    (method, route template, status, duration), and the same facts to ``observe`` (metrics).

    The status of a WebSocket session is 101 once accepted, else its refusal's; 0 means the
    client went away before any answer."""

    def __init__(self, app: ASGIApp, observe: Callable[[str, int], None] | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def tracked(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in {"http.response.start", "websocket.http.response.start"}:
                status = message["status"]
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and not status:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            status = status or 500
            raise
        finally:
            self._finished(scope, status, time.perf_counter() - started)

    def _finished(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        if self.observe is not None:
            self.observe(route, status)
        if access_log.isEnabledFor(logging.INFO):
            method = scope.get("method", "WS")
            ms = round(seconds * 1000, 1)
            access_log.info(
                "%s %s %d %.1fms",
                method,
                route,
                status,
                ms,
                extra={"method": method, "route": route, "status": status, "duration_ms": ms},
            )
