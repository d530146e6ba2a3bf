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
from mailslot.server.services.directory import MAX_HISTORY_PAGE, parse_signed_list
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


async def _signed_by_listed_device(request: Request, list_bytes: bytes, body: bytes, now: int) -> bytes:
    """Authenticate a request signed by a device that is not registered yet: the one listed in
    the body's device list (registration, recovery). Returns the signing device's id."""
    node = node_of(request)
    sig = parse_header(request.headers.get("authorization"))
    record = parse_signed_list(list_bytes).find(sig.device_id)
    if record is None:
        raise AuthenticationError("request not signed by a device in the list")
    node.authn.check(sig, record.sign_key, request.method, target_of(request), body, now)
    node.device_limiter.check(sig.device_id, now / 1000)
    return sig.device_id


async def register(request: Request) -> Response:
    """The first device proves it holds the signing key listed in the body's device list."""
    node = node_of(request)
    body = await read_body(request, node.config.max_request_bytes)
    now = node.now_ms()
    req = wire.decode(body, wire.RegisterRequest)
    signer = await _signed_by_listed_device(request, req.device_list, body, now)
    account = await node.directory.register(req.handle, req.device_list, signer, now, req.invite)
    return json_response(wire.AccountInfo(account.handle, account.list_version), 201)


async def recover(request: Request) -> Response:
    """The new device of a recovered account signs the request, as a registering one does."""
    node = node_of(request)
    body = await read_body(request, node.config.max_request_bytes)
    now = node.now_ms()
    req = wire.decode(body, wire.RecoverRequest)
    signer = await _signed_by_listed_device(request, req.device_list, body, now)
    account = await node.directory.recover(request.path_params["handle"], req, signer, now)
    return json_response(wire.AccountInfo(account.handle, account.list_version))


async def get_devices(request: Request) -> Response:
    node, _, _, _ = await authenticated(request)
    account = await node.directory.get(request.path_params["handle"])
    return json_response(wire.DeviceListResponse(account.handle, account.list_version, account.device_list))


async def device_history(request: Request) -> Response:
    """Published lists after ``after``, oldest first. No authentication: every list is public
    (it is what senders encrypt to), and a removed device must still be able to read who
    removed it."""
    node = node_of(request)
    after = _int_param(request, "after", 0)
    limit = _int_param(request, "limit", MAX_HISTORY_PAGE)
    return json_response(await node.directory.history(request.path_params["handle"], after, limit))


async def put_devices(request: Request) -> Response:
    node, device, body, now = await authenticated(request)
    req = wire.decode(body, wire.DeviceListBody)
    account = await node.directory.publish(request.path_params["handle"], req.device_list, device, now)
    return json_response(wire.AccountInfo(account.handle, account.list_version))


async def devices_seen(request: Request) -> Response:
    """The caller's own account's devices with when each was last seen."""
    node, device, _, _ = await authenticated(request)
    return json_response(await node.directory.seen(device, node.authn.last_seen.recent()))


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
    Route("/v1/accounts/{handle}/devices/history", device_history, methods=["GET"]),
    Route("/v1/accounts/{handle}/recover", recover, methods=["POST"]),
    Route("/v1/devices", devices_seen, methods=["GET"]),
    Route("/v1/messages", send, methods=["POST"]),
    Route("/v1/queue", fetch_queue, methods=["GET"]),
    Route("/v1/queue/ack", ack, methods=["POST"]),
    Route("/v1/links/{link_id}", open_link, methods=["POST"]),
    Route("/v1/links/{link_id}", get_link, methods=["GET"]),
    Route("/v1/links/{link_id}/response", respond_link, methods=["POST"]),
    Route("/v1/links/{link_id}/response", link_response, methods=["GET"]),
    *BLOB_ROUTES,
]
