"""Prometheus metrics: scraped from a real node's own listener while real requests go through it.

Counters are compared before and after each step, so the tests say exactly how much each event
moves them; the queue gauges come from ``Storage.queue_stats``, checked here on every engine.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from mailslot.protocol import wire
from mailslot.protocol.auth import sign_request
from mailslot.protocol.identity import DeviceKeys
from mailslot.server.config import ServerConfig
from mailslot.server.metrics import Metrics
from mailslot.server.runner import ServerThread
from mailslot.server.storage import open_storage
from mailslot.server.storage.base import NewMessage, Storage
from tests.conftest import LiveServer, make_data_dir
from tests.server.rawapi import Api, RawAccount, tls_context
from tests.server.services import empty_database, fresh_database
from tests.server.storage.test_conformance import register

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str | None) -> Samples:
    assert url is not None
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def wait_for(url: str | None, name: str, expected: float, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := value(scrape(url), name)) != expected:
        assert time.monotonic() < deadline, f"{name} stayed at {seen}, expected {expected}"
        time.sleep(0.02)


def ws_connect(live_server: LiveServer, keys: DeviceKeys) -> ClientConnection:
    sig = sign_request(keys, "GET", "/v1/ws", b"", now_ms=time.time_ns() // 10**6, nonce=os.urandom(16))
    url = live_server.url.replace("https://", "wss://") + "/v1/ws"
    return connect(
        url, ssl=tls_context(live_server.ca), additional_headers={"Authorization": sig.to_header()}
    )


# --- the listener --------------------------------------------------------------------------------
def test_defaults_bind_metrics_to_loopback(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path)
    assert (config.metrics, config.metrics_host, config.metrics_port) == (True, "127.0.0.1", 9464)


def test_metrics_listener_is_separate_and_on_loopback(live_server: LiveServer, api: Api) -> None:
    url = live_server.metrics_url
    assert url is not None and url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    assert url.rsplit(":", 1)[1] != live_server.url.rsplit(":", 1)[1]
    samples = scrape(url)
    assert value(samples, "mailslot_websocket_connections") == 0
    assert value(samples, "mailslot_queue_entries") == 0
    assert ("process_cpu_seconds_total", ()) in samples
    # Not on the API's port, and nothing else on the metrics port.
    on_api = api.call("GET", "/metrics", None)
    assert on_api.status_code == 404 and on_api.json()["error"] == "not_found"
    base = url.removesuffix("/metrics")
    assert httpx.get(base + "/", timeout=5).status_code == 404
    assert httpx.get(base + "/v1/queue", timeout=5).status_code == 404
    assert httpx.post(url, timeout=5).status_code == 405
    head = httpx.head(url, timeout=5)
    assert head.status_code == 200 and head.content == b""


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "server", metrics=False)
    with ServerThread(config) as thread:
        assert thread.metrics_url is None
        assert httpx.get(thread.url + "/health", verify=False, timeout=5).status_code == 200


def test_a_busy_metrics_port_is_logged_and_mail_still_flows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = make_data_dir(tmp_path / "server", metrics_port=taken.getsockname()[1])
        with ServerThread(config) as thread:
            assert thread.metrics_url is None
            assert httpx.get(thread.url + "/health", verify=False, timeout=5).status_code == 200
    assert any("metrics listener off" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_nodes_in_one_process_count_separately() -> None:
    first, second = Metrics(), Metrics()  # a shared registry would refuse the second
    first.sent(True, 3)
    assert first.registry.get_sample_value("mailslot_queued_entries_total") == 3
    assert second.registry.get_sample_value("mailslot_queued_entries_total") == 0


# --- counters move by exactly what happened ------------------------------------------------------
def test_send_retry_and_ack_move_the_counters_exactly(
    live_server: LiveServer, api: Api, alice: RawAccount, bob: RawAccount
) -> None:
    url = live_server.metrics_url
    before = scrape(url)
    message_id = os.urandom(16)
    sent = api.send_text(alice, alice.devices[0], {"bob": bob}, "counted", message_id)
    assert sent.status_code == 201
    assert api.send_text(alice, alice.devices[0], {"bob": bob}, "counted", message_id).status_code == 200
    time.sleep(0.05)  # a measurable age
    asked_at = time.time_ns() // 10**6
    queued = scrape(url)
    answered_at = time.time_ns() // 10**6
    assert moved(before, queued, "mailslot_sends_total", kind="new") == 1
    assert moved(before, queued, "mailslot_sends_total", kind="retry") == 1
    assert moved(before, queued, "mailslot_queued_entries_total") == 1  # bob's one device
    assert moved(before, queued, "mailslot_http_requests_total", route="/v1/messages", status="2xx") == 2
    assert value(queued, "mailslot_queue_entries") == 1
    accepted_at = sent.json()["accepted_at"]
    age = value(queued, "mailslot_queue_oldest_age_seconds")
    assert (asked_at - accepted_at) / 1000 - 0.002 <= age <= (answered_at - accepted_at) / 1000 + 0.002
    assert moved(before, queued, "mailslot_deliveries_total") == 0

    fetched = wire.decode(api.call("GET", "/v1/queue?after=0", bob.devices[0]).content, wire.QueueResponse)
    ack = wire.AckRequest([d.message_id for d in fetched.messages] + [os.urandom(16).hex()])
    assert api.call("POST", "/v1/queue/ack", bob.devices[0], ack).json()["deleted"] == 1
    acked = scrape(url)
    assert moved(queued, acked, "mailslot_deliveries_total") == 1  # the unknown id counts nothing
    assert value(acked, "mailslot_queue_entries") == 0
    assert value(acked, "mailslot_queue_oldest_age_seconds") == 0
    assert moved(queued, acked, "mailslot_sends_total", kind="new") == 0
    assert moved(queued, acked, "mailslot_http_requests_total", route="/v1/queue", status="2xx") == 1


def test_labels_name_no_account_device_or_blob(
    live_server: LiveServer, api: Api, alice: RawAccount, bob: RawAccount
) -> None:
    api.send_text(alice, alice.devices[0], {"bob": bob}, "private")
    assert api.call("GET", "/v1/accounts/bob/devices", alice.devices[0]).status_code == 200
    blob_id = api.upload(alice.devices[0], b"x" * 10, 10)
    assert api.get_blob(blob_id).status_code == 200
    assert live_server.metrics_url is not None
    text = httpx.get(live_server.metrics_url, timeout=5).text
    for secret in ("alice", "bob", blob_id, *(k.device_id.hex() for k in alice.devices + bob.devices)):
        assert secret not in text
    assert 'route="/v1/accounts/{handle}/devices"' in text
    assert 'route="/v1/blobs/{blob_id}"' in text


def test_blob_counters(live_server: LiveServer, api: Api, alice: RawAccount) -> None:
    before = scrape(live_server.metrics_url)
    created = api.create_blob(alice.devices[0], 10)
    blob_id = created.json()["blob_id"]
    assert api.patch_blob(alice.devices[0], blob_id, 0, b"0123").status_code == 200
    forged = api.patch_blob(alice.devices[0], blob_id, 4, b"456789", signed_body=b"other!")
    assert forged.status_code == 401  # refused and truncated away: not counted
    assert api.patch_blob(alice.devices[0], blob_id, 4, b"456789").status_code == 200
    after = scrape(live_server.metrics_url)
    assert moved(before, after, "mailslot_blobs_created_total") == 1
    assert moved(before, after, "mailslot_blob_upload_bytes_total") == 10


def test_websocket_gauge_goes_up_and_down(
    live_server: LiveServer, alice: RawAccount, bob: RawAccount
) -> None:
    url = live_server.metrics_url
    with ws_connect(live_server, alice.devices[0]):
        wait_for(url, "mailslot_websocket_connections", 1)
        with ws_connect(live_server, bob.devices[0]):
            wait_for(url, "mailslot_websocket_connections", 2)
        wait_for(url, "mailslot_websocket_connections", 1)
    wait_for(url, "mailslot_websocket_connections", 0)
    samples = scrape(url)
    assert value(samples, "mailslot_http_requests_total", route="/v1/ws", status="1xx") == 2


def test_websocket_ack_counts_as_delivery(
    live_server: LiveServer, api: Api, alice: RawAccount, bob: RawAccount
) -> None:
    before = scrape(live_server.metrics_url)
    api.send_text(alice, alice.devices[0], {"bob": bob}, "over the socket")
    with ws_connect(live_server, bob.devices[0]) as ws:
        wire.decode(ws.recv(timeout=5), wire.WsDevices)  # the list version, announced first
        delivery = wire.decode(ws.recv(timeout=5), wire.WsDeliver).delivery
        ws.send(wire.encode(wire.WsAck([delivery.message_id])).decode())
        assert wire.decode(ws.recv(timeout=5), wire.WsAcked).deleted == 1
    after = scrape(live_server.metrics_url)
    assert moved(before, after, "mailslot_deliveries_total") == 1
    assert value(after, "mailslot_queue_entries") == 0


def test_sweeper_counts_expired_entries(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "server", message_ttl_s=1, sweep_interval_s=0.1)
    with ServerThread(config) as thread:
        api = Api(thread.url, config.cert_path)
        try:
            alice = RawAccount("alice")
            bob = RawAccount("bob", devices=[DeviceKeys.generate(), DeviceKeys.generate()])  # 2 entries
            assert api.register(alice).status_code == 201
            assert api.register(bob).status_code == 201
            assert api.send_text(alice, alice.devices[0], {"bob": bob}, "never read").status_code == 201
            assert value(scrape(thread.metrics_url), "mailslot_queue_entries") == 2
            wait_for(thread.metrics_url, "mailslot_expired_entries_total", 2, timeout=10)
            assert value(scrape(thread.metrics_url), "mailslot_queue_entries") == 0
        finally:
            api.close()


# --- the storage side: queue_stats on every engine -----------------------------------------------
@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'store.db'}"
    storage = open_storage(url)
    await storage.open()
    if request.param == "postgres":
        empty_database(url)
    yield storage
    await storage.close()


def _message(n: int, accepted_at_ms: int, *devices: int) -> NewMessage:
    return NewMessage(
        message_id=n.to_bytes(16, "big"),
        sender="alice",
        sender_device=bytes([1]) * 16,
        accepted_at_ms=accepted_at_ms,
        expires_at_ms=accepted_at_ms + 10_000,
        body=b"body",
        keys={bytes([d]) * 16: b"key" for d in devices},
    )


async def test_queue_stats_on_every_engine(store: Storage) -> None:
    assert await store.queue_stats() == (0, None)
    await register(store, "alice", 1)
    await register(store, "bob", 2, 3)
    await store.store_message(_message(1, 5_000, 2, 3), 100)
    await store.store_message(_message(2, 6_000, 2), 100)
    stats = await store.queue_stats()
    assert stats == (3, 5_000)
    assert (stats.entries, stats.oldest_accepted_at_ms) == (3, 5_000)
    assert await store.ack(bytes([2]) * 16, [_message(1, 0).message_id]) == 1
    assert await store.queue_stats() == (2, 5_000)  # device 3 still holds message 1
    assert await store.ack(bytes([3]) * 16, [_message(1, 0).message_id]) == 1
    assert await store.queue_stats() == (1, 6_000)
    assert await store.expire(16_000) == 1
    assert await store.queue_stats() == (0, None)


async def test_scrape_reports_unknown_queue_state_when_storage_fails(tmp_path: Path) -> None:
    metrics = Metrics()
    closed = open_storage(f"sqlite:///{tmp_path / 'never-opened.db'}")
    await metrics.refresh_queue(closed, 0)
    entries = metrics.registry.get_sample_value("mailslot_queue_entries")
    assert entries is not None and entries != entries  # NaN: unknown, not zero
