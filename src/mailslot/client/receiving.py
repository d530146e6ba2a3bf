"""Receiving: drain the queue over HTTP, then stream over the WebSocket, de-duplicating.

Each delivery ends in one of three ways:

* yielded: it opened and verified; it is stored in history and marked seen, THEN acknowledged
  (so a crash between the two redelivers it, and the seen id drops the copy), then yielded;
* dropped and acknowledged: a duplicate (silently), or a message that failed a check
  (``MessageRejected``): one warning line with the reason goes to the ``mailslot.client``
  logger, the sender learns nothing, and the message is never yielded;
* held, not acknowledged: the sender's device list could not be trusted right now (its account
  key changed, the list does not verify or was rolled back, the account is unknown). The
  message stays queued on the server for a later attempt (or a later trust decision), and a
  warning says why; dropping it would lose mail over a fault that is not the sender's.

Network and server failures propagate: nothing is acknowledged that was not processed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from mailslot import errors
from mailslot.client.models import HistoryEntry, ReceivedMessage
from mailslot.client.session import Session
from mailslot.client.transport import now_ms
from mailslot.errors import (
    InputError,
    KeyChanged,
    MessageRejected,
    NotFoundError,
    VerificationError,
)
from mailslot.protocol import wire
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.identity import check_handle, parse_device_id, parse_message_id
from mailslot.protocol.message import Content, Envelope, open_message

log = logging.getLogger("mailslot.client")

PAGE_SIZE = 100
RECONNECT_DELAY = 1.0


class _Hold(Exception):
    """The delivery cannot be judged now; leave it queued."""


class Receiver:
    """Turns the server's deliveries into verified, stored, acknowledged messages."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def drain(self) -> AsyncIterator[ReceivedMessage]:
        """Everything queued now, page by page over HTTP (``after`` paging until not ``more``)."""
        after = 0
        while True:
            page = await self._session.transport.call(
                "GET",
                "/v1/queue",
                wire.QueueResponse,
                query={"after": after, "limit": PAGE_SIZE},
            )
            for delivery in page.messages:
                after = max(after, delivery.seq)
                try:
                    message = await self._process(delivery)
                except _Hold:
                    continue
                await self._ack_http(delivery.message_id)
                if message is not None:
                    yield message
            if not page.more or not page.messages:
                return

    async def stream(self, seconds: float) -> AsyncIterator[ReceivedMessage]:
        """New mail pushed over the WebSocket for ``seconds``, reconnecting if it drops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                async with self._session.transport.websocket() as ws:
                    async for message in self.drain():  # what came before the socket was up
                        yield message
                    async for message in self._read(ws, deadline):
                        yield message
                return
            except ConnectionClosed as exc:
                log.info("WebSocket closed (%s); reconnecting", exc)
                await asyncio.sleep(min(RECONNECT_DELAY, max(0.0, deadline - loop.time())))

    async def _read(self, ws: ClientConnection, deadline: float) -> AsyncIterator[ReceivedMessage]:
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                return
            frame = _parse_frame(raw)
            if isinstance(frame, wire.WsError):
                raise errors.from_wire(400, {"error": frame.error, "message": frame.message})
            if not isinstance(frame, wire.WsDeliver):
                continue
            try:
                message = await self._process(frame.delivery)
            except _Hold:
                continue
            await ws.send(wire.encode(wire.WsAck(message_ids=[frame.delivery.message_id])).decode())
            if message is not None:
                yield message

    async def _ack_http(self, message_id: str) -> None:
        await self._session.transport.call(
            "POST", "/v1/queue/ack", wire.AckResponse, body=wire.AckRequest(message_ids=[message_id])
        )

    async def _process(self, delivery: wire.Delivery) -> ReceivedMessage | None:
        """Open, check and store one delivery; None means drop it; ``_Hold`` means keep it."""
        try:
            envelope = _envelope(delivery)
        except InputError as exc:
            log.warning("dropped malformed delivery %s: %s", delivery.message_id, exc.message)
            return None
        if self._session.store.is_seen(delivery.message_id):
            return None
        sender_list = await self._sender_list(envelope)
        try:
            content = open_message(
                self._session.secrets.device, self._session.secrets.handle, envelope, sender_list
            )
            _text_of(content)
        except MessageRejected as exc:
            log.warning("dropped message %s from %s: %s", delivery.message_id, delivery.sender, exc.reason)
            return None
        return self._store(content, delivery.accepted_at)

    async def _sender_list(self, envelope: Envelope) -> DeviceList:
        """The sender's verified list, fetched again once if the sender device is not in it."""
        directory = self._session.directory
        try:
            sender_list = await directory.get(envelope.sender)
            if sender_list.find(envelope.sender_device) is None:
                sender_list = await directory.get(envelope.sender, refresh=True)
        except (KeyChanged, VerificationError, NotFoundError) as exc:
            log.warning(
                "left message %s from %s queued: %s",
                envelope.message_id.hex(),
                envelope.sender,
                exc.message,
            )
            raise _Hold from exc
        return sender_list

    def _store(self, content: Content, accepted_at_ms: int) -> ReceivedMessage | None:
        own = content.sender == self._session.secrets.handle
        entry = HistoryEntry.of(content, accepted_at_ms, "out" if own else "in", now_ms())
        if not self._session.store.add_message(entry):
            return None
        return ReceivedMessage(
            id=entry.id,
            sender=entry.sender,
            sender_device=entry.sender_device,
            members=entry.members,
            sent_at_ms=entry.sent_at_ms,
            accepted_at_ms=entry.accepted_at_ms,
            text=entry.text,
        )


def _envelope(delivery: wire.Delivery) -> Envelope:
    return Envelope(
        message_id=parse_message_id(delivery.message_id),
        sender=check_handle(delivery.sender),
        sender_device=parse_device_id(delivery.sender_device),
        body=delivery.body,
        wrapped_key=delivery.key,
    )


def _text_of(content: Content) -> str:
    """The text of a verified content; any other kind is rejected (nothing else exists yet),
    before anything is stored."""
    try:
        return content.text
    except (InputError, UnicodeDecodeError) as exc:
        raise MessageRejected(f"not a UTF-8 text message: {exc}") from exc


def _parse_frame(raw: str | bytes) -> wire.WsServerFrame | None:
    try:
        return wire.decode(raw, wire.WsServerFrame)  # type: ignore[arg-type]
    except InputError as exc:
        log.warning("ignored a malformed WebSocket frame: %s", exc.message)
        return None
