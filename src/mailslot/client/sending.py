"""Sending a message to one or more accounts (a group is just several recipients).

A message is text, files, or both. Files and a text longer than ``INLINE_TEXT_LIMIT`` bytes
travel as encrypted blobs (``attachments``, ``blobs``), uploaded BEFORE the message is sealed,
and the message then carries a ``RichBody`` (kind ``KIND_RICH``) with their references; a
short text alone stays a plain ``KIND_TEXT`` message. Everything that can be checked locally
or cheaply is checked before the first byte is uploaded: the recipients (their verified device
lists are fetched first, so an unknown handle fails at once), every file to attach (opened
up front), and the number of attachments. An upload whose message is never sent leaves a blob
nobody can read, which the server deletes when it expires.

The message is sealed for exactly the devices named in verified device lists: every device of
every recipient, and this account's other devices (so they keep the same history). The server
refuses a send whose device set differs from its current one (``DeviceMismatch``); the client
then re-fetches and verifies the lists involved and tries again, a bounded number of times. A
device the server names but no verified list contains is never encrypted to: that is exactly
the ghost device the signed lists exist to keep out, and the send fails instead, with a
``VerificationError`` naming the device, as soon as a freshly verified list still lacks it.

This account's own list is the one the alert walk checked (``alerts.own_list``): while a change
that no device of the account approved is in force (a device added, or a key set, by whoever
holds a stolen account key), every send fails with a ``VerificationError`` that names the
change and the fix, as soon as the walk reaches that change (at the latest when the server
refuses the send as sealed under an older list), and nothing is ever sealed to such a device.

Trust comes first: every recipient's key must be pinned and trusted (``trust.check_sendable``:
not ``untrusted``, not ``blocked``, and not changed since it was pinned, which the directory
reports as ``KeyChanged``) before anything is uploaded or sealed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from mailslot.client.attachments import (
    THUMBNAIL_BUDGET,
    ProgressFor,
    Source,
    long_text_source,
    no_progress,
    open_sources,
    upload,
)
from mailslot.client.models import HistoryEntry, SentMessage
from mailslot.client.session import Session
from mailslot.client.store import StoredAttachment
from mailslot.client.transport import now_ms
from mailslot.client.trust import check_sendable
from mailslot.errors import DeviceMismatch, InputError, NetworkError, VerificationError
from mailslot.protocol import crypto, wire
from mailslot.protocol.attachment import INLINE_TEXT_LIMIT, MAX_ATTACHMENTS, AttachmentRef, RichBody
from mailslot.protocol.device_list import DeviceList
from mailslot.protocol.identity import MESSAGE_ID_SIZE, check_handle
from mailslot.protocol.message import KIND_RICH, KIND_TEXT, MAX_MEMBERS, Content, members_of, seal_message

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
        if handle != session.secrets.handle:
            check_sendable(session, handle)
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


def _open_all(text: str, attachments: Sequence[Path]) -> list[Source]:
    """The files to attach, opened, and the long text as one more source, if it is long."""
    encoded = text.encode("utf-8")
    long_text = len(encoded) > INLINE_TEXT_LIMIT
    if len(attachments) + long_text > MAX_ATTACHMENTS:
        raise InputError(f"at most {MAX_ATTACHMENTS} attachments per message (a long text counts as one)")
    sources = open_sources(attachments)
    if long_text:
        sources.append(long_text_source(encoded))
    return sources


async def _upload_all(session: Session, sources: list[Source], progress: ProgressFor) -> list[AttachmentRef]:
    """Upload every source, one after the other; thumbnails share ``THUMBNAIL_BUDGET``."""
    refs: list[AttachmentRef] = []
    room = THUMBNAIL_BUDGET
    for source in sources:
        report = no_progress(source.name) if source.flags else progress(source.name)
        ref = await upload(session.transport, source, report, thumbnail_room=room)
        room -= len(ref.thumbnail)
        refs.append(ref)
    return refs


async def _body(
    session: Session, text: str, sources: list[Source], involved: list[str], progress: ProgressFor
) -> tuple[int, bytes]:
    """The content kind and body, uploading what has to travel as a blob (once the
    recipients are known to exist: their device lists are fetched first)."""
    await _targets(session, involved, set())
    refs = await _upload_all(session, sources, progress)
    if not refs:
        return KIND_TEXT, text.encode("utf-8")
    inline = "" if any(ref.is_long_text for ref in refs) else text
    return KIND_RICH, RichBody(inline, tuple(refs)).to_bytes()


async def send_message(
    session: Session,
    recipients: list[str],
    text: str,
    attachments: Sequence[Path] = (),
    progress: ProgressFor = no_progress,
) -> SentMessage:
    """Seal ``text`` and ``attachments`` for every device of ``recipients`` and this
    account's other devices; see the module docstring for the order of the checks."""
    if not text and not attachments:
        raise InputError("the message is empty")
    others = _recipients(session, recipients)
    own = session.secrets.handle
    involved = [*others, own]
    sources = _open_all(text, attachments)  # an unreadable file fails before any network use
    try:
        kind, body = await _body(session, text, sources, involved, progress)
    finally:
        for source in sources:
            source.close()
    content = Content(
        sender=own,
        sender_device=session.secrets.device.device_id,
        members=members_of(own, others),
        message_id=crypto.random_bytes(MESSAGE_ID_SIZE),
        sent_at_ms=now_ms(),
        kind=kind,
        body=body,
    )
    response = await _deliver(session, content, others, involved)
    stored = [
        StoredAttachment(content.message_id.hex(), i, ref, path=_absolute(source.path))
        for i, (ref, source) in enumerate(zip(content.rich.attachments, sources, strict=True))
        if not ref.is_long_text
    ]
    return _record_sent(session, content, response, text, stored)


