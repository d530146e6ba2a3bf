"""``Client``: one device of one account, and everything it can do.

Typical use::

    client = await Client.register(home, "https://chat.example", "alice", passphrase=b"...")
    async with client:
        await client.send(["bob"], "hello", [Path("photo.jpg")])
        async for message in client.receive(timeout=30, download=True):
            print(message.sender, message.text, [a.path for a in message.attachments])

A second device: ``pending = await Client.start_link(home2, server, ...)``; show
``pending.code``; on the first device ``await client.approve(code)``; then
``await pending.wait(300)`` returns the new device's ``Client``.

The flows live in their own modules (``linking``, ``sending``, ``receiving``); this class holds
the device's session and gives them one small public face.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from mailslot.client import linking, trust
from mailslot.client.attachments import ProgressFor, no_progress, save_bytes
from mailslot.client.keystore import DeviceSecrets, KdfParams
from mailslot.client.linking import PendingLink
from mailslot.client.models import (
    TRUST_POLICIES,
    Attachment,
    Contact,
    HistoryEntry,
    Identity,
    ReceivedMessage,
    SentMessage,
    TrustPolicy,
)
from mailslot.client.receiving import Fetch, Receiver, download_attachment
from mailslot.client.sending import send_message
from mailslot.client.session import Session, create_home, ensure_new_home, open_session, read_ca
from mailslot.client.transport import Transport, normalize_server
from mailslot.errors import InputError, NotFoundError
from mailslot.protocol import wire
from mailslot.protocol.device_list import DeviceList, DeviceRecord, sign_device_list
from mailslot.protocol.identity import AccountKey, DeviceKeys, check_handle

DOWNLOADS_DIR = "downloads"


class Client:
    """A set-up device: its keys are unlocked and its store is open until ``close()``."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # --- setting a device up -----------------------------------------------------------------

    @classmethod
    async def register(
        cls,
        home: Path,
        server: str,
        handle: str,
        *,
        passphrase: bytes,
        ca: Path | None = None,
        device_name: str = "primary",
        kdf: KdfParams | None = None,
        trust_new_identities: TrustPolicy = "on-first-use",
    ) -> Client:
        """Create account ``handle`` with this as its first device (device list version 1).

        Nothing is written to ``home`` until the server has accepted the account, so a taken
        handle or an unreachable server leaves no half-made device behind.
        """
        check_handle(handle)
        _check_policy(trust_new_identities)
        ensure_new_home(home)
        if not passphrase:
            raise InputError("the passphrase must not be empty")
        ca_pem = read_ca(ca)
        keys, account = DeviceKeys.generate(), AccountKey.generate()
        record = linking.new_record(keys, device_name)
        device_list = DeviceList.build(handle, account.public, 1, record.created_at_ms, [record])
        signed = sign_device_list(device_list, account)
        transport = Transport(normalize_server(server), keys, ca=ca)
        try:
            await transport.call(
                "POST",
                "/v1/accounts",
                wire.AccountInfo,
                body=wire.RegisterRequest(handle=handle, device_list=signed.to_bytes()),
            )
            secrets = DeviceSecrets(handle, transport.server, device_name, keys, account)
            session = create_home(
                home,
                secrets,
                passphrase,
                signed,
                device_list,
                transport,
                ca_pem=ca_pem,
                kdf=kdf,
                policy=trust_new_identities,
            )
        except BaseException:
            await transport.aclose()
            raise
        return cls(session)

    @classmethod
    async def start_link(
        cls,
        home: Path,
        server: str,
        *,
        passphrase: bytes,
        ca: Path | None = None,
        device_name: str,
        kdf: KdfParams | None = None,
    ) -> PendingLink:
        """Begin adding this (new) device to an existing account; see ``PendingLink``."""
        return await linking.start_link(
            home, server, passphrase=passphrase, ca=ca, device_name=device_name, kdf=kdf
        )

    @classmethod
    def open(
        cls, home: Path, *, passphrase: bytes, trust_new_identities: TrustPolicy = "on-first-use"
    ) -> Client:
        """Unlock the device set up in ``home``; ``trust_new_identities`` is the trust policy
        for keys this device has not seen before (see ``trust_new_identities``)."""
        return cls(open_session(home, passphrase, _check_policy(trust_new_identities)))

    async def close(self) -> None:
        await self._session.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- who this is ---------------------------------------------------------------------------

    @property
    def handle(self) -> str:
        return self._session.secrets.handle

    @property
    def device_id(self) -> str:
        """This device's id, 32 hex digits."""
        return self._session.secrets.device.device_id.hex()

    @property
    def device_name(self) -> str:
        return self._session.secrets.device_name

    @property
    def server(self) -> str:
        return self._session.secrets.server

    @property
    def home(self) -> Path:
        return self._session.home

    @property
    def default_downloads(self) -> Path:
        """Where attachments are saved unless the caller says otherwise: ``<home>/downloads``."""
        return self._session.home / DOWNLOADS_DIR

    # --- devices -----------------------------------------------------------------------------

    async def approve(self, code: str) -> DeviceRecord:
        """Add the new device that shows ``code`` to this account; return its record."""
        return await linking.approve(self._session, code)

    async def device_list(self, handle: str | None = None, *, refresh: bool = True) -> DeviceList:
        """The verified device list of ``handle`` (this account by default), fresh by default."""
        return await self._session.directory.get(handle or self.handle, refresh=refresh)

    # --- contacts and trust --------------------------------------------------------------------

    @property
    def trust_new_identities(self) -> TrustPolicy:
        """The trust policy: ``on-first-use`` (default) pins the first key seen for a handle as
        trusted-unverified; ``never`` pins it untrusted (nothing sent until ``trust``);
        ``always`` also accepts a changed key (pinned anew, unverified, with a log warning)."""
        return self._session.directory.policy

    @trust_new_identities.setter
    def trust_new_identities(self, policy: TrustPolicy) -> None:
        self._session.directory.policy = _check_policy(policy)

    async def identity(self, handle: str) -> Identity:
        """The account key the server serves for ``handle``, the safety code for this pair
        and the trust level; compare the code with the contact's ``identity(your handle)``."""
        return await trust.identity(self._session, handle)

    async def trust(self, handle: str) -> Contact:
        """Accept the account key ``handle`` has now (after a change, or under ``never``)."""
        return await trust.trust(self._session, handle)

    async def verify(self, handle: str, code: str) -> Contact:
        """Mark ``handle`` verified if ``code`` (60 digits, spaces ignored) is the safety code;
        else ``VerificationError``, with nothing changed."""
        return await trust.verify(self._session, handle, code)

    async def block(self, handle: str) -> Contact:
        """Send nothing to ``handle`` and drop its messages; ``trust`` undoes it."""
        return await trust.block(self._session, handle)

    def contacts(self) -> list[Contact]:
        """Every handle this device has pinned a key for (not this account), with its trust."""
        return trust.contacts(self._session)

    # --- messages ------------------------------------------------------------------------------

    async def send(
        self,
        recipients: list[str],
        text: str,
        attachments: Sequence[Path] = (),
        *,
        progress: ProgressFor | None = None,
    ) -> SentMessage:
        """Send ``text`` and the files ``attachments`` to ``recipients`` (several make a group).

        Files, and a text longer than the inline limit, are encrypted and uploaded first
        (``progress(name)`` gives the callback that follows each file's upload); see
        ``sending``. A message may be only attachments (``text`` empty).
        """
        return await send_message(self._session, recipients, text, attachments, progress or no_progress)

    async def receive(
        self,
        *,
        timeout: float | None = None,
        download: bool = False,
        downloads: Path | None = None,
        progress: ProgressFor | None = None,
    ) -> AsyncGenerator[ReceivedMessage, None]:
        """Queued messages, then (if ``timeout`` > 0) new ones for ``timeout`` seconds.

        With ``download``, each message's files are saved into ``downloads`` (default
        ``default_downloads``) before it is yielded; the attachments say where, or why not.
        """
        folder = downloads or self.default_downloads
        receiver = Receiver(self._session, Fetch(download, folder, progress or no_progress))
        async with contextlib.aclosing(receiver.drain()) as queued:
            async for message in queued:
                yield message
        if timeout is not None and timeout > 0:
            async with contextlib.aclosing(receiver.stream(timeout)) as pushed:  # closes the socket
                async for message in pushed:
                    yield message

    async def fetch_attachment(
        self, attachment_id: str, *, downloads: Path | None = None, progress: ProgressFor | None = None
    ) -> Attachment:
        """Download (again) the attachment ``<message id>-<n>`` while its blob lives.

        Saved under a new name if an earlier copy is there; ``NotFoundError`` if this device
        has no such attachment or the server no longer has the blob, ``VerificationError`` if
        it fails a check (nothing is saved then).
        """
        fetch = Fetch(True, downloads or self.default_downloads, progress or no_progress)
        return await download_attachment(self._session, attachment_id, fetch, quiet=False)

    def thumbnail(self, attachment_id: str) -> bytes:
        """The JPEG preview the sender put in the message (``b""`` if none)."""
        stored = self._session.store.attachment(attachment_id)
        if stored is None:
            raise NotFoundError(f"no attachment {attachment_id} on this device")
        return stored.ref.thumbnail

    async def save_thumbnail(
        self, attachment_id: str, *, downloads: Path | None = None
    ) -> tuple[Attachment, Path]:
        """Save the preview as ``<name>.preview.jpg`` in the downloads folder (safe name, no
        overwrite); ``NotFoundError`` if the attachment has none."""
        stored = self._session.store.attachment(attachment_id)
        if stored is None or not stored.ref.thumbnail:
            raise NotFoundError(f"attachment {attachment_id} has no preview on this device")
        path = await save_bytes(
            stored.ref.thumbnail, f"{stored.ref.name}.preview.jpg", downloads or self.default_downloads
        )
        return stored.public(), path

    def history(self, handle: str | None = None) -> list[HistoryEntry]:
        """Stored messages, oldest first; with ``handle``, conversations that include it."""
        return self._session.store.history(check_handle(handle) if handle is not None else None)


def _check_policy(policy: str) -> TrustPolicy:
    for known in TRUST_POLICIES:
        if policy == known:
            return known
    raise InputError(f"unknown trust policy {policy!r}: use one of {', '.join(TRUST_POLICIES)}")
