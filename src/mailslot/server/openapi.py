"""The OpenAPI 3.1 document, generated from the wire types so it cannot drift from them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec

from mailslot import __version__
from mailslot.protocol import wire

_ERROR = {"$ref": "#/components/schemas/Error"}

# (method, path, summary, auth, request type, success status, response type)
_OPERATIONS: list[tuple[str, str, str, bool, type | None, int, type | None]] = [
    ("get", "/health", "Liveness: the process serves requests", False, None, 200, None),
    ("get", "/ready", "Readiness: the database answers (503 not_ready otherwise)", False, None, 200, None),
    (
        "post",
        "/v1/accounts",
        "Register an account with its first signed device list (with an invite unless registration is open;"
        " 403 invite_required otherwise)",
        True,
        wire.RegisterRequest,
        201,
        wire.AccountInfo,
    ),
    (
        "get",
        "/v1/accounts/{handle}/devices",
        "Fetch an account's signed device list",
        True,
        None,
        200,
        wire.DeviceListResponse,
    ),
    (
        "put",
        "/v1/accounts/{handle}/devices",
        "Publish a new signed device list",
        True,
        wire.DeviceListBody,
        200,
        wire.AccountInfo,
    ),
    (
        "get",
        "/v1/accounts/{handle}/devices/history",
        "Every published version of an account's device list after ?after=V, oldest first, at most"
        " ?limit=N (default and maximum 100); no authentication",
        False,
        None,
        200,
        wire.DeviceListHistory,
    ),
    (
        "post",
        "/v1/accounts/{handle}/recover",
        "Replace a lost account key: the next device list under a new account key, with the recovery"
        " claim; signed by the new device, which approves the list (403 recovery_refused on a wrong claim)",
        True,
        wire.RecoverRequest,
        200,
        wire.AccountInfo,
    ),
    (
        "get",
        "/v1/devices",
        "The calling device's account: every current device with when it was last seen (to a minute)",
        True,
        None,
        200,
        wire.DevicesSeen,
    ),
    (
        "post",
        "/v1/messages",
        "Send one body plus one wrapped key per device",
        True,
        wire.SendRequest,
        201,
        wire.SendResponse,
    ),
    ("get", "/v1/queue", "Fetch this device's queue", True, None, 200, wire.QueueResponse),
    (
        "post",
        "/v1/queue/ack",
        "Acknowledge (delete) queue entries",
        True,
        wire.AckRequest,
        200,
        wire.AckResponse,
    ),
    ("post", "/v1/links/{link_id}", "Open a device link request", False, wire.LinkRequestBody, 201, None),
    ("get", "/v1/links/{link_id}", "Read a link request", True, None, 200, wire.LinkRequestBody),
    ("post", "/v1/links/{link_id}/response", "Answer a link request", True, wire.LinkResponseBody, 201, None),
    ("get", "/v1/links/{link_id}/response", "Wait for a link answer", False, None, 200, wire.LinkStatus),
    (
        "post",
        "/v1/blobs",
        "Reserve a blob of a declared size (refused over the size limit or the account quota)",
        True,
        wire.BlobCreate,
        201,
        wire.BlobInfo,
    ),
    (
        "get",
        "/v1/blobs/{blob_id}/upload",
        "A blob's committed offset: where to resume the upload",
        True,
        None,
        200,
        wire.BlobInfo,
    ),
    (
        "patch",
        "/v1/blobs/{blob_id}",
        "Upload the next piece (raw bytes) at Upload-Offset",
        True,
        None,
        200,
        wire.BlobInfo,
    ),
]

_BYTES = {"type": "string", "format": "binary"}


def _blob_operations() -> dict[str, dict[str, Any]]:
    """What the JSON table cannot say: the raw bytes of an upload piece and of a download."""
    error = {"application/json": {"schema": _ERROR}}
    offset = {"name": "Upload-Offset", "in": "header", "required": True, "schema": {"type": "integer"}}
    piece = {"required": True, "content": {"application/offset+octet-stream": {"schema": _BYTES}}}
    download = {
        "summary": "Download a complete blob; no authentication (its random id is the capability)",
        "parameters": [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}}],
        "responses": {
            "200": {
                "description": "the whole blob",
                "content": {"application/octet-stream": {"schema": _BYTES}},
            },
            "206": {
                "description": "one byte range",
                "content": {"application/octet-stream": {"schema": _BYTES}},
            },
            "416": {"description": "range not satisfiable", "content": error},
            "4XX": {"description": "client error", "content": error},
        },
    }
    return {"patch": {"parameters": [offset], "requestBody": piece}, "get": download}


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _operation(summary: str, auth: bool, req: type | None, status: int, resp: type | None) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(resp)}} if resp else {}
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(status): {"description": "success", "content": content},
            "4XX": {"description": "client error", "content": {"application/json": {"schema": _ERROR}}},
        },
    }
    if req is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(req)}}}
    if auth:
        op["security"] = [{"deviceSignature": []}]
    return op


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    kinds = [k for op in _OPERATIONS for k in (op[4], op[6]) if k is not None]
    _, components = msgspec.json.schema_components(kinds, ref_template="#/components/schemas/{name}")
    components["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "details": {"type": "object"},
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, auth, req, status, resp in _OPERATIONS:
        paths.setdefault(path, {})[method] = _operation(summary, auth, req, status, resp)
    blob_path = paths["/v1/blobs/{blob_id}"]
    extra = _blob_operations()
    blob_path["patch"].update(extra["patch"])
    blob_path["get"] = extra["get"]
    paths["/ready"]["get"]["responses"]["503"] = {
        "description": "not ready: the database does not answer",
        "content": {"application/json": {"schema": _ERROR}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mailslot", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "deviceSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Mailslot device=<id>, ts=<ms>, nonce=<hex>, sig=<Ed25519 hex>",
                }
            },
        },
    }
