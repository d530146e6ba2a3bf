"""HTTP and WebSocket I/O to one mailslot server, with every request signed by the device.

This is the I/O edge of the client: foreign exceptions (httpx, websockets, ssl, OSError) are
translated here and nowhere else. A server error body becomes the same ``MailslotError`` class
the server raised (``errors.from_wire``); a failure to connect becomes ``NetworkError`` naming
the URL. TLS 1.3 is the minimum; a CA file, when given, is the only trust anchor (a private
server's self-signed certificate), otherwise the system's trust store is used.

The signature (``protocol.auth``) covers the method, the target exactly as sent (path with
query) and the SHA-256 of the exact body bytes sent, so the body is encoded once, signed, and
those same bytes go on the wire.

A device the server says was removed (``DeviceRemoved``) is told so once: ``on_removed`` turns
the server's refusal into the error to raise (``alerts.explain_removal`` names who removed the
device and when) and ``removed`` then makes every later signed request fail at once, without
asking the server again.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from mailslot import errors
from mailslot.errors import DeviceRemoved, InputError, NetworkError, ServerError
from mailslot.protocol import auth, crypto, wire
from mailslot.protocol.identity import DeviceKeys

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
MAX_FRAME = 128 * 1024 * 1024  # a 64 MiB body, base64 in JSON, with room to spare
SEND_SLICE = 256 * 1024  # request bodies go to the TLS layer this much at a time


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
        # Set once the server said this device was removed: signed requests then fail at once.
        self.removed: DeviceRemoved | None = None
        self.on_removed: Callable[[DeviceRemoved], Awaitable[DeviceRemoved]] | None = None

    def check_not_removed(self) -> None:
        """Fail fast, with the recorded explanation, if this device was removed."""
        if self.removed is not None:
            raise DeviceRemoved(self.removed.message, details=dict(self.removed.details))

    async def refused(self, error: errors.MailslotError) -> errors.MailslotError:
        """The error to raise for a server refusal: a removal is explained and remembered."""
        if not isinstance(error, DeviceRemoved):
            return error
        if self.on_removed is not None:
            error = await self.on_removed(error)
        self.removed = error
        return DeviceRemoved(error.message, details=dict(error.details))

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def _origin(self) -> str:
        """``https://host:port``: the server URL without its path prefix."""
        return self.server[: len(self.server) - len(self._prefix)]

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
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """Send one request and decode a success body as ``kind``; raise the server's error.

        The body is ``body`` encoded as JSON, or the raw bytes ``content`` (whose
        ``Content-Type`` the caller gives in ``headers``); either way the signature covers
        the SHA-256 of exactly the bytes sent.
        """
        if signed:
            self.check_not_removed()
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            content = wire.encode(body)
            headers["Content-Type"] = "application/json"
        content = content if content is not None else b""
        if signed:
            headers["Authorization"] = self._authorization(method, target, content)
        headers["Content-Length"] = str(len(content))
        url = self._origin + target
        try:
            response = await self._http.request(
                method,
                url,
                content=_OneShot(content),
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach {url}: {_describe(exc)}") from exc
        if response.status_code >= 400:
            raise await self.refused(_error_from(response.status_code, response.content))
        return _decode_response(response.content, kind)

    async def download(self, path: str, *, start: int, sink: Callable[[bytes], None]) -> None:
        """Stream an unauthenticated GET of ``path`` into ``sink``, from byte ``start`` on.

        Resuming asks for ``Range: bytes=start-``: a ``206`` must start exactly there; a server
        that answers ``200`` with the whole body instead has its first ``start`` bytes skipped.
        The bytes are passed on as they arrive (no content decoding, nothing held), so memory
        stays constant. A dropped connection is ``NetworkError``; the caller resumes from the
        bytes it got. What the bytes are is for the caller to check.
        """
        url = self._origin + self._prefix + path
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code >= 400:
                    raise _error_from(response.status_code, await _read_capped(response))
                skip = _bytes_to_skip(response.status_code, response.headers.get("Content-Range"), start)
                async for data in response.aiter_raw():
                    if skip >= len(data):
                        skip -= len(data)
                        continue
                    sink(data[skip:] if skip else data)
                    skip = 0
        except httpx.HTTPError as exc:
            raise NetworkError(f"download from {url} failed: {_describe(exc)}") from exc

    @asynccontextmanager
    async def websocket(self) -> AsyncIterator[ClientConnection]:
        """The device's signed WebSocket (``GET /v1/ws``, empty body)."""
        self.check_not_removed()
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
            error = _error_from(exc.response.status_code, bytes(exc.response.body or b""))
            raise await self.refused(error) from exc
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


class _OneShot:
    """A request body handed to httpx in slices, that lets go of its bytes once they are sent.

    Slices: each layer below (h11 framing, TLS) copies what it is given, so a 4 MiB upload
    piece given whole would be copied whole several times over; in ``SEND_SLICE`` slices only
    one slice at a time is. Letting go: httpx keeps each request (and so a ``bytes`` body) in a
    reference cycle with its response until the cyclic garbage collector runs, which may be
    many requests later. Both would grow the memory of a large upload by tens of MiB.
    """

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data, self._data = self._data, None
        for start in range(0, len(data or b""), SEND_SLICE):
            assert data is not None
            yield data[start : start + SEND_SLICE]


async def _read_capped(response: httpx.Response, limit: int = 64 * 1024) -> bytes:
    """At most ``limit`` bytes of an error body (a hostile server cannot make us buffer more)."""
    body = bytearray()
    async for data in response.aiter_raw():
        body += data
        if len(body) >= limit:
            break
    return bytes(body[:limit])


def _bytes_to_skip(status: int, content_range: str | None, start: int) -> int:
    """How many leading bytes of a download answer to drop so that it starts at ``start``."""
    if status == 200:
        return start
    if status == 206 and content_range is not None:
        unit, _, spec = content_range.partition(" ")
        first = spec.partition("-")[0]
        if unit == "bytes" and first.isdigit() and int(first) == start:
            return 0
    raise ServerError(f"the server answered a download from byte {start} with HTTP {status}")


def _decode_response(content: bytes, kind: type[T]) -> T:
    try:
        return wire.decode(content, kind)
    except InputError as exc:
        raise ServerError(f"the server sent a malformed response: {exc.message}") from exc
