"""Device lists over a real server: publish rules, the history, recovery, last-seen times,
removed devices, and the WebSocket's device frames."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from websockets.exceptions import ConnectionClosed

from mailslot.protocol import wire
from mailslot.protocol.device_list import SignedDeviceList
from mailslot.protocol.identity import DeviceKeys
from mailslot.protocol.recovery import RecoverySecret, claim_bytes, sign_recovery
from mailslot.server.authn import LastSeen
from mailslot.server.storage.base import AccountRow, DeviceRow
from mailslot.server.storage.memory import MemoryStorage
from tests.conftest import LiveServer, on_store
from tests.server.rawapi import Api, RawAccount, snapshot
from tests.server.test_api import assert_error
from tests.server.test_ws import ws_connect


def db(live_server: LiveServer):  # type: ignore[no-untyped-def]
    return snapshot(live_server.data_dir / "mailslot.db")


@pytest.fixture
def duo(api: Api) -> RawAccount:
    """An account with two devices from the start."""
    acct = RawAccount("duo", devices=[DeviceKeys.generate(), DeviceKeys.generate()])
    assert api.register(acct).status_code == 201
    return acct


def versions_of(lists: list[bytes]) -> list[int]:
    return [SignedDeviceList.from_bytes(data).parse().version for data in lists]


class TestPublishRules:
    def test_a_skipped_version_is_refused(self, api: Api, live_server: LiveServer, duo: RawAccount) -> None:
        before = db(live_server)
        response = api.publish(duo, version=3)
        assert_error(response, 400, "bad_request")
        assert response.json()["details"] == {"current_version": 1}
        assert db(live_server) == before

    def test_the_same_version_again_is_stale(
        self, api: Api, live_server: LiveServer, duo: RawAccount
    ) -> None:
        assert api.publish(duo).status_code == 200
        before = db(live_server)
        response = api.publish(duo, version=2)
        assert_error(response, 409, "stale_device_list")
        assert response.json()["details"] == {"current_version": 2}
        assert db(live_server) == before

    def test_the_approver_must_be_the_publishing_device(
        self, api: Api, live_server: LiveServer, duo: RawAccount
    ) -> None:
        """A list approved by one device cannot be published by another (the approver in the
        history names the device that made the change)."""
        before = db(live_server)
        body = wire.DeviceListBody(duo.signed_list(version=2, approver=duo.devices[1]))
        response = api.call("PUT", "/v1/accounts/duo/devices", duo.devices[0], body)
        assert_error(response, 403, "forbidden")
        assert "approved by the device that publishes it" in response.json()["message"]
        assert db(live_server) == before
        assert api.publish(duo, approver=duo.devices[1]).status_code == 200

    def test_a_send_sealed_under_an_older_list_is_refused(
        self, api: Api, alice: RawAccount, duo: RawAccount
    ) -> None:
        """The same devices, but a newer version (a key may have rotated): 409 outdated."""
        old = RawAccount("duo", account=duo.account, devices=list(duo.devices))
        assert api.publish(duo).status_code == 200
        response = api.send_text(alice, alice.devices[0], {"duo": old}, "under version 1")
        assert_error(response, 409, "device_mismatch")
        details = response.json()["details"]
        assert (details["outdated"], details["missing"], details["stale"]) == (["duo"], [], [])
        assert api.send_text(alice, alice.devices[0], {"duo": duo}, "under version 2").status_code == 201


class TestHistory:
    def test_pages_in_order(self, api: Api, duo: RawAccount) -> None:
        for _ in range(3):
            assert api.publish(duo).status_code == 200
        whole = wire.decode(
            api.call("GET", "/v1/accounts/duo/devices/history", None).content, wire.DeviceListHistory
        )
        assert (whole.handle, versions_of(whole.lists), whole.more) == ("duo", [1, 2, 3, 4], False)
        assert whole.lists[-1] == duo.signed_list(version=4)
        first = wire.decode(
            api.call("GET", "/v1/accounts/duo/devices/history?after=0&limit=2", None).content,
            wire.DeviceListHistory,
        )
        assert (versions_of(first.lists), first.more) == ([1, 2], True)
        rest = wire.decode(
            api.call("GET", "/v1/accounts/duo/devices/history?after=2&limit=2", None).content,
            wire.DeviceListHistory,
        )
        assert (versions_of(rest.lists), rest.more) == ([3, 4], False)
        done = api.call("GET", "/v1/accounts/duo/devices/history?after=4", None).json()
        assert (done["lists"], done["more"]) == ([], False)

    def test_refusals(self, api: Api, duo: RawAccount) -> None:
        assert_error(api.call("GET", "/v1/accounts/nobody/devices/history", None), 404, "unknown_handle")
        for query in ("after=-1", "after=x", "limit=1.5"):
            assert_error(
                api.call("GET", f"/v1/accounts/duo/devices/history?{query}", None), 400, "bad_request"
            )


def recovery_of(acct: RawAccount, device: DeviceKeys) -> tuple[RawAccount, wire.RecoverRequest]:
    """The account as a new device recovers it: new account key, new recovery code, itself as
    the only device of the next version; and the request, claimed with the old code."""
    new = RawAccount(acct.handle, devices=[device], version=acct.version + 1)
    current = SignedDeviceList.from_bytes(acct.signed_list()).parse()
    new_list = new.signed_list()
    signature = sign_recovery(acct.recovery, current, SignedDeviceList.from_bytes(new_list))
    return new, wire.RecoverRequest(new_list, signature)


class TestRecovery:
    def test_recover_with_the_code(
        self, api: Api, live_server: LiveServer, alice: RawAccount, duo: RawAccount
    ) -> None:
        assert (
            api.send_text(alice, alice.devices[0], {"duo": duo}, "queued for the old devices").status_code
            == 201
        )
        assert len(db(live_server)["queue"]) == 2
        newcomer = DeviceKeys.generate()
        recovered, request = recovery_of(duo, newcomer)
        response = api.call("POST", "/v1/accounts/duo/recover", newcomer, request)
        assert response.status_code == 200, response.text
        assert response.json() == {"handle": "duo", "version": 2}
        assert db(live_server)["queue"] == []
        for old in duo.devices:
            gone = api.call("GET", "/v1/queue", old)
            assert_error(gone, 403, "device_removed")
            assert gone.json()["details"]["version"] == 2
        listed = wire.decode(
            api.call("GET", "/v1/accounts/duo/devices", alice.devices[0]).content, wire.DeviceListResponse
        )
        assert SignedDeviceList.from_bytes(listed.device_list).parse().account_key == recovered.account.public
        assert api.call("GET", "/v1/queue", newcomer).status_code == 200
        assert (
            api.send_text(alice, alice.devices[0], {"duo": recovered}, "to the new device").status_code == 201
        )

    def test_a_wrong_code_changes_nothing(self, api: Api, live_server: LiveServer, duo: RawAccount) -> None:
        newcomer = DeviceKeys.generate()
        recovered, _ = recovery_of(duo, newcomer)
        new_list = recovered.signed_list()
        current = SignedDeviceList.from_bytes(duo.signed_list()).parse()
        guess = RecoverySecret.generate().key_for("duo")
        request = wire.RecoverRequest(
            new_list, guess.sign(claim_bytes(current, SignedDeviceList.from_bytes(new_list)))
        )
        before = db(live_server)
        response = api.call("POST", "/v1/accounts/duo/recover", newcomer, request)
        assert_error(response, 403, "recovery_refused")
        assert db(live_server) == before
        assert api.call("GET", "/v1/queue", duo.devices[0]).status_code == 200

    def test_refusals(self, api: Api, live_server: LiveServer, alice: RawAccount, duo: RawAccount) -> None:
        newcomer = DeviceKeys.generate()
        _, request = recovery_of(duo, newcomer)
        before = db(live_server)
        # signed by a device that is not in the new list
        assert_error(
            api.call("POST", "/v1/accounts/duo/recover", DeviceKeys.generate(), request),
            401,
            "unauthenticated",
        )
        # a claim for another account's handle
        assert_error(api.call("POST", "/v1/accounts/alice/recover", newcomer, request), 400, "bad_request")
        assert_error(
            api.call("POST", "/v1/accounts/nobody/recover", newcomer, request), 404, "unknown_handle"
        )
        # the new device belongs to another account
        _, taken = recovery_of(duo, alice.devices[0])
        assert_error(api.call("POST", "/v1/accounts/duo/recover", alice.devices[0], taken), 409, "conflict")
        assert db(live_server) == before
        # the list moved on since the claim was made
        assert api.publish(duo).status_code == 200
        assert_error(
            api.call("POST", "/v1/accounts/duo/recover", newcomer, request), 409, "stale_device_list"
        )

    def test_the_new_device_must_approve_the_list(self, api: Api, duo: RawAccount) -> None:
        first, second = DeviceKeys.generate(), DeviceKeys.generate()
        new = RawAccount("duo", devices=[first, second], version=2)
        new_list = new.signed_list(approver=first)
        current = SignedDeviceList.from_bytes(duo.signed_list()).parse()
        claim = sign_recovery(duo.recovery, current, SignedDeviceList.from_bytes(new_list))
        response = api.call("POST", "/v1/accounts/duo/recover", second, wire.RecoverRequest(new_list, claim))
        assert_error(response, 403, "forbidden")
        assert (
            api.call(
                "POST", "/v1/accounts/duo/recover", first, wire.RecoverRequest(new_list, claim)
            ).status_code
            == 200
        )


class TestLastSeen:
    def test_devices_with_last_seen(self, api: Api, duo: RawAccount, alice: RawAccount) -> None:
        started = time.time() * 1000
        response = api.call("GET", "/v1/devices", duo.devices[0])
        assert response.status_code == 200
        seen = {d.device_id: d.last_seen for d in wire.decode(response.content, wire.DevicesSeen).devices}
        assert set(seen) == {k.device_id.hex() for k in duo.devices}
        mine = seen[duo.devices[0].device_id.hex()]
        assert mine is not None and started - 1000 <= mine <= time.time() * 1000
        # the second device only registered with the list; it never called
        assert seen[duo.devices[1].device_id.hex()] is None
        assert_error(api.call("GET", "/v1/devices", None), 401, "unauthenticated")

    def test_writes_are_batched_and_at_most_once_a_minute(self) -> None:
        store = _CountingStorage()
        device = DeviceKeys.generate().device_id
        asyncio.run(_fill(store, device))
        seen = LastSeen(store, resolution_ms=60_000)
        for at in (1_000, 2_000, 3_000):
            seen.seen(device, at)
        assert store.touches == []  # seen() never writes
        assert asyncio.run(seen.flush(3_000)) == 1
        for at in (4_000, 30_000, 60_999):
            seen.seen(device, at)
        assert asyncio.run(seen.flush(61_000)) == 0  # written at 3 s: not again within the minute
        seen.seen(device, 63_000)
        assert asyncio.run(seen.flush(63_000)) == 1
        assert store.touches == [{device: 3_000}, {device: 63_000}]
        assert asyncio.run(store.devices_seen("a")) == {device: 63_000}
        assert seen.recent() == {device: 63_000}


class _CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.touches: list[dict[bytes, int]] = []

    async def touch_devices(self, seen: dict[bytes, int]) -> None:
        self.touches.append(dict(seen))
        await super().touch_devices(seen)


async def _fill(store: MemoryStorage, device: bytes) -> None:
    await store.create_account(
        AccountRow("a", os.urandom(32), 1, b"list", 0), [DeviceRow(device, "a", os.urandom(32))]
    )


class TestWebSocket:
    def test_removed_device_gets_an_error_frame_and_others_a_devices_frame(
        self, api: Api, live_server: LiveServer, duo: RawAccount
    ) -> None:
        keeper, leaver = duo.devices
        with ws_connect(live_server, keeper) as kept, ws_connect(live_server, leaver) as dropped:
            assert wire.decode(kept.recv(timeout=5), wire.WsDevices).version == 1
            assert wire.decode(dropped.recv(timeout=5), wire.WsDevices).version == 1
            duo.devices.remove(leaver)
            assert api.publish(duo).status_code == 200
            error = wire.decode(dropped.recv(timeout=5), wire.WsError)
            assert error.error == "device_removed"
            assert error.message == "this device was removed from account duo (device list version 2)"
            with pytest.raises(ConnectionClosed):
                dropped.recv(timeout=5)
            assert wire.decode(kept.recv(timeout=5), wire.WsDevices).version == 2

    def test_a_removed_device_is_told_at_the_handshake(
        self, api: Api, live_server: LiveServer, duo: RawAccount
    ) -> None:
        leaver = duo.devices.pop()
        assert api.publish(duo).status_code == 200
        with ws_connect(live_server, leaver) as ws:
            assert wire.decode(ws.recv(timeout=5), wire.WsError).error == "device_removed"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)


@pytest.mark.parametrize("server_settings", [{"queue_recheck_s": 0.2}])
def test_a_disabled_account_is_dropped_at_the_next_recheck(live_server: LiveServer, duo: RawAccount) -> None:
    with ws_connect(live_server, duo.devices[0]) as ws:
        assert wire.decode(ws.recv(timeout=5), wire.WsDevices).version == 1
        on_store(live_server, lambda store: store.set_disabled("duo", True))
        error = wire.decode(ws.recv(timeout=5), wire.WsError)
        assert (error.error, error.message) == ("unauthenticated", "account disabled")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
