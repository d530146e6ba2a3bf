"""Two nodes on one PostgreSQL database: a device connected to one gets, promptly, a message sent
through the other, over Redis, and still (by polling) when Redis is unreachable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailslot.protocol import wire
from mailslot.server.runner import ServerThread
from tests.conftest import LiveServer, make_data_dir
from tests.server.rawapi import Api, RawAccount
from tests.server.services import CLOSED_PORT_REDIS_URL, fresh_database, redis_url
from tests.server.test_ws import ws_connect

SLOW_RECHECK_S = 30.0  # without a wake-up, a connected session would wait this long
PROMPT_S = 3.0


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def start_nodes(root: Path, **settings: object) -> tuple[list[ServerThread], list[LiveServer]]:
    threads, nodes = [], []
    for name in ("a", "b"):
        config = make_data_dir(root / name, **settings)
        thread = ServerThread(config).start()
        threads.append(thread)
        nodes.append(LiveServer(thread.url, config.cert_path, config.data_dir, config))
    return threads, nodes


@pytest.fixture
def nodes(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[list[LiveServer]]:
    """Node A and node B: one database, the bus URL the test names (``indirect``)."""
    bus_url = redis_url() if request.param == "redis" else CLOSED_PORT_REDIS_URL
    threads, live = start_nodes(
        tmp_path,
        database_url=database_url,
        bus_url=bus_url,
        queue_recheck_s=SLOW_RECHECK_S,
        queue_recheck_bus_down_s=0.2,
    )
    try:
        yield live
    finally:
        for thread in threads:
            thread.stop()


def relay_across(a: LiveServer, b: LiveServer, suffix: str) -> float:
    """Bob listens on A, Alice sends through B; seconds until Bob's socket has the message."""
    api_a, api_b = Api(a.url, a.ca), Api(b.url, b.ca)
    alice, bob = RawAccount(f"alice{suffix}"), RawAccount(f"bob{suffix}")
    try:
        assert api_a.register(alice).status_code == 201
        assert api_b.register(bob).status_code == 201
        first = api_a.send_text(alice, alice.devices[0], {bob.handle: bob}, "before connect")
        assert first.status_code == 201
        with ws_connect(a, bob.devices[0]) as ws:
            # The session is up and has sent what was queued; it now waits for a wake-up.
            wire.decode(ws.recv(timeout=5), wire.WsDevices)
            assert (
                wire.decode(ws.recv(timeout=5), wire.WsDeliver).delivery.message_id
                == first.json()["message_id"]
            )
            started = time.monotonic()
            sent = api_b.send_text(alice, alice.devices[0], {bob.handle: bob}, "through the other node")
            assert sent.status_code == 201
            delivery = wire.decode(ws.recv(timeout=PROMPT_S * 2), wire.WsDeliver).delivery
            took = time.monotonic() - started
            assert delivery.message_id == sent.json()["message_id"]
            ws.send(wire.encode(wire.WsAck([first.json()["message_id"], delivery.message_id])).decode())
            assert wire.decode(ws.recv(timeout=5), wire.WsAcked).deleted == 2
        queue = api_b.call("GET", "/v1/queue?after=0&limit=10", bob.devices[0])
        assert queue.status_code == 200
        assert queue.json()["messages"] == []  # the ack went through A, B sees it at once
        return took
    finally:
        api_a.close()
        api_b.close()


@pytest.mark.parametrize("nodes", ["redis"], indirect=True)
def test_wake_up_crosses_nodes_over_redis(nodes: list[LiveServer]) -> None:
    assert relay_across(*nodes, suffix="r") < PROMPT_S


@pytest.mark.parametrize("nodes", ["unreachable"], indirect=True)
def test_nodes_poll_while_redis_is_unreachable(nodes: list[LiveServer]) -> None:
    assert relay_across(*nodes, suffix="u") < PROMPT_S
