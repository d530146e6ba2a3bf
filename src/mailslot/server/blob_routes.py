"""HTTP routes of the blob API: parse, authenticate, call ``services/blobs.py``, render.

An upload piece (``PATCH``) is never read whole: the header is checked first (device, account,
freshness, nonce), then the body streams into the blob store while it is hashed, and only then
is the signature over that hash verified (``services/blobs.py`` truncates the piece away if it
fails). A download (``GET``) needs no authentication, since the blob's 256-bit random id is the
capability and its content is encrypted; it streams with single byte ranges.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mailslot.errors import InputError
from mailslot.protocol import wire
from mailslot.server.byte_range import ByteRange, Unsatisfiable, parse_range
from mailslot.server.edge import authenticated, json_response, node_of, target_of
from mailslot.server.services.blobs import Piece, parse_blob_id
from mailslot.server.storage.base import BlobRow

__all__ = ["BLOB_ROUTES", "PIECE_CONTENT_TYPE"]

log = logging.getLogger("mailslot.server.blobs")

PIECE_CONTENT_TYPE = "application/offset+octet-stream"
_MAX_DIGITS = 19


def blob_info(blob: BlobRow, status: int = 200) -> Response:
    """``BlobInfo`` as JSON, with the committed offset also in ``Upload-Offset`` (as in tus)."""
    info = wire.BlobInfo(blob.blob_id.hex(), blob.size, blob.offset, blob.expires_at_ms)
    response = json_response(info, status)
    response.headers["Upload-Offset"] = str(blob.offset)
    return response


def _header_int(request: Request, name: str) -> int | None:
    """A non-negative integer header, None if absent; ``InputError`` if malformed."""
    raw = request.headers.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > _MAX_DIGITS:
        raise InputError(f"{name} must be a non-negative integer")
    return int(raw)


def _piece(request: Request) -> Piece:
    """The piece a PATCH claims to be: blob id, ``Upload-Offset`` and declared length."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != PIECE_CONTENT_TYPE:
        raise InputError(f"an upload piece has Content-Type {PIECE_CONTENT_TYPE}")
    offset = _header_int(request, "upload-offset")
    if offset is None:
        raise InputError("an upload piece needs an Upload-Offset header")
    blob_id = parse_blob_id(request.path_params["blob_id"])
    return Piece(blob_id, offset, _header_int(request, "content-length"))


async def create_blob(request: Request) -> Response:
    node, device, body, now = await authenticated(request)
    req = wire.decode(body, wire.BlobCreate)
    return blob_info(await node.blobs.create(device, req.size, now), 201)


async def upload_status(request: Request) -> Response:
    node, device, _, now = await authenticated(request)
    blob_id = parse_blob_id(request.path_params["blob_id"])
    return blob_info(await node.blobs.status(device, blob_id, now))


async def upload_piece(request: Request) -> Response:
    """Everything that needs no body is refused before the first byte is stored."""
    node = node_of(request)
    now = node.now_ms()
    sig, device = await node.authn.signer(request.headers.get("authorization"), now)
    node.device_limiter.check(device.device_id, now / 1000)
    piece = _piece(request)
    target = target_of(request)

    def verify(body_digest: bytes) -> None:
        node.authn.check_digest(sig, device.sign_key, request.method, target, body_digest, now)

    try:
        blob = await node.blobs.upload(device, piece, request.stream(), verify, now)
    except ClientDisconnect:
        log.info("upload piece of blob %s cut off; it stays at %d", piece.blob_id.hex(), piece.offset)
        return Response(status_code=400)  # nobody is left to read it
    return blob_info(blob)


def _range_not_satisfiable(size: int) -> Response:
    body = {"error": "range_not_satisfiable", "message": f"the range selects no byte of the {size}-byte blob"}
    response = json_response(body, 416)
    response.headers["Content-Range"] = f"bytes */{size}"
    return response


async def download(request: Request) -> Response:
    """The whole blob (200) or one byte range of it (206); HEAD gives the headers only."""
    node = node_of(request)
    blob = await node.blobs.readable(parse_blob_id(request.path_params["blob_id"]), node.now_ms())
    try:
        span = parse_range(request.headers.get("range"), blob.size)
    except Unsatisfiable:
        return _range_not_satisfiable(blob.size)
    whole = span is None
    span = span or ByteRange(0, blob.size, blob.size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(span.length),
        "X-Content-Type-Options": "nosniff",
    }
    if not whole:
        headers["Content-Range"] = span.content_range()
    status = 200 if whole else 206
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    stream = node.blobs.read(blob, span.start, span.end)
    return StreamingResponse(stream, status, headers, media_type="application/octet-stream")


BLOB_ROUTES = [
    Route("/v1/blobs", create_blob, methods=["POST"]),
    Route("/v1/blobs/{blob_id}/upload", upload_status, methods=["GET"]),
    Route("/v1/blobs/{blob_id}", upload_piece, methods=["PATCH"]),
    Route("/v1/blobs/{blob_id}", download, methods=["GET"]),
]
