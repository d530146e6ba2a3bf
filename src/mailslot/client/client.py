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

Lost every device? ``await Client.recover(home, server, handle, code, passphrase=...)`` with
the recovery code shown at registration (``client.recovery_code``, shown once).

The flows live in their own modules (``linking``, ``sending``, ``receiving``, ``devices``,
``alerts``, ``rotation``, ``recovery``); this class holds the device's session and gives them
one small public face.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path

from mailslot.client import alerts, devices, linking, recovery, rotation, trust
from mailslot.client.attachments import ProgressFor, no_progress, save_bytes
from mailslot.client.keystore import DeviceSecrets, KdfParams
from mailslot.client.linking import PendingLink
from mailslot.client.models import (
    TRUST_POLICIES,
    Attachment,
    Contact,
    DeviceAlert,
    DeviceInfo,
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
from mailslot.protocol.recovery import RecoverySecret

DOWNLOADS_DIR = "downloads"

AlertCallback = Callable[[DeviceAlert], None]


class Client:
    """A set-up device: its keys are unlocked and its store is open until ``close()``."""

    def __init__(self, session: Session) -> None:
        self._session = session
        # Shown once: set only on the client that ``register`` (or ``recover``) returns.
        self.recovery_code: str | None = None
        # How old the encryption key may get before ``receive`` rotates it (``rotate_keys``).
        self.rotation_interval_s: float = rotation.ROTATION_INTERVAL_S
        session.transport.on_removed = functools.partial(alerts.explain_removal, session)

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
        invite: str | None = None,
    ) -> Client:
        """Create account ``handle`` with this as its first device (device list version 1).

        ``invite`` is the token a server that is not open for registration asks for
        (``InviteRequired`` without one). The returned client's ``recovery_code`` is the
        account's recovery code: show it once; it is not stored anywhere.

        Nothing is written to ``home`` until the server has accepted the account, so a taken
        handle or an unreachable server leaves no half-made device behind.
        """
        check_handle(handle)
        _check_policy(trust_new_identities)
        ensure_new_home(home)
        if not passphrase:
            raise InputError("the passphrase must not be empty")
        ca_pem = read_ca(ca)
        keys, account, recovery = DeviceKeys.generate(), AccountKey.generate(), RecoverySecret.generate()
        record = linking.new_record(keys, device_name)
        device_list = DeviceList.build(
            handle, account.public, 1, record.created_at_ms, [record],
            approver=keys.device_id, recovery_key=recovery.key_for(handle).public,
        )
        signed = sign_device_list(device_list, account, keys)
        transport = Transport(normalize_server(server), keys, ca=ca)
        try:
            await transport.call(
                "POST",
                "/v1/accounts",
                wire.AccountInfo,
                body=wire.RegisterRequest(handle=handle, device_list=signed.to_bytes(), invite=invite),
            )
            secrets = DeviceSecrets(
                handle, transport.server, device_name, keys, account, kem_created_ms=record.created_at_ms
            )
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
        client = cls(session)
        client.recovery_code = recovery.code
        return client

    @classmethod
    async def recover(
        cls,
        home: Path,
        server: str,
        handle: str,
        code: str,
        *,
        passphrase: bytes,
        ca: Path | None = None,
        device_name: str = "primary",
        kdf: KdfParams | None = None,
        trust_new_identities: TrustPolicy = "on-first-use",
    ) -> Client:
        """Take account ``handle`` back with its recovery ``code``, onto a new device in ``home``.

        The account gets a new account key and this device as its only one (every old device
        is removed); ``recovery_code`` of the returned client is the NEW code (the old one no
        longer works). A wrong code is ``RecoveryRefused``, before anything is sent. Contacts
        see a changed key and must trust it again. See ``recovery``.
        """
        _check_policy(trust_new_identities)
        session, new_code = await recovery.recover(
            home, server, handle, code, passphrase=passphrase, ca=ca, device_name=device_name,
            kdf=kdf, policy=trust_new_identities,
        )
        client = cls(session)
        client.recovery_code = new_code
        return client

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

    async def devices(self) -> list[DeviceInfo]:
        """This account's devices (this one first), with when the server last saw each."""
        return await devices.devices(self._session)

    async def rename_device(self, name: str, device_id: str | None = None) -> DeviceRecord:
        """Rename a device of this account (this one by default); its new record.
        ``NotFoundError`` for an id the account does not list."""
        return await devices.rename(self._session, name, device_id)

    async def remove_device(self, device_id: str) -> DeviceRecord:
        """Remove another device of this account at once (it receives nothing more and is told
        ``DeviceRemoved``); the removed record. Not this device (``InputError``: run it on
        another device), not an unknown one (``NotFoundError``)."""
        return await devices.remove(self._session, device_id)

    async def check_devices(self) -> list[DeviceAlert]:
        """Check every change to this account's device list since the last check; record and
        return the new alerts that need attention (see ``alerts``). ``DeviceRemoved`` if this
        device was removed."""
        return await alerts.check_devices(self._session)

    def alerts(self, unseen_only: bool = True) -> list[DeviceAlert]:
        """Recorded device alerts (own account and contact notices), oldest first."""
        return self._session.store.alerts(unseen_only)

    def mark_alerts_seen(self) -> int:
        """Mark every alert seen; how many were not."""
        return self._session.store.mark_alerts_seen()

    async def rotate_keys(self, force: bool = False) -> bool:
        """Replace this device's encryption key if it is older than ``rotation_interval_s`` (or
        ``force``); whether it did. Old keys stay until their mail is read (``rotation``)."""
        return await rotation.rotate(self._session, force=force, interval_s=self.rotation_interval_s)

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
        on_alert: AlertCallback | None = None,
    ) -> AsyncGenerator[ReceivedMessage, None]:
        """Queued messages, then (if ``timeout`` > 0) new ones for ``timeout`` seconds.

        With ``download``, each message's files are saved into ``downloads`` (default
        ``default_downloads``) before it is yielded; the attachments say where, or why not.

        First the own device list is checked (``check_devices``) and the encryption key
        rotated if due (``rotate_keys``); the list is checked again whenever the server says
        it changed. Each new alert that needs attention, and each contact notice, goes to
        ``on_alert``.
        """
        report: AlertCallback = on_alert or _ignore
        await self._report(report)
        await self.rotate_keys()
        folder = downloads or self.default_downloads
        fetch = Fetch(download, folder, progress or no_progress)
        receiver = Receiver(self._session, fetch, on_devices=functools.partial(self._report, report))
        directory = self._session.directory
        directory.on_alert = on_alert
        try:
            async with contextlib.aclosing(receiver.drain()) as queued:
                async for message in queued:
                    yield message
            if timeout is not None and timeout > 0:
                async with contextlib.aclosing(receiver.stream(timeout)) as pushed:  # closes the socket
                    async for message in pushed:
                        yield message
        finally:
            directory.on_alert = None

    async def _report(self, report: AlertCallback) -> None:
        for alert in await self.check_devices():
            report(alert)

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


def _ignore(alert: DeviceAlert) -> None:
    """The default ``on_alert``: alerts stay recorded for ``Client.alerts``."""


def _check_policy(policy: str) -> TrustPolicy:
    for known in TRUST_POLICIES:
        if policy == known:
            return known
    raise InputError(f"unknown trust policy {policy!r}: use one of {', '.join(TRUST_POLICIES)}")
