"""A bare-bones API caller for server tests: protocol functions plus httpx, no client library.

It lets a test build exactly the request it wants (forged, replayed, malformed) and send it to
a real server over real TLS.
"""

from __future__ import annotations

import os
import sqlite3
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mailslot.protocol import crypto, wire
from mailslot.protocol.auth import sign_request
from mailslot.protocol.device_list import DeviceList, DeviceRecord, sign_device_list
from mailslot.protocol.identity import AccountKey, DeviceKeys
from mailslot.protocol.message import KIND_TEXT, Content, members_of, seal_message
from mailslot.protocol.recovery import RecoverySecret

PIECE_TYPE = "application/offset+octet-stream"


def tls_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def record_of(keys: DeviceKeys, name: str = "dev") -> DeviceRecord:
    return DeviceRecord(keys.device_id, keys.sign_public, crypto.SUITE, keys.enc_public, name, 1)


@dataclass
class RawAccount:
    handle: str
    account: AccountKey = field(default_factory=AccountKey.generate)
    devices: list[DeviceKeys] = field(default_factory=lambda: [DeviceKeys.generate()])
    version: int = 1
    recovery: RecoverySecret = field(default_factory=RecoverySecret.generate)

    def signed_list(
        self, version: int | None = None, devices: list[DeviceKeys] | None = None,
        approver: DeviceKeys | None = None,
    ) -> bytes:
        """The account's list at ``version`` holding ``devices``, approved by ``approver``
        (default: the first listed device)."""
        listed = devices or self.devices
        by = approver or listed[0]
        records = [record_of(k, f"dev{i}") for i, k in enumerate(listed)]
        dl = DeviceList.build(
            self.handle, self.account.public, version or self.version, 1, records,
            approver=by.device_id, recovery_key=self.recovery.key_for(self.handle).public,
        )
        return sign_device_list(dl, self.account, by).to_bytes()


class Api:
    """Signs and sends requests to one live server."""

    def __init__(self, url: str, ca: Path) -> None:
        self.http = httpx.Client(base_url=url, verify=tls_context(ca), timeout=10)

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        target: str,
        keys: DeviceKeys | None,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        data = raw if raw is not None else (wire.encode(body) if body is not None else b"")
        sent_headers = {"content-type": "application/json", **(headers or {})}
        if keys is not None and "authorization" not in sent_headers:
            sig = sign_request(
                keys, method, target, data, now_ms=time.time_ns() // 10**6, nonce=os.urandom(16)
            )
            sent_headers["authorization"] = sig.to_header()
        return self.http.request(method, target, content=data, headers=sent_headers)

    def register(self, acct: RawAccount, invite: str | None = None) -> httpx.Response:
        body = wire.RegisterRequest(acct.handle, acct.signed_list(), invite)
        return self.call("POST", "/v1/accounts", acct.devices[0], body)

    def publish(
        self, acct: RawAccount, approver: DeviceKeys | None = None, *, version: int | None = None
    ) -> httpx.Response:
        """PUT the account's list with its current ``devices`` at ``version`` (default: the next
        one), approved and signed for by ``approver`` (default: the first device); on success
        the account's ``version`` follows."""
        by = approver or acct.devices[0]
        number = version or acct.version + 1
        body = wire.DeviceListBody(acct.signed_list(version=number, approver=by))
        response = self.call("PUT", f"/v1/accounts/{acct.handle}/devices", by, body)
        if response.status_code == 200:
            acct.version = number
        return response

    def send_text(
        self,
        sender: RawAccount,
        device: DeviceKeys,
        recipients: dict[str, RawAccount],
        text: str,
        message_id: bytes | None = None,
    ) -> httpx.Response:
        content = Content(
            sender.handle,
            device.device_id,
            members_of(sender.handle, list(recipients)),
            message_id or os.urandom(16),
            int(time.time() * 1000),
            KIND_TEXT,
            text.encode(),
        )
        targets = {k.device_id: k.enc_public for a in recipients.values() for k in a.devices}
        targets.update({k.device_id: k.enc_public for k in sender.devices if k is not device})
        sealed = seal_message(content, device, targets)
        versions = {handle: acct.version for handle, acct in recipients.items()}
        body = wire.SendRequest(
            content.message_id.hex(),
            sorted(recipients),
            sealed.body,
            {d.hex(): key for d, key in sealed.wrapped_keys.items()},
            {**versions, sender.handle: sender.version},
        )
        return self.call("POST", "/v1/messages", device, body)

    # --- blobs ---------------------------------------------------------------------------------
    def create_blob(self, device: DeviceKeys, size: int) -> httpx.Response:
        return self.call("POST", "/v1/blobs", device, wire.BlobCreate(size))

    def blob_status(self, device: DeviceKeys, blob_id: str) -> httpx.Response:
        return self.call("GET", f"/v1/blobs/{blob_id}/upload", device)

    def patch_blob(
        self,
        device: DeviceKeys | None,
        blob_id: str,
        offset: int,
        data: bytes,
        *,
        signed_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One upload piece; ``signed_body`` signs other bytes than those sent (a forgery)."""
        target = f"/v1/blobs/{blob_id}"
        sent = {"content-type": PIECE_TYPE, "upload-offset": str(offset), **(headers or {})}
        if device is not None and "authorization" not in sent:
            sent["authorization"] = self.sign(
                device, "PATCH", target, data if signed_body is None else signed_body
            )
        return self.http.request("PATCH", target, content=data, headers=sent)

    def sign(self, device: DeviceKeys, method: str, target: str, body: bytes) -> str:
        now = time.time_ns() // 10**6
        return sign_request(device, method, target, body, now_ms=now, nonce=os.urandom(16)).to_header()

    def upload(self, device: DeviceKeys, data: bytes, piece: int) -> str:
        """Create a blob holding ``data`` and upload it in pieces; its id."""
        created = self.create_blob(device, len(data))
        assert created.status_code == 201, created.text
        blob_id: str = created.json()["blob_id"]
        for start in range(0, len(data), piece):
            answer = self.patch_blob(device, blob_id, start, data[start : start + piece])
            assert answer.status_code == 200, answer.text
        return blob_id

    def get_blob(self, blob_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.get(f"/v1/blobs/{blob_id}", headers=headers)


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a refused request changed nothing."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
