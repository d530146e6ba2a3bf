"""HTTP and WebSocket I/O to one mailslot server, with every request signed by the device.

This is the I/O edge of the client: foreign exceptions (httpx, websockets, ssl, OSError) are
translated here and nowhere else. A server error body becomes the same ``MailslotError`` class
the server raised (``errors.from_wire``); a failure to connect becomes ``NetworkError`` naming
the URL. TLS 1.3 is the minimum; a CA file, when given, is the only trust anchor (a private
server's self-signed certificate), otherwise the system's trust store is used.

The signature (``protocol.auth``) covers the method, the target exactly as sent (path with
query) and the SHA-256 of the exact body bytes sent, so the body is encoded once, signed, and
those same bytes go on the wire.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from mailslot import errors
from mailslot.errors import InputError, NetworkError, ServerError
from mailslot.protocol import auth, crypto, wire
from mailslot.protocol.identity import DeviceKeys

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
MAX_FRAME = 128 * 1024 * 1024  # a 64 MiB body, base64 in JSON, with room to spare


def now_ms() -> int:
    """The device clock in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def normalize_server(url: str) -> str:
    """``https://host[:port][/prefix]`` without a trailing slash; anything else is refused."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise InputError(f"invalid server URL {url!r}: expected https://host[:port]")
    return url


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """A client TLS context: TLS 1.3 or newer, certificate and host name checked."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(f"cannot load the CA certificate {ca}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class Transport:
    """Signed JSON requests and the WebSocket stream to one server, as one device."""

    def __init__(
        self,
        server: str,
        keys: DeviceKeys,
        *,
        ca: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = normalize_server(server)
        self._keys = keys
        self._ssl = tls_context(ca)
        self._prefix = urlsplit(self.server).path
        self._http = httpx.AsyncClient(verify=self._ssl, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _authorization(self, method: str, target: str, body: bytes) -> str:
        sig = auth.sign_request(
            self._keys,
            method,
            target,
            body,
            now_ms=now_ms(),
            nonce=crypto.random_bytes(auth.NONCE_SIZE),
        )
        return sig.to_header()

    async def call(
        self,
        method: str,
        path: str,
        kind: type[T],
        *,
        body: Any = None,
        query: Mapping[str, str | int] | None = None,
        signed: bool = True,
        timeout: float | None = None,
    ) -> T:
        """Send one request and decode a success body as ``kind``; raise the server's error."""
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        content = wire.encode(body) if body is not None else b""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            headers["Authorization"] = self._authorization(method, target, content)
        url = self.server[: len(self.server) - len(self._prefix)] + target
        try:
            response = await self._http.request(
                method,
                url,
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach {url}: {_describe(exc)}") from exc
        if response.status_code >= 400:
            raise _error_from(response.status_code, response.content)
        return _decode_response(response.content, kind)

    @asynccontextmanager
    async def websocket(self) -> AsyncIterator[ClientConnection]:
        """The device's signed WebSocket (``GET /v1/ws``, empty body)."""
        target = self._prefix + "/v1/ws"
        url = "wss://" + self.server.removeprefix("https://").removesuffix(self._prefix) + target
        headers = {"Authorization": self._authorization("GET", target, b"")}
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                ssl=self._ssl,
                max_size=MAX_FRAME,
                open_timeout=DEFAULT_TIMEOUT,
            )
        except InvalidStatus as exc:
            raise _error_from(exc.response.status_code, bytes(exc.response.body or b"")) from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise NetworkError(f"cannot open the WebSocket {url}: {_describe(exc)}") from exc
        try:
            yield ws
        finally:
            await ws.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError | ssl.CertificateError) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text


def _error_from(status: int, content: bytes) -> errors.MailslotError:
    try:
        body: Any = msgspec.json.decode(content) if content else None
    except msgspec.DecodeError:
        body = None
    return errors.from_wire(status, body)


def _decode_response(content: bytes, kind: type[T]) -> T:
    try:
        return wire.decode(content, kind)
    except InputError as exc:
        raise ServerError(f"the server sent a malformed response: {exc.message}") from exc
