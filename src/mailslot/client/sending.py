"""Sending a text message to one or more accounts (a group is just several recipients).

The message is sealed for exactly the devices named in verified device lists: every device of
every recipient, and this account's other devices (so they keep the same history). The server
refuses a send whose device set differs from its current one (``DeviceMismatch``); the client
then re-fetches and verifies the lists involved and tries again, a bounded number of times. A
device the server names but no verified list contains is never encrypted to: that is exactly
the ghost device the signed lists exist to keep out, and the send fails instead.
"""

from __future__ import annotations

import asyncio

from mailslot.client.models import HistoryEntry, SentMessage
from mailslot.client.session import Session
from mailslot.client.transport import now_ms
from mailslot.errors import DeviceMismatch, InputError, NetworkError
from mailslot.protocol import crypto, wire
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.identity import MESSAGE_ID_SIZE, check_handle
from mailslot.protocol.message import KIND_TEXT, MAX_MEMBERS, Content, members_of, seal_message

MAX_TRIES = 3
# Waits before re-posting after a dropped connection; the same message id makes it safe.
NETWORK_RETRY_DELAYS_S = (0.2, 1.0)


def _recipients(session: Session, recipients: list[str]) -> list[str]:
    """Valid, unique recipient handles other than this account, in the order given."""
    own = session.secrets.handle
    others = list(dict.fromkeys(check_handle(h) for h in recipients if h != own))
    if not others:
        raise InputError("name at least one recipient other than yourself")
    if len(others) + 1 > MAX_MEMBERS:
        raise InputError(f"a conversation has at most {MAX_MEMBERS} members")
    return others


async def _targets(session: Session, handles: list[str], refresh: set[str]) -> dict[bytes, bytes]:
    """Device id -> encryption key for every listed device of ``handles``, minus this one."""
    targets: dict[bytes, bytes] = {}
    for handle in handles:
        device_list: DeviceList = await session.directory.get(handle, refresh=handle in refresh)
        for record in device_list.devices:
            targets[record.device_id] = record.enc_key
    targets.pop(session.secrets.device.device_id, None)
    return targets


def _stale_handles(session: Session, exc: DeviceMismatch, involved: list[str]) -> set[str]:
    """The handles whose lists to fetch again.

    Those for which the server reports another version than the cached one; if it reports
    none that differ (or no versions at all), every handle involved, to be safe.
    """
    versions = exc.details.get("versions")
    if not isinstance(versions, dict):
        return set(involved)
    directory = session.directory
    changed = {h for h in involved if versions.get(h) != directory.cached_version(h)}
    return changed or set(involved)


async def send_text(session: Session, recipients: list[str], text: str) -> SentMessage:
    """Seal ``text`` for every device of ``recipients`` and this account's other devices."""
    if not text:
        raise InputError("the message is empty")
    others = _recipients(session, recipients)
    own = session.secrets.handle
    involved = [*others, own]
    content = Content(
        sender=own,
        sender_device=session.secrets.device.device_id,
        members=members_of(own, others),
        message_id=crypto.random_bytes(MESSAGE_ID_SIZE),
        sent_at_ms=now_ms(),
        kind=KIND_TEXT,
        body=text.encode("utf-8"),
    )
    refresh: set[str] = set()
    for attempt in range(1, MAX_TRIES + 1):
        targets = await _targets(session, involved, refresh)
        sealed = seal_message(content, session.secrets.device, targets)
        request = wire.SendRequest(
            message_id=content.message_id.hex(),
            recipients=others,
            body=sealed.body,
            keys={device.hex(): key for device, key in sealed.wrapped_keys.items()},
        )
        try:
            response = await _post(session, request)
        except DeviceMismatch as exc:
            if attempt == MAX_TRIES:
                raise
            refresh = _stale_handles(session, exc, involved)
            continue
        return _record_sent(session, content, response)
    raise AssertionError("unreachable")  # pragma: no cover


async def _post(session: Session, request: wire.SendRequest) -> wire.SendResponse:
    """POST the send, re-posting it after a dropped connection.

    The server may have committed a send whose answer was lost; re-posting the same message id
    is answered with the first acceptance, so the recipient still sees the message once.
    """
    for delay in NETWORK_RETRY_DELAYS_S:
        try:
            return await session.transport.call("POST", "/v1/messages", wire.SendResponse, body=request)
        except NetworkError:
            await asyncio.sleep(delay)
    return await session.transport.call("POST", "/v1/messages", wire.SendResponse, body=request)


def _record_sent(session: Session, content: Content, response: wire.SendResponse) -> SentMessage:
    entry = HistoryEntry.of(content, response.accepted_at, "out", now_ms())
    session.store.add_message(entry)
    return SentMessage(
        id=entry.id,
        members=content.members,
        sent_at_ms=content.sent_at_ms,
        accepted_at_ms=response.accepted_at,
        devices=response.devices,
    )
