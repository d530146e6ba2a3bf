"""End-to-end flows of the client library against a real server on loopback with real TLS.

Nothing here mocks the server. Where a test needs a server-side situation that honest clients
do not produce (a duplicate delivery, a message that fails verification), it makes it the way
an attacker or a crash would: by sending crafted but well-formed requests through a device's
own signed transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest

from mailslot.client import Client, ReceivedMessage
from mailslot.client.session import Session
from mailslot.errors import (
    ConfigError,
    DeviceMismatch,
    HandleTaken,
    InputError,
    KeyChanged,
    LinkTimeout,
    NetworkError,
    UnknownHandle,
    VerificationError,
)
from mailslot.protocol import crypto, wire
from mailslot.protocol.device_list import DeviceList, sign_device_list
from mailslot.protocol.message import KIND_TEXT, Content, seal_message
from tests.client.conftest import FAST_KDF, PASSPHRASE, Devices


def session_of(client: Client) -> Session:
    return client._session


async def drain(client: Client, timeout: float | None = None) -> list[ReceivedMessage]:
    return [m async for m in client.receive(timeout=timeout)]


async def queue_of(client: Client) -> list[wire.Delivery]:
    """What the server still holds for this device (raw, unprocessed)."""
    page = await session_of(client).transport.call(
        "GET", "/v1/queue", wire.QueueResponse, query={"after": 0, "limit": 100}
    )
    return page.messages


# --- registration ----------------------------------------------------------------------------


async def test_register_publishes_a_verified_version_1_list(devices: Devices) -> None:
    alice = await devices.register("alice")
    own = await alice.device_list()
    assert (own.handle, own.version) == ("alice", 1)
    assert [d.device_id.hex() for d in own.devices] == [alice.device_id]
    assert alice.handle == "alice" and alice.server.startswith("https://127.0.0.1:")


async def test_taken_handle_leaves_no_device_behind(
    devices: Devices, live_server: Any, tmp_path: Path
) -> None:
    await devices.register("alice")
    home = tmp_path / "second-alice"
    with pytest.raises(HandleTaken):
        await Client.register(
            home, live_server.url, "alice", passphrase=PASSPHRASE, ca=live_server.ca, kdf=FAST_KDF
        )
    assert not (home / "device.key").exists()


async def test_reopen_with_passphrase(devices: Devices) -> None:
    alice = await devices.register("alice")
    home = alice.home
    with pytest.raises(ConfigError, match="wrong passphrase"):
        Client.open(home, passphrase=b"not it")
    async with Client.open(home, passphrase=PASSPHRASE) as again:
        assert again.device_id == alice.device_id
        assert (await again.device_list()).version == 1


async def test_untrusted_certificate_is_a_network_error(live_server: Any, tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="cannot reach"):
        await Client.register(tmp_path / "h", live_server.url, "alice", passphrase=PASSPHRASE)


# --- messages ----------------------------------------------------------------------------------


async def test_send_both_ways_and_history(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    sent = await alice.send(["bob"], "hello bob")
    assert sent.devices == 1 and sent.members == ("alice", "bob")

    (got,) = await drain(bob)
    assert (got.id, got.sender, got.sender_device, got.text) == (
        sent.id,
        "alice",
        alice.device_id,
        "hello bob",
    )
    assert got.members == ("alice", "bob") and got.accepted_at_ms == sent.accepted_at_ms

    reply = await bob.send(["alice"], "hi alice ✉")
    (back,) = await drain(alice)
    assert back.id == reply.id and back.text == "hi alice ✉"

    assert [(h.id, h.direction) for h in alice.history()] == [(sent.id, "out"), (reply.id, "in")]
    assert [(h.id, h.direction) for h in bob.history("alice")] == [(sent.id, "in"), (reply.id, "out")]
    assert bob.history("carol") == []
    assert await queue_of(bob) == []  # acknowledged, hence deleted on the server


async def test_group_send_reaches_every_member(devices: Devices) -> None:
    alice, bob, carol = (
        await devices.register("alice"),
        await devices.register("bob"),
        await devices.register("carol"),
    )
    sent = await alice.send(["bob", "carol"], "hello both")
    assert sent.devices == 2 and sent.members == ("alice", "bob", "carol")
    for member in (bob, carol):
        (got,) = await drain(member)
        assert got.members == ("alice", "bob", "carol") and got.text == "hello both"
    await carol.send(["alice", "bob"], "reply all")
    assert [m.text for m in await drain(bob)] == ["reply all"]
    assert [m.text for m in await drain(alice)] == ["reply all"]
    assert [h.text for h in carol.history("bob")] == ["hello both", "reply all"]


async def test_unknown_recipient_and_bad_input(devices: Devices) -> None:
    alice = await devices.register("alice")
    with pytest.raises(UnknownHandle):
        await alice.send(["nobody"], "hello?")
    with pytest.raises(InputError):
        await alice.send(["alice"], "only me")
    with pytest.raises(InputError):
        await alice.send(["Not A Handle"], "x")


async def test_receive_streams_new_mail_over_the_websocket(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")

    async def first_streamed() -> ReceivedMessage:
        async with contextlib.aclosing(bob.receive(timeout=15)) as stream:
            async for message in stream:
                return message
        raise AssertionError("nothing arrived")

    task = asyncio.create_task(first_streamed())
    await asyncio.sleep(0.5)  # let bob drain the (empty) queue and open the socket
    sent = await alice.send(["bob"], "pushed")
    got = await asyncio.wait_for(task, 15)
    assert got.id == sent.id and got.text == "pushed"
    for _ in range(50):  # the ack frame is processed by the server asynchronously
        if not await queue_of(bob):
            break
        await asyncio.sleep(0.05)
    assert await queue_of(bob) == []


async def test_receive_with_timeout_returns_when_time_is_up(devices: Devices) -> None:
    bob = await devices.register("bob")
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await drain(bob, timeout=0.5) == []
    assert 0.4 < loop.time() - start < 5


# --- linking -----------------------------------------------------------------------------------


async def test_link_a_second_device(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    alice2 = await devices.link(alice, "phone")
    assert alice2.handle == "alice" and alice2.device_id != alice.device_id

    own = await alice2.device_list()
    assert own.version == 2
    assert {d.device_id.hex() for d in own.devices} == {alice.device_id, alice2.device_id}
    assert {d.name for d in own.devices} == {"primary", "phone"}

    sent = await bob.send(["alice"], "to all of alice")
    assert sent.devices == 2
    for device in (alice, alice2):
        assert [m.text for m in await drain(device)] == ["to all of alice"]

    mine = await alice2.send(["bob"], "from the phone")
    assert mine.devices == 2  # bob, and alice's other device
    (copy,) = await drain(alice)
    assert (copy.sender, copy.sender_device, copy.text) == ("alice", alice2.device_id, "from the phone")
    assert alice.history()[-1].direction == "out"


async def test_link_code_for_another_server_is_refused(devices: Devices) -> None:
    alice = await devices.register("alice")
    code = f"mailslot://link?v=1&server=https%3A%2F%2Fother.example&id={'a' * 32}&key={'b' * 32}"
    with pytest.raises(InputError, match=r"other\.example"):
        await alice.approve(code)


async def test_unapproved_link_times_out(live_server: Any, tmp_path: Path) -> None:
    pending = await Client.start_link(
        tmp_path / "new", live_server.url, passphrase=PASSPHRASE, ca=live_server.ca, device_name="x"
    )
    async with pending:
        with pytest.raises(LinkTimeout):
            await pending.wait(timeout=1.2)
    assert not (tmp_path / "new" / "device.key").exists()


async def test_device_mismatch_after_a_link_is_retried(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await bob.send(["alice"], "before")  # bob now caches alice's version-1 list
    alice2 = await devices.link(alice, "second")

    mismatches: list[DeviceMismatch] = []
    transport = session_of(bob).transport
    real_call = transport.call

    async def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            return await real_call(*args, **kwargs)
        except DeviceMismatch as exc:
            mismatches.append(exc)
            raise

    transport.call = spy  # type: ignore[method-assign]
    sent = await bob.send(["alice"], "after the link")
    assert len(mismatches) == 1 and mismatches[0].details["missing"] == [alice2.device_id]
    assert sent.devices == 2
    assert [m.text for m in await drain(alice2)] == ["after the link"]


# --- what receive refuses ------------------------------------------------------------------------


async def _post_raw(client: Client, request: wire.SendRequest) -> wire.SendResponse:
    return await session_of(client).transport.call("POST", "/v1/messages", wire.SendResponse, body=request)


async def test_duplicate_delivery_is_dropped_silently(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    requests: list[wire.SendRequest] = []
    transport = session_of(alice).transport
    real_call = transport.call

    async def spy(method: str, path: str, kind: Any, **kwargs: Any) -> Any:
        if path == "/v1/messages":
            requests.append(kwargs["body"])
        return await real_call(method, path, kind, **kwargs)

    transport.call = spy  # type: ignore[method-assign]
    await alice.send(["bob"], "once")
    assert [m.text for m in await drain(bob)] == ["once"]
    # The body is gone after bob's ack, so the same request is queued again: a redelivery.
    await _post_raw(alice, requests[-1])
    assert len(await queue_of(bob)) == 1
    assert await drain(bob) == []
    assert await queue_of(bob) == []
    assert len(bob.history()) == 1


async def test_rejected_message_is_logged_acked_and_not_yielded(
    devices: Devices, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    await devices.register("carol")
    bob_list = await alice.device_list("bob")
    # Signed by alice's real device, but the content says it is for alice and carol only.
    content = Content(
        sender="alice",
        sender_device=bytes.fromhex(alice.device_id),
        members=("alice", "carol"),
        message_id=crypto.random_bytes(16),
        sent_at_ms=1,
        kind=KIND_TEXT,
        body=b"not for bob",
    )
    sealed = seal_message(content, session_of(alice).secrets.device, _keys_of(bob_list))
    await _post_raw(
        alice,
        wire.SendRequest(
            message_id=content.message_id.hex(),
            recipients=["bob"],
            body=sealed.body,
            keys={d.hex(): k for d, k in sealed.wrapped_keys.items()},
            versions={"alice": 1, "bob": bob_list.version},
        ),
    )
    good = await alice.send(["bob"], "a good one")
    with caplog.at_level(logging.WARNING, logger="mailslot.client"):
        received = await drain(bob)
    assert [m.id for m in received] == [good.id]
    warnings = [r for r in caplog.records if r.name == "mailslot.client"]
    assert len(warnings) == 1
    assert "not addressed to this account" in warnings[0].getMessage()
    assert await queue_of(bob) == []
    assert [h.id for h in bob.history()] == [good.id]


async def test_tampered_body_is_rejected(devices: Devices, caplog: pytest.LogCaptureFixture) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    bob_list = await alice.device_list("bob")
    content = Content(
        "alice", bytes.fromhex(alice.device_id), ("alice", "bob"), b"\x07" * 16, 1, KIND_TEXT, b"x"
    )
    sealed = seal_message(content, session_of(alice).secrets.device, _keys_of(bob_list))
    body = bytearray(sealed.body)
    body[-1] ^= 1
    request = wire.SendRequest(
        content.message_id.hex(),
        ["bob"],
        bytes(body),
        {d.hex(): k for d, k in sealed.wrapped_keys.items()},
        versions={"alice": 1, "bob": bob_list.version},
    )
    await _post_raw(alice, request)
    with caplog.at_level(logging.WARNING, logger="mailslot.client"):
        assert await drain(bob) == []
    assert any("decryption" in r.getMessage() for r in caplog.records)
    assert await queue_of(bob) == []


def _keys_of(device_list: DeviceList) -> dict[bytes, bytes]:
    return {d.device_id: d.enc_key for d in device_list.devices}


# --- what the directory refuses ------------------------------------------------------------------


async def test_changed_account_key_raises_key_changed(devices: Devices) -> None:
    alice = await devices.register("alice")
    await devices.register("bob")
    session_of(alice).store.pin("bob", b"\x01" * 32, now_ms=1)  # as if bob's key had been another
    with pytest.raises(KeyChanged, match="'bob'"):
        await alice.device_list("bob")
    with pytest.raises(KeyChanged):
        await alice.send(["bob"], "hello")


async def test_device_list_rollback_is_refused(devices: Devices) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    current = await alice.device_list("bob")
    # A genuine bob-signed version 5 was seen once; the server now offers version 1 again.
    bob_keys = session_of(bob).secrets.device
    newer = DeviceList.build(
        "bob", current.account_key, 5, 1, list(current.devices),
        approver=bob_keys.device_id, recovery_key=current.recovery_key,
    )
    signed = sign_device_list(newer, session_of(bob).secrets.account, bob_keys)
    session_of(alice).store.save_device_list("bob", 5, signed.to_bytes())
    with pytest.raises(VerificationError, match="rollback"):
        await alice.device_list("bob", refresh=True)
