"""Link sessions: a mailbox for the two sealed halves of adding a device to an account.

The server only stores opaque sealed bytes under a random link id for a few minutes; it
cannot read or forge either half (protocol/linking.py).
"""

from __future__ import annotations

from mailslot.errors import InputError, NotFoundError
from mailslot.server.config import ServerConfig
from mailslot.server.storage.base import Storage

LINK_ID_SIZE = 16
MAX_LINK_MESSAGE = 16 * 1024


def parse_link_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise InputError("invalid link id") from exc
    if len(raw) != LINK_ID_SIZE:
        raise InputError("invalid link id")
    return raw


def _check_size(data: bytes) -> None:
    if not data or len(data) > MAX_LINK_MESSAGE:
        raise InputError(f"a link message is 1-{MAX_LINK_MESSAGE} bytes")


class Links:
    def __init__(self, store: Storage, config: ServerConfig) -> None:
        self._store = store
        self._config = config

    async def open(self, link_id: bytes, request: bytes, now_ms: int) -> None:
        _check_size(request)
        await self._store.create_link(link_id, request, now_ms + self._config.link_ttl_s * 1000)

    async def request(self, link_id: bytes, now_ms: int) -> bytes:
        found = await self._store.get_link(link_id, now_ms)
        if found is None:
            raise NotFoundError("no such link request, or it expired")
        return found[0]

    async def respond(self, link_id: bytes, response: bytes, now_ms: int) -> None:
        _check_size(response)
        await self._store.respond_link(link_id, response, now_ms)

    async def response(self, link_id: bytes, now_ms: int) -> bytes | None:
        found = await self._store.get_link(link_id, now_ms)
        if found is None:
            raise NotFoundError("no such link request, or it expired")
        return found[1]