def _absolute(path: Path | None) -> Path | None:
    return path.resolve() if path is not None else None


async def _deliver(
    session: Session, content: Content, others: list[str], involved: list[str]
) -> wire.SendResponse:
    """Seal and post ``content``, re-fetching device lists after a device mismatch."""
    refresh: set[str] = set()
    for attempt in range(1, MAX_TRIES + 1):
        targets = await _targets(session, involved, refresh)
        sealed = seal_message(content, session.secrets.device, targets)
        request = wire.SendRequest(
            message_id=content.message_id.hex(),
            recipients=others,
            body=sealed.body,
            keys={device.hex(): key for device, key in sealed.wrapped_keys.items()},
            versions={h: session.directory.cached_version(h) or 0 for h in involved},
        )
        try:
            return await _post(session, request)
        except DeviceMismatch as exc:
            if attempt == MAX_TRIES:
                raise
            await _refuse_ghosts(session, exc, involved, _stale_handles(session, exc, involved))
            refresh = set()  # the lists involved are fresh now
    raise AssertionError("unreachable")  # pragma: no cover


async def _refuse_ghosts(
    session: Session, exc: DeviceMismatch, involved: list[str], refresh: set[str]
) -> None:
    """Fail if the server wants a device sealed to that no freshly verified list names.

    The lists of ``refresh`` are fetched and verified again here (``_targets`` then reads the
    same fresh lists). A device the server says is missing, and that no verified list of the
    conversation contains, was never approved by its account key: a ghost device.
    """
    known = {device.hex() for device in await _targets(session, involved, refresh)}
    missing = exc.details.get("missing")
    if not isinstance(missing, list):
        return
    known.add(session.secrets.device.device_id.hex())
    ghosts = sorted(str(d) for d in missing if str(d) not in known)
    if ghosts:
        raise VerificationError(
            f"the server asks to encrypt this message to device(s) {', '.join(ghosts)}, which "
            f"no signed device list of {', '.join(involved)} contains; refusing to send "
            "(the server may be trying to add a device the account never approved)",
            details={"ghost_devices": ghosts},
        )


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


def _record_sent(
    session: Session,
    content: Content,
    response: wire.SendResponse,
    text: str,
    stored: list[StoredAttachment],
) -> SentMessage:
    attachments = tuple(a.public() for a in stored)
    entry = HistoryEntry.of(
        content, response.accepted_at, "out", now_ms(), text=text, attachments=attachments
    )
    session.store.add_message(entry, stored)
    return SentMessage(
        id=entry.id,
        members=content.members,
        sent_at_ms=content.sent_at_ms,
        accepted_at_ms=response.accepted_at,
        devices=response.devices,
        attachments=attachments,
    )
