"""Helpers at the HTTP edge: bounded body reading, the signed target, JSON responses."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from mailslot.errors import InputError, MailslotError, TooLarge
from mailslot.protocol import wire
from mailslot.server.node import Node
from mailslot.server.storage.base import DeviceRow


def node_of(conn: HTTPConnection) -> Node:
    node: Node = conn.app.state.node
    return node


def target_of(conn: HTTPConnection) -> str:
    """The request target exactly as the client sent it, which is what it signed."""
    raw_path: bytes = conn.scope.get("raw_path") or conn.scope["path"].encode()
    query: bytes = conn.scope.get("query_string", b"")
    target = raw_path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing anything over ``limit`` before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError("invalid Content-Length")
        if int(declared) > limit:
            raise TooLarge(f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(wire.encode(value), status_code=status, media_type="application/json")


def error_response(exc: MailslotError) -> Response:
    response = json_response(exc.to_wire(), exc.http_status)
    retry = exc.details.get("retry_after_s")
    if isinstance(retry, int | float):
        response.headers["Retry-After"] = str(max(1, round(retry)))
    return response


async def authenticated(request: Request) -> tuple[Node, DeviceRow, bytes, int]:
    """Read the body and check the device signature over it; rate-limit the device."""
    node = node_of(request)
    body = await read_body(request, node.config.max_request_bytes)
    now = node.now_ms()
    device = await node.authn.device(
        request.headers.get("authorization"), request.method, target_of(request), body, now
    )
    node.device_limiter.check(device.device_id, now / 1000)
    return node, device, body, now
