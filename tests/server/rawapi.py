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

    def signed_list(self, version: int | None = None, devices: list[DeviceKeys] | None = None) -> bytes:
        records = [record_of(k, f"dev{i}") for i, k in enumerate(devices or self.devices)]
        dl = DeviceList.build(self.handle, self.account.public, version or self.version, 1, records)
        return sign_device_list(dl, self.account).to_bytes()


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

    def register(self, acct: RawAccount) -> httpx.Response:
        body = wire.RegisterRequest(acct.handle, acct.signed_list())
        return self.call("POST", "/v1/accounts", acct.devices[0], body)

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
        body = wire.SendRequest(
            content.message_id.hex(),
            sorted(recipients),
            sealed.body,
            {d.hex(): key for d, key in sealed.wrapped_keys.items()},
        )
        return self.call("POST", "/v1/messages", device, body)


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a refused request changed nothing."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
