"""Adding a device: the new device's side (``start_link``, ``PendingLink``) and ``approve``.

The cryptography is in ``mailslot.protocol.linking``; this module does the I/O around it and
the checks that need state:

* the new device trusts the account key it receives only because it came sealed under the link
  secret it generated itself; it then checks that the list it received verifies under that key,
  is for the handle named, and lists this very device with the keys it made (so an approver
  cannot hand it a list that routes its mail elsewhere);
* the approving device accepts a link code only for its own server, checks the new device's
  self-signature (``open_link_request``), and builds the next list on top of its own freshly
  fetched and verified list, so it never signs away a device it did not see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailslot.client.keystore import DeviceSecrets, KdfParams
from mailslot.client.session import Session, create_home, ensure_new_home, read_ca
from mailslot.client.transport import Transport, normalize_server, now_ms
from mailslot.errors import (
    ConflictError,
    InputError,
    LinkTimeout,
    ServerError,
    VerificationError,
)
from mailslot.protocol import crypto, wire
from mailslot.protocol.device_list import (
    DeviceList,
    DeviceRecord,
    SignedDeviceList,
    sign_device_list,
    verify_device_list,
)
from mailslot.protocol.identity import DeviceKeys, check_device_name
from mailslot.protocol.linking import (
    LinkCode,
    LinkResponse,
    open_link_request,
    open_link_response,
    seal_link_request,
    seal_link_response,
)

if TYPE_CHECKING:
    from mailslot.client.client import Client

MAX_POLL_SECONDS = 30


def new_record(keys: DeviceKeys, name: str) -> DeviceRecord:
    """The public record of a freshly made device."""
    return DeviceRecord(
        device_id=keys.device_id,
        sign_key=keys.sign_public,
        suite=crypto.SUITE,
        enc_key=keys.enc_public,
        name=check_device_name(name),
        created_at_ms=now_ms(),
    )


@dataclass
class PendingLink:
    """A new device waiting for one of the account's devices to approve its link code."""

    home: Path
    link: LinkCode
    keys: DeviceKeys = field(repr=False)
    record: DeviceRecord
    passphrase: bytes = field(repr=False)
    ca_pem: bytes | None
    transport: Transport
    kdf: KdfParams | None = None
    _handed_off: bool = False

    @property
    def code(self) -> str:
        """The ``mailslot://link?...`` URI to type or scan on an existing device."""
        return self.link.to_uri()

    async def wait(self, timeout: float) -> Client:
        """Long-poll until approved, set the device up and return it; ``LinkTimeout`` if not."""
        from mailslot.client.client import Client  # the facade imports this module

        deadline = now_ms() + int(timeout * 1000)
        while True:
            remaining = (deadline - now_ms()) / 1000
            if remaining <= 0:
                raise LinkTimeout(f"nobody approved the link within {timeout:g} s")
            status = await self._poll(min(MAX_POLL_SECONDS, max(1, math.ceil(remaining))))
            if status.status == "approved":
                if status.response is None:
                    raise ServerError("the server reported an approval without a response")
                session = self._finish(open_link_response(self.link, self.keys, status.response))
                self._handed_off = True
                return Client(session)

    async def _poll(self, wait: int) -> wire.LinkStatus:
        return await self.transport.call(
            "GET",
            f"/v1/links/{self.link.link_id.hex()}/response",
            wire.LinkStatus,
            query={"wait": wait},
            signed=False,
            timeout=wait + 15,
        )

    def _finish(self, response: LinkResponse) -> Session:
        device_list = verify_device_list(
            response.signed_list, handle=response.handle, account_key=response.account_key.public
        )
        if device_list.find(self.record.device_id) != self.record:
            raise VerificationError("the approved device list does not contain this device")
        secrets = DeviceSecrets(
            response.handle,
            self.transport.server,
            self.record.name,
            self.keys,
            response.account_key,
            kem_created_ms=self.record.created_at_ms,
        )
        return create_home(
            self.home,
            secrets,
            self.passphrase,
            response.signed_list,
            device_list,
            self.transport,
            ca_pem=self.ca_pem,
            kdf=self.kdf,
        )

    async def aclose(self) -> None:
        """Release the connection, unless it now belongs to the linked ``Client``."""
        if not self._handed_off:
            await self.transport.aclose()

    async def __aenter__(self) -> PendingLink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def start_link(
    home: Path,
    server: str,
    *,
    passphrase: bytes,
    ca: Path | None,
    device_name: str,
    kdf: KdfParams | None = None,
) -> PendingLink:
    """Make this device's keys and a link code, and post the sealed request to the server."""
    ensure_new_home(home)
    if not passphrase:
        raise InputError("the passphrase must not be empty")
    ca_pem = read_ca(ca)
    keys = DeviceKeys.generate()
    record = new_record(keys, device_name)
    transport = Transport(normalize_server(server), keys, ca=ca)
    link = LinkCode.generate(transport.server)
    try:
        body = wire.LinkRequestBody(request=seal_link_request(link, keys, record))
        await transport.call(
            "POST", f"/v1/links/{link.link_id.hex()}", dict[str, Any], body=body, signed=False
        )
    except BaseException:
        await transport.aclose()
        raise
    return PendingLink(home, link, keys, record, passphrase, ca_pem, transport, kdf)


async def approve(session: Session, code: str) -> DeviceRecord:
    """Add the device behind ``code`` to this account: sign the next list and answer it."""
    link = LinkCode.parse(code)
    if normalize_server(link.server) != session.transport.server:
        raise InputError(
            f"the link code is for {link.server}, but this device uses {session.transport.server}"
        )
    path = f"/v1/links/{link.link_id.hex()}"
    request = await session.transport.call("GET", path, wire.LinkRequestBody)
    try:
        record = open_link_request(link, request.request)
    except VerificationError as exc:
        raise VerificationError("the link request does not match the code (wrong code?)") from exc
    signed = await _publish_with(session, record)
    response = seal_link_response(link, record, session.secrets.handle, signed, session.secrets.account)
    await session.transport.call(
        "POST", f"{path}/response", dict[str, Any], body=wire.LinkResponseBody(response=response)
    )
    return record


async def _publish_with(session: Session, record: DeviceRecord) -> SignedDeviceList:
    """Sign and PUT own list version+1 with ``record`` added to the current verified list."""
    handle = session.secrets.handle
    current = await session.directory.get(handle, refresh=True)
    if record.device_id in current.device_ids:
        return _already_listed(session, current, record)
    own = session.secrets.device
    new = current.successor([*current.devices, record], approver=own.device_id, issued_at_ms=now_ms())
    signed = sign_device_list(new, session.secrets.account, own)
    await session.transport.call(
        "PUT",
        f"/v1/accounts/{handle}/devices",
        wire.AccountInfo,
        body=wire.DeviceListBody(device_list=signed.to_bytes()),
    )
    session.directory.remember(signed, new)
    return signed


def _already_listed(session: Session, current: DeviceList, record: DeviceRecord) -> SignedDeviceList:
    """The current list, if it already holds exactly ``record`` (an approval being retried).

    A PUT that succeeded followed by a response that never reached the server would otherwise
    leave the new device listed but without the account key, and no way to finish.
    """
    stored = session.store.device_list(current.handle)
    if current.find(record.device_id) != record or stored is None or stored[0] != current.version:
        raise ConflictError("a different device with that id is already in this account's list")
    return SignedDeviceList.from_bytes(stored[1])
