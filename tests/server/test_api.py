"""The HTTP API through a real server over real TLS: happy paths and every refusal.

Each refusal asserts the exact status and error code, and that the database did not change.
"""

from __future__ import annotations

import os
import time

import pytest

from mailslot.protocol import wire
from mailslot.protocol.auth import sign_request
from mailslot.protocol.identity import DeviceKeys
from tests.conftest import LiveServer
from tests.server.rawapi import Api, RawAccount, snapshot


def db(live_server: LiveServer):  # type: ignore[no-untyped-def]
    return snapshot(live_server.data_dir / "mailslot.db")


def assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.json()["message"]


def test_health_and_openapi(api: Api) -> None:
    assert api.call("GET", "/health", None).json() == {"status": "ok"}
    doc = api.call("GET", "/openapi.json", None).json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/messages" in doc["paths"]
    assert "SendRequest" in doc["components"]["schemas"]
    paths = doc["paths"]
    assert paths["/v1/accounts/{handle}/devices/history"]["get"]["responses"]["200"]["content"]
    assert "security" not in paths["/v1/accounts/{handle}/devices/history"]["get"]
    assert paths["/v1/accounts/{handle}/recover"]["post"]["security"] == [{"deviceSignature": []}]
    assert paths["/v1/devices"]["get"]["security"] == [{"deviceSignature": []}]
    assert {"DeviceListHistory", "RecoverRequest", "DevicesSeen"} <= set(doc["components"]["schemas"])


def test_unknown_route_and_method_are_json_errors(api: Api) -> None:
    assert_error(api.call("GET", "/nope", None), 404, "not_found")
    assert api.call("DELETE", "/v1/messages", None).status_code == 405


def test_register_then_fetch_list(api: Api, alice: RawAccount, bob: RawAccount) -> None:
    response = api.call("GET", "/v1/accounts/alice/devices", bob.devices[0])
    assert response.status_code == 200
    body = wire.decode(response.content, wire.DeviceListResponse)
    assert body.version == 1
    assert body.device_list == alice.signed_list()


