from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer
from tests.server.rawapi import Api, RawAccount


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[Api]:
    client = Api(live_server.url, live_server.ca)
    yield client
    client.close()


@pytest.fixture
def alice(api: Api) -> RawAccount:
    acct = RawAccount("alice")
    assert api.register(acct).status_code == 201
    return acct


@pytest.fixture
def bob(api: Api) -> RawAccount:
    acct = RawAccount("bob")
    assert api.register(acct).status_code == 201
    return acct
