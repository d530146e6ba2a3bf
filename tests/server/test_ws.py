"""The WebSocket push path through a real server over real TLS."""

from __future__ import annotations

import os
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from mailslot.protocol import wire
from mailslot.protocol.auth import sign_request
from mailslot.protocol.identity import DeviceKeys
from tests.conftest import LiveServer
from tests.server.rawapi import Api, RawAccount, snapshot, tls_context


def ws_connect(live_server: LiveServer, keys: DeviceKeys):  # type: ignore[no-untyped-def]
    sig = sign_request(keys, "GET", "/v1/ws", b"", now_ms=time.time_ns() // 10**6, nonce=os.urandom(16))
    url = live_server.url.replace("https://", "wss://") + "/v1/ws"
    return connect(
        url, ssl=tls_context(live_server.ca), additional_headers={"Authorization": sig.to_header()}
    )


def test_push_then_ack(api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount) -> None:
    queued = api.send_text(alice, alice.devices[0], {"bob": bob}, "before connect")
    assert queued.status_code == 201
    with ws_connect(live_server, bob.devices[0]) as ws:
        assert wire.decode(ws.recv(timeout=5), wire.WsDevices).version == 1  # announced first
        first = wire.decode(ws.recv(timeout=5), wire.WsDeliver).delivery
        assert first.sender == "alice"
        live = api.send_text(alice, alice.devices[0], {"bob": bob}, "while connected")
        second = wire.decode(ws.recv(timeout=5), wire.WsDeliver).delivery
        assert second.message_id == live.json()["message_id"]
        assert second.seq > first.seq
        ws.send(wire.encode(wire.WsAck([first.message_id, second.message_id])).decode())
        assert wire.decode(ws.recv(timeout=5), wire.WsAcked).deleted == 2
    assert snapshot(live_server.data_dir / "mailslot.db")["queue"] == []


def test_bad_frame_gets_error_frame(live_server: LiveServer, alice: RawAccount) -> None:
    with ws_connect(live_server, alice.devices[0]) as ws:
        wire.decode(ws.recv(timeout=5), wire.WsDevices)
        ws.send('{"type": "ack", "message_ids": ["nothex"]}')
        frame = wire.decode(ws.recv(timeout=5), wire.WsError)
        assert frame.error == "bad_request"


def test_unauthenticated_socket_is_refused(live_server: LiveServer, alice: RawAccount) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(live_server, DeviceKeys.generate())
    assert info.value.response.status_code == 401
    assert b"unknown device" in info.value.response.body
