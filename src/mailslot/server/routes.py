"""HTTP routes: parse, authenticate, call a service, render. No rules live here."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailslot.errors import AuthenticationError, InputError, MailslotError
from mailslot.protocol import wire
from mailslot.server.authn import parse_header
from mailslot.server.blob_routes import BLOB_ROUTES
from mailslot.server.edge import authenticated, json_response, node_of, read_body, target_of
from mailslot.server.openapi import openapi_document
from mailslot.server.services.directory import parse_signed_list
from mailslot.server.services.links import MAX_LINK_MESSAGE, parse_link_id

MAX_LINK_WAIT_S = 30.0
READY_TIMEOUT_S = 3.0  # /ready answers 503 if the database takes longer than this

log = logging.getLogger("mailslot.server")


async def health(request: Request) -> Response:
    """Liveness: the process serves requests. Touches nothing else."""
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: the database answers a trivial query within ``READY_TIMEOUT_S``."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await node_of(request).store.ping()
    except (MailslotError, TimeoutError) as exc:
        reason = exc.message if isinstance(exc, MailslotError) else f"no answer in {READY_TIMEOUT_S:g} s"
        cause = str(exc.__cause__ or "").strip().splitlines()
        log.warning("not ready: %s%s", reason, f" ({cause[0]})" if cause else "")
        body = {"error": "not_ready", "message": f"the database is not reachable: {reason}"}
        return json_response(body, 503)
    return json_response({"status": "ready"})


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


async def register(request: Request) -> Response:
    """The first device proves it holds the signing key listed in the body's device list."""
    node = node_of(request)
    body = await read_body(request, node.config.max_request_bytes)
    now = node.now_ms()
    sig = parse_header(request.headers.get("authorization"))
    req = wire.decode(body, wire.RegisterRequest)
    device_list = parse_signed_list(req.device_list)
    record = device_list.find(sig.device_id)
    if record is None:
        raise AuthenticationError("request not signed by a device in the list")
    node.authn.check(sig, record.sign_key, request.method, target_of(request), body, now)
    node.device_limiter.check(sig.device_id, now / 1000)
    account = await node.directory.register(req.handle, req.device_list, sig.device_id, now)
    return json_response(wire.AccountInfo(account.handle, account.list_version), 201)


async def get_devices(request: Request) -> Response:
    node, _, _, _ = await authenticated(request)
    account = await node.directory.get(request.path_params["handle"])
    return json_response(wire.DeviceListResponse(account.handle, account.list_version, account.device_list))


async def put_devices(request: Request) -> Response:
    node, device, body, _ = await authenticated(request)
    req = wire.decode(body, wire.DeviceListBody)
    account = await node.directory.publish(request.path_params["handle"], req.device_list, device)
    return json_response(wire.AccountInfo(account.handle, account.list_version))


async def send(request: Request) -> Response:
    node, device, body, now = await authenticated(request)
    req = wire.decode(body, wire.SendRequest)
    answer, created = await node.relay.send(device, req, now)
    return json_response(answer, 201 if created else 200)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 18:
        raise InputError(f"{name} must be a non-negative integer")
    return int(raw)


async def fetch_queue(request: Request) -> Response:
    node, device, _, _ = await authenticated(request)
    after = _int_param(request, "after", 0)
    limit = _int_param(request, "limit", 100)
    return json_response(await node.relay.fetch(device, after, limit))


async def ack(request: Request) -> Response:
    node, device, body, _ = await authenticated(request)
    req = wire.decode(body, wire.AckRequest)
    return json_response(wire.AckResponse(await node.relay.ack(device, req)))


async def open_link(request: Request) -> Response:
    node = node_of(request)
    client = request.client.host if request.client else "unknown"
    node.address_limiter.check(client, node.now_ms() / 1000)
    link_id = parse_link_id(request.path_params["link_id"])
    body = await read_body(request, MAX_LINK_MESSAGE * 2)
    req = wire.decode(body, wire.LinkRequestBody)
    await node.links.open(link_id, req.request, node.now_ms())
    return json_response({}, 201)


async def get_link(request: Request) -> Response:
    node, _, _, now = await authenticated(request)
    link_id = parse_link_id(request.path_params["link_id"])
    return json_response(wire.LinkRequestBody(await node.links.request(link_id, now)))


async def respond_link(request: Request) -> Response:
    node, _, body, now = await authenticated(request)
    link_id = parse_link_id(request.path_params["link_id"])
    req = wire.decode(body, wire.LinkResponseBody)
    await node.links.respond(link_id, req.response, now)
    return json_response({}, 201)


async def link_response(request: Request) -> Response:
    """Long-poll for the approving device's answer (at most 30 s per call)."""
    node = node_of(request)
    link_id = parse_link_id(request.path_params["link_id"])
    wait_s = min(float(_int_param(request, "wait", 0)), MAX_LINK_WAIT_S)
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        response = await node.links.response(link_id, node.now_ms())
        if response is not None:
            return json_response(wire.LinkStatus("approved", response))
        if asyncio.get_running_loop().time() >= deadline:
            return json_response(wire.LinkStatus("pending"))
        await asyncio.sleep(0.2)


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/v1/accounts", register, methods=["POST"]),
    Route("/v1/accounts/{handle}/devices", get_devices, methods=["GET"]),
    Route("/v1/accounts/{handle}/devices", put_devices, methods=["PUT"]),
    Route("/v1/messages", send, methods=["POST"]),
    Route("/v1/queue", fetch_queue, methods=["GET"]),
    Route("/v1/queue/ack", ack, methods=["POST"]),
    Route("/v1/links/{link_id}", open_link, methods=["POST"]),
    Route("/v1/links/{link_id}", get_link, methods=["GET"]),
    Route("/v1/links/{link_id}/response", respond_link, methods=["POST"]),
    Route("/v1/links/{link_id}/response", link_response, methods=["GET"]),
    *BLOB_ROUTES,
]
