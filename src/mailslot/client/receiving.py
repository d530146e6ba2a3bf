"""Receiving: drain the queue over HTTP, then stream over the WebSocket, de-duplicating.

Each delivery ends in one of three ways:

* yielded: it opened and verified; it is stored in history and marked seen, THEN acknowledged
  (so a crash between the two redelivers it, and the seen id drops the copy), then yielded
  (even when the acknowledgement was lost to a dropped connection, which then ends the
  iteration: the redelivery will be dropped as seen, so this is the one chance to show it),
  marked ``verified`` when the sender's key is trusted-verified (or the sender is this account);
* dropped and acknowledged: a duplicate (silently), a message from a blocked contact (one info
  line in the log, nothing else), or a message that failed a check (``MessageRejected``): one
  warning line with the reason goes to the ``mailslot.client`` logger, the sender learns
  nothing, and the message is never yielded;
* held, not acknowledged: the sender's device list could not be trusted right now (its account
  key changed, it is pinned but not trusted yet under the ``never`` policy, the list does not
  verify or was rolled back, the account is unknown; or, for this account's own devices, the
  list the alert walk checked has a change no device approved: ``alerts.own_list``). The
  message stays queued on the server for a later attempt (or a later trust decision), and a
  warning says why; dropping it would lose mail over a fault that is not the sender's.

Network and server failures propagate: nothing is acknowledged that was not processed.

A message with attachments (``KIND_RICH``): a long text is fetched, checked and decrypted
before the message is stored, so that it is stored and shown as ordinary text; a network
failure there leaves the message queued, like any other. If the long text cannot be had for
good (its blob fails a check, has expired, or is too large), the message is still stored and
shown, with the long text listed as an attachment that failed (``error``). Files are stored
as references with the message; when the caller asks (``Fetch.download``), each is then
fetched into the downloads folder, after the acknowledgement: a failed download is recorded
on that attachment (and can be retried with ``Client.fetch_attachment``), never a reason to
lose or redeliver the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from mailslot import errors
from mailslot.client import rotation
from mailslot.client.attachments import ProgressFor, no_progress, read_long_text, save
from mailslot.client.models import Attachment, HistoryEntry, ReceivedMessage
from mailslot.client.session import Session
from mailslot.client.store import StoredAttachment
from mailslot.client.transport import now_ms
from mailslot.client.trust import check_sendable, is_blocked, is_verified
from mailslot.errors import (
    InputError,
    KeyChanged,
    LimitExceeded,
    MessageRejected,
    NetworkError,
    NotFoundError,
    TooLarge,
    VerificationError,
)
from mailslot.protocol import wire
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.identity import DeviceKeys, check_handle, parse_device_id, parse_message_id
from mailslot.protocol.message import Content, Envelope, open_message

log = logging.getLogger("mailslot.client")

PAGE_SIZE = 100
DECRYPT_FAILED = "decryption or decoding failed"  # protocol.message's reason for a wrong key
RECONNECT_DELAY = 1.0


# What can go wrong with one blob for good, or for now, without being the receiver's fault.
BLOB_FAILURES = (VerificationError, NotFoundError, LimitExceeded, NetworkError)


class _Hold(Exception):
    """The delivery cannot be judged now; leave it queued."""


@dataclass(frozen=True)
class Fetch:
    """What to do with the files that come with messages."""

    download: bool = False
    folder: Path | None = None  # the downloads folder; required when ``download``
    progress: ProgressFor = no_progress


class Receiver:
    """Turns the server's deliveries into verified, stored, acknowledged messages."""

    def __init__(
        self,
        session: Session,
        fetch: Fetch | None = None,
        on_devices: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._session = session
        self._fetch = fetch or Fetch()
        self._on_devices = on_devices  # the own device list changed (a ``devices`` frame)

    async def drain(self) -> AsyncGenerator[ReceivedMessage, None]:
        """Everything queued now, page by page over HTTP (``after`` paging until not ``more``).

        A drain that ends with nothing left queued (nothing held) lets retired encryption
        keys go (``rotation.prune``): what was sealed to them before it started is read.
        """
        started, held, after = now_ms(), False, 0
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
                    held = True
                    continue
                failed = await _attempt(self._ack_http(delivery.message_id))
                if message is not None:
                    yield await self._files(message)
                if failed is not None:
                    raise failed
            if not page.more or not page.messages:
                if not held:
                    rotation.prune(self._session, now_ms(), drained_from=started)
                return

    async def stream(self, seconds: float) -> AsyncGenerator[ReceivedMessage, None]:
        """New mail pushed over the WebSocket for ``seconds``, reconnecting if it drops.

        Closing this iterator early closes the inner ones at once, and so the WebSocket.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            try:
                async with self._session.transport.websocket() as ws:
                    async with contextlib.aclosing(self.drain()) as queued:  # before the socket was up
                        async for message in queued:
                            yield message
                    async with contextlib.aclosing(self._read(ws, deadline)) as pushed:
                        async for message in pushed:
                            yield message
                return
            except ConnectionClosed as exc:
                log.info("WebSocket closed (%s); reconnecting", exc)
                await asyncio.sleep(min(RECONNECT_DELAY, max(0.0, deadline - loop.time())))

    async def _read(self, ws: ClientConnection, deadline: float) -> AsyncGenerator[ReceivedMessage, None]:
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                return
            frame = _parse_frame(raw)
            if isinstance(frame, wire.WsError):
                error = errors.from_wire(400, {"error": frame.error, "message": frame.message})
                raise await self._session.transport.refused(error)
            if isinstance(frame, wire.WsDevices) and self._on_devices is not None:
                await self._on_devices()
                continue
            if not isinstance(frame, wire.WsDeliver):
                continue
            try:
                message = await self._process(frame.delivery)
            except _Hold:
                continue
            failed = await _attempt(
                ws.send(wire.encode(wire.WsAck(message_ids=[frame.delivery.message_id])).decode())
            )
            if message is not None:
                yield await self._files(message)
            if failed is not None:
                raise failed

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
        if is_blocked(self._session, envelope.sender):
            log.info("dropped message %s from blocked %s", delivery.message_id, envelope.sender)
            return None
        sender_list = await self._sender_list(envelope)
        try:
            secrets = self._session.secrets
            content = _open(secrets.decryption_keys(), secrets.handle, envelope, sender_list)
            _text_of(content)
        except MessageRejected as exc:
            log.warning("dropped message %s from %s: %s", delivery.message_id, delivery.sender, exc.reason)
            return None
        return await self._store(content, delivery.accepted_at)

    async def _sender_list(self, envelope: Envelope) -> DeviceList:
        """The sender's verified list, fetched again once if the sender device is not in it."""
        directory = self._session.directory
        try:
            sender_list = await directory.get(envelope.sender)
            if sender_list.find(envelope.sender_device) is None:
                sender_list = await directory.get(envelope.sender, refresh=True)
            if envelope.sender != self._session.secrets.handle:
                check_sendable(self._session, envelope.sender)  # untrusted: hold (blocked: dropped)
        except (KeyChanged, VerificationError, NotFoundError) as exc:
            log.warning(
                "left message %s from %s queued: %s",
                envelope.message_id.hex(),
                envelope.sender,
                exc.message,
            )
            raise _Hold from exc
        return sender_list

    async def _resolve(self, content: Content) -> tuple[str, list[StoredAttachment]]:
        """The full text of a verified content and the attachment references to store.

        A long text is fetched here; ``NetworkError`` propagates (the message stays queued).
        """
        rich = content.rich
        text, stored = rich.text, []
        for position, ref in enumerate(rich.attachments):
            entry = StoredAttachment(content.message_id.hex(), position, ref)
            if ref.is_long_text:
                try:
                    text = await read_long_text(self._session.transport, ref, no_progress(ref.name))
                    continue
                except (VerificationError, NotFoundError, TooLarge) as exc:
                    log.warning("long text of message %s not shown: %s", entry.message_id, exc.message)
                    entry = dataclasses.replace(entry, error=exc.message)
            stored.append(entry)
        return text, stored

    async def _store(self, content: Content, accepted_at_ms: int) -> ReceivedMessage | None:
        own = content.sender == self._session.secrets.handle
        text, stored = await self._resolve(content)
        attachments = tuple(a.public() for a in stored)
        entry = HistoryEntry.of(
            content, accepted_at_ms, "out" if own else "in", now_ms(), text=text, attachments=attachments
        )
        if not self._session.store.add_message(entry, stored):
            return None
        return ReceivedMessage(
            id=entry.id,
            sender=entry.sender,
            sender_device=entry.sender_device,
            members=entry.members,
            sent_at_ms=entry.sent_at_ms,
            accepted_at_ms=entry.accepted_at_ms,
            text=entry.text,
            attachments=attachments,
            verified=is_verified(self._session, entry.sender),
        )

    async def _files(self, message: ReceivedMessage) -> ReceivedMessage:
        """Download the message's files into the downloads folder, if the caller asked."""
        if not self._fetch.download or not message.attachments:
            return message
        saved = [await self._download(a) if a.error is None else a for a in message.attachments]
        return dataclasses.replace(message, attachments=tuple(saved))

    async def _download(self, attachment: Attachment) -> Attachment:
        return await download_attachment(self._session, attachment.id, self._fetch, quiet=True)


async def download_attachment(
    session: Session, attachment_id: str, fetch: Fetch, *, quiet: bool
) -> Attachment:
    """Fetch one stored attachment into ``fetch.folder`` and record the outcome.

    With ``quiet`` a failure of the blob (see ``BLOB_FAILURES``) is recorded on the
    attachment and logged, not raised; local failures (the folder) always raise.
    """
    stored = session.store.attachment(attachment_id)
    if stored is None:
        raise NotFoundError(f"no attachment {attachment_id} on this device")
    if fetch.folder is None:
        raise InputError("no downloads folder given")
    try:
        path = await save(session.transport, stored.ref, fetch.folder, fetch.progress(stored.ref.name))
    except BLOB_FAILURES as exc:
        session.store.set_attachment_result(attachment_id, stored.path, exc.message)
        if not quiet:
            raise
        log.warning("attachment %s not saved: %s", attachment_id, exc.message)
        return dataclasses.replace(stored, error=exc.message).public()
    session.store.set_attachment_result(attachment_id, path, None)
    return dataclasses.replace(stored, path=path, error=None).public()


def _open(keys: list[DeviceKeys], handle: str, envelope: Envelope, sender_list: DeviceList) -> Content:
    """Open with the first key that decrypts (current, pending, retired: see ``rotation``).

    Only a failure to decrypt moves on to the next key; a message that decrypts and then
    fails a check is rejected with that reason, whatever other keys might do.
    """
    first: MessageRejected | None = None
    for keys_ in keys:
        try:
            return open_message(keys_, handle, envelope, sender_list)
        except MessageRejected as exc:
            if not exc.reason.startswith(DECRYPT_FAILED):
                raise
            first = first or exc
    assert first is not None
    raise first


def _envelope(delivery: wire.Delivery) -> Envelope:
    return Envelope(
        message_id=parse_message_id(delivery.message_id),
        sender=check_handle(delivery.sender),
        sender_device=parse_device_id(delivery.sender_device),
        body=delivery.body,
        wrapped_key=delivery.key,
    )


async def _attempt(ack: Awaitable[None]) -> BaseException | None:
    """Send an acknowledgement, returning (not raising) a dropped connection.

    The message is already stored and marked seen when it is acknowledged, so a redelivery
    would be dropped as a duplicate: a message whose ack was lost must still be shown now, and
    only then may the connection error end the iteration.
    """
    try:
        await ack
    except (ConnectionClosed, errors.NetworkError) as exc:
        return exc
    return None


def _text_of(content: Content) -> str:
    """The inline text of a verified content (text or rich); anything that does not decode is
    rejected before anything is stored."""
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