def test_register_taken_handle(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    before = db(live_server)
    assert_error(api.register(RawAccount("alice")), 409, "handle_taken")
    assert db(live_server) == before


@pytest.mark.parametrize("handle", ["Alice", "", "a" * 33, "-x", "a b", "ali/ce"])
def test_register_bad_handle(api: Api, handle: str) -> None:
    acct = RawAccount("valid")
    body = wire.RegisterRequest(handle, acct.signed_list())
    assert_error(api.call("POST", "/v1/accounts", acct.devices[0], body), 400, "bad_request")


def test_register_list_for_other_handle(api: Api, live_server: LiveServer) -> None:
    acct = RawAccount("carol")
    before = db(live_server)
    body = wire.RegisterRequest("dave", acct.signed_list())
    assert_error(api.call("POST", "/v1/accounts", acct.devices[0], body), 400, "bad_request")
    assert db(live_server) == before


def test_register_forged_list_signature(api: Api, live_server: LiveServer) -> None:
    acct = RawAccount("carol")
    data = bytearray(acct.signed_list())
    data[-1] ^= 1
    before = db(live_server)
    body = wire.RegisterRequest("carol", bytes(data))
    assert_error(api.call("POST", "/v1/accounts", acct.devices[0], body), 400, "bad_request")
    assert db(live_server) == before


def test_register_signed_by_unlisted_device(api: Api, live_server: LiveServer) -> None:
    acct = RawAccount("carol")
    body = wire.RegisterRequest("carol", acct.signed_list())
    before = db(live_server)
    assert_error(api.call("POST", "/v1/accounts", DeviceKeys.generate(), body), 401, "unauthenticated")
    assert_error(api.call("POST", "/v1/accounts", None, body), 401, "unauthenticated")
    assert db(live_server) == before


def test_register_version_must_be_one(api: Api) -> None:
    acct = RawAccount("carol", version=2)
    assert_error(api.register(acct), 400, "bad_request")


def test_malformed_bodies(api: Api, alice: RawAccount) -> None:
    dev = alice.devices[0]
    assert_error(api.call("POST", "/v1/messages", dev, raw=b"{not json"), 400, "bad_request")
    assert_error(api.call("POST", "/v1/messages", dev, raw=b'{"message_id": 5}'), 400, "bad_request")
    extra = b'{"message_ids": [], "surprise": 1}'
    assert_error(api.call("POST", "/v1/queue/ack", dev, raw=extra), 400, "bad_request")
    assert_error(api.call("POST", "/v1/queue/ack", dev, raw=b'{"message_ids": ["zz"]}'), 400, "bad_request")
    assert_error(api.call("GET", "/v1/queue?limit=-1", dev), 400, "bad_request")


def test_unknown_handle(api: Api, alice: RawAccount) -> None:
    assert_error(api.call("GET", "/v1/accounts/nobody/devices", alice.devices[0]), 404, "unknown_handle")
    response = api.send_text(alice, alice.devices[0], {"nobody": RawAccount("nobody")}, "hi")
    assert_error(response, 404, "unknown_handle")
    assert response.json()["details"]["handles"] == ["nobody"]


class TestAuthentication:
    def test_missing_and_malformed_header(self, api: Api, alice: RawAccount) -> None:
        assert_error(api.call("GET", "/v1/queue", None), 401, "unauthenticated")
        bad = {"authorization": "Bearer abc"}
        assert_error(api.call("GET", "/v1/queue", None, headers=bad), 401, "unauthenticated")

    def test_unknown_device(self, api: Api, alice: RawAccount) -> None:
        assert_error(api.call("GET", "/v1/queue", DeviceKeys.generate()), 401, "unauthenticated")

    def test_forged_signature(self, api: Api, alice: RawAccount) -> None:
        dev = alice.devices[0]
        sig = sign_request(dev, "GET", "/v1/queue", b"", now_ms=time.time_ns() // 10**6, nonce=os.urandom(16))
        header = sig.to_header()
        forged = header[:-1] + ("0" if header[-1] != "0" else "1")
        assert_error(
            api.call("GET", "/v1/queue", None, headers={"authorization": forged}), 401, "unauthenticated"
        )

    def test_signature_for_another_target(self, api: Api, alice: RawAccount) -> None:
        dev = alice.devices[0]
        sig = sign_request(
            dev, "GET", "/v1/queue?limit=5", b"", now_ms=time.time_ns() // 10**6, nonce=os.urandom(16)
        )
        response = api.call("GET", "/v1/queue", None, headers={"authorization": sig.to_header()})
        assert_error(response, 401, "unauthenticated")

    def test_stale_timestamp(self, api: Api, alice: RawAccount) -> None:
        old = time.time_ns() // 10**6 - 10 * 60 * 1000
        sig = sign_request(alice.devices[0], "GET", "/v1/queue", b"", now_ms=old, nonce=os.urandom(16))
        response = api.call("GET", "/v1/queue", None, headers={"authorization": sig.to_header()})
        assert_error(response, 401, "unauthenticated")

    def test_replayed_request(
        self, api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
    ) -> None:
        first = api.send_text(alice, alice.devices[0], {"bob": bob}, "once")
        assert first.status_code == 201
        request = first.request
        before = db(live_server)
        replay = api.http.request(
            "POST", "/v1/messages", content=request.content, headers=dict(request.headers)
        )
        assert_error(replay, 401, "unauthenticated")
        assert "replay" in replay.json()["message"]
        assert db(live_server) == before


class TestDeviceLists:
    def test_publish_adds_device(self, api: Api, alice: RawAccount) -> None:
        alice.devices.append(DeviceKeys.generate())
        response = api.publish(alice)
        assert response.status_code == 200
        assert response.json() == {"handle": "alice", "version": 2}
        # the new device can now authenticate
        assert api.call("GET", "/v1/queue", alice.devices[1]).status_code == 200

    def test_stale_version(self, api: Api, live_server: LiveServer, alice: RawAccount) -> None:
        before = db(live_server)
        body = wire.DeviceListBody(alice.signed_list(version=1))
        assert_error(
            api.call("PUT", "/v1/accounts/alice/devices", alice.devices[0], body), 409, "stale_device_list"
        )
        assert db(live_server) == before

    def test_other_account_cannot_publish(
        self, api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
    ) -> None:
        before = db(live_server)
        body = wire.DeviceListBody(alice.signed_list(version=2))
        assert_error(api.call("PUT", "/v1/accounts/alice/devices", bob.devices[0], body), 403, "forbidden")
        assert db(live_server) == before

    def test_list_signed_by_another_key_is_refused(
        self, api: Api, live_server: LiveServer, alice: RawAccount
    ) -> None:
        """The server cannot be tricked into a ghost device by a list under a new key."""
        impostor = RawAccount("alice", devices=[*alice.devices, DeviceKeys.generate()], version=2)
        before = db(live_server)
        body = wire.DeviceListBody(impostor.signed_list())
        assert_error(api.call("PUT", "/v1/accounts/alice/devices", alice.devices[0], body), 403, "forbidden")
        assert db(live_server) == before


class TestSend:
    def test_send_fetch_ack(
        self, api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
    ) -> None:
        response = api.send_text(alice, alice.devices[0], {"bob": bob}, "hello")
        assert response.status_code == 201
        assert response.json()["devices"] == 1
        queue = wire.decode(api.call("GET", "/v1/queue", bob.devices[0]).content, wire.QueueResponse)
        assert [m.sender for m in queue.messages] == ["alice"]
        message_id = queue.messages[0].message_id
        # alice cannot read or ack bob's queue
        assert (
            wire.decode(api.call("GET", "/v1/queue", alice.devices[0]).content, wire.QueueResponse).messages
            == []
        )
        assert api.call("POST", "/v1/queue/ack", alice.devices[0], wire.AckRequest([message_id])).json() == {
            "deleted": 0
        }
        assert len(db(live_server)["messages"]) == 1
        assert api.call("POST", "/v1/queue/ack", bob.devices[0], wire.AckRequest([message_id])).json() == {
            "deleted": 1
        }
        snap = db(live_server)
        assert snap["messages"] == [] and snap["queue"] == []

    def test_send_is_idempotent(
        self, api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
    ) -> None:
        message_id = os.urandom(16)
        first = api.send_text(alice, alice.devices[0], {"bob": bob}, "hi", message_id)
        before = db(live_server)
        again = api.send_text(alice, alice.devices[0], {"bob": bob}, "hi", message_id)
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["accepted_at"] == first.json()["accepted_at"]
        assert db(live_server) == before

    def test_message_id_of_another_sender(self, api: Api, alice: RawAccount, bob: RawAccount) -> None:
        message_id = os.urandom(16)
        assert api.send_text(alice, alice.devices[0], {"bob": bob}, "hi", message_id).status_code == 201
        response = api.send_text(bob, bob.devices[0], {"alice": alice}, "hi", message_id)
        assert_error(response, 409, "message_id_conflict")

    def test_missing_device(
        self, api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
    ) -> None:
        stale_bob = RawAccount("bob", account=bob.account, devices=list(bob.devices))
        bob.devices.append(DeviceKeys.generate())
        api.call(
            "PUT", "/v1/accounts/bob/devices", bob.devices[0], wire.DeviceListBody(bob.signed_list(version=2))
        )
        before = db(live_server)
        response = api.send_text(alice, alice.devices[0], {"bob": stale_bob}, "hi")
        assert_error(response, 409, "device_mismatch")
        details = response.json()["details"]
        assert details["missing"] == [bob.devices[1].device_id.hex()]
        assert details["stale"] == []
        assert details["outdated"] == ["bob"]
        assert details["versions"]["bob"] == 2
        assert db(live_server) == before

    def test_stale_device(self, api: Api, alice: RawAccount, bob: RawAccount) -> None:
        ghost = RawAccount("bob", devices=[*bob.devices, DeviceKeys.generate()])
        response = api.send_text(alice, alice.devices[0], {"bob": ghost}, "hi")
        assert_error(response, 409, "device_mismatch")
        assert response.json()["details"]["stale"] == [ghost.devices[1].device_id.hex()]

    def test_sender_other_devices_are_required(self, api: Api, alice: RawAccount, bob: RawAccount) -> None:
        alice.devices.append(DeviceKeys.generate())
        assert api.publish(alice).status_code == 200
        ok = api.send_text(alice, alice.devices[0], {"bob": bob}, "hi")
        assert ok.status_code == 201 and ok.json()["devices"] == 2
        queue = wire.decode(api.call("GET", "/v1/queue", alice.devices[1]).content, wire.QueueResponse)
        assert len(queue.messages) == 1
        copies = {m.key for m in queue.messages} | {
            m.key
            for m in wire.decode(
                api.call("GET", "/v1/queue", bob.devices[0]).content, wire.QueueResponse
            ).messages
        }
        assert len(copies) == 2  # each device got its own wrapped key


@pytest.mark.parametrize("server_settings", [{"max_body_bytes": 2048}])
def test_oversized_body(api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount) -> None:
    before = db(live_server)
    assert_error(api.send_text(alice, alice.devices[0], {"bob": bob}, "x" * 4096), 413, "too_large")
    huge = b"{" + b" " * (live_server.config.max_request_bytes + 10) + b"}"
    assert_error(api.call("POST", "/v1/messages", alice.devices[0], raw=huge), 413, "too_large")
    assert db(live_server) == before


@pytest.mark.parametrize("server_settings", [{"max_queue_per_device": 2}])
def test_queue_full(api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount) -> None:
    for _ in range(2):
        assert api.send_text(alice, alice.devices[0], {"bob": bob}, "x").status_code == 201
    before = db(live_server)
    assert_error(api.send_text(alice, alice.devices[0], {"bob": bob}, "x"), 429, "queue_full")
    assert db(live_server) == before


@pytest.mark.parametrize("server_settings", [{"rate_per_device_per_s": 0.5, "rate_burst": 3}])
def test_rate_limit(api: Api, alice: RawAccount) -> None:
    statuses = [api.call("GET", "/v1/queue", alice.devices[0]).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200]
    last = api.call("GET", "/v1/queue", alice.devices[0])
    assert_error(last, 429, "rate_limited")
    assert int(last.headers["retry-after"]) >= 1


@pytest.mark.parametrize("server_settings", [{"max_devices_per_account": 2}])
def test_too_many_devices(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    alice.devices.extend([DeviceKeys.generate(), DeviceKeys.generate()])
    before = db(live_server)
    body = wire.DeviceListBody(alice.signed_list(version=2))
    assert_error(
        api.call("PUT", "/v1/accounts/alice/devices", alice.devices[0], body), 409, "too_many_devices"
    )
    assert db(live_server) == before


@pytest.mark.parametrize("server_settings", [{"message_ttl_s": 1, "sweep_interval_s": 0.2}])
def test_unfetched_mail_expires(
    api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
) -> None:
    assert api.send_text(alice, alice.devices[0], {"bob": bob}, "soon gone").status_code == 201
    assert len(db(live_server)["queue"]) == 1
    deadline = time.monotonic() + 10
    while db(live_server)["queue"] and time.monotonic() < deadline:
        time.sleep(0.2)
    snap = db(live_server)
    assert snap["queue"] == [] and snap["messages"] == []


def test_removed_device_loses_its_queue(
    api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
) -> None:
    bob.devices.append(DeviceKeys.generate())
    assert api.publish(bob).status_code == 200
    assert api.send_text(alice, alice.devices[0], {"bob": bob}, "x").status_code == 201
    removed = bob.devices.pop()
    assert api.publish(bob).status_code == 200
    response = api.call("GET", "/v1/queue", removed)
    assert_error(response, 403, "device_removed")
    assert response.json()["message"] == "this device was removed from account bob (device list version 3)"
    details = response.json()["details"]
    assert (details["handle"], details["version"]) == ("bob", 3)
    assert abs(details["removed_at"] - time.time() * 1000) < 60_000
    assert len(db(live_server)["queue"]) == 1


def test_send_needs_a_recipient_other_than_the_sender(
    api: Api, live_server: LiveServer, alice: RawAccount
) -> None:
    before = db(live_server)
    assert_error(api.send_text(alice, alice.devices[0], {}, "to nobody"), 400, "bad_request")
    assert db(live_server) == before


def test_a_device_of_another_account_cannot_be_listed(api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount) -> None:
    """Listing someone else's device (to receive their mail or speak as them) is refused."""
    before = db(live_server)
    carol = RawAccount("carol")
    carol.devices.append(alice.devices[0])
    body = wire.RegisterRequest("carol", carol.signed_list())
    assert_error(api.call("POST", "/v1/accounts", carol.devices[0], body), 409, "conflict")
    bob.devices.append(alice.devices[0])
    publish = wire.DeviceListBody(bob.signed_list(version=2))
    assert_error(api.call("PUT", "/v1/accounts/bob/devices", bob.devices[0], publish), 409, "conflict")
    assert db(live_server) == before
