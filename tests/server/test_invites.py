"""Registration by invite, the default of a real server: every refusal changes nothing and
spends nothing; a token works as many times as it allows, and not once expired or revoked."""

from __future__ import annotations

import time

import pytest

from mailslot.server.services.directory import invite_hash, new_invite
from tests.conftest import INVITE_ONLY, LiveServer, make_invite, on_store
from tests.server.rawapi import Api, RawAccount, snapshot
from tests.server.test_api import assert_error


@pytest.fixture
def server_settings() -> dict[str, object]:
    return INVITE_ONLY


def db(live_server: LiveServer):  # type: ignore[no-untyped-def]
    return snapshot(live_server.data_dir / "mailslot.db")


def uses_left(live_server: LiveServer, token: str) -> int:
    rows = on_store(live_server, lambda store: store.list_invites())
    return next(row.uses_left for row in rows if row.token_hash == invite_hash(token))


def test_no_invite_is_refused_and_nothing_is_stored(api: Api, live_server: LiveServer) -> None:
    before = db(live_server)
    for invite in (None, "", "inv_nosuchtoken"):
        response = api.register(RawAccount("alice"), invite)
        assert_error(response, 403, "invite_required")
        assert "mailslot admin invite create" in response.json()["message"]
        assert "operator" in response.json()["message"]
    assert db(live_server) == before


def test_an_invite_works_once(api: Api, live_server: LiveServer) -> None:
    token = make_invite(live_server)
    assert api.register(RawAccount("alice"), token).status_code == 201
    assert uses_left(live_server, token) == 0
    before = db(live_server)
    assert_error(api.register(RawAccount("bob"), token), 403, "invite_required")
    assert db(live_server) == before


def test_an_invite_for_two(api: Api, live_server: LiveServer) -> None:
    token = make_invite(live_server, uses=2)
    assert api.register(RawAccount("alice"), token).status_code == 201
    assert uses_left(live_server, token) == 1
    assert api.register(RawAccount("bob"), f" {token}\n").status_code == 201  # as pasted
    assert_error(api.register(RawAccount("carol"), token), 403, "invite_required")


def test_a_refused_registration_spends_no_use(api: Api, live_server: LiveServer) -> None:
    token = make_invite(live_server)
    assert api.register(RawAccount("alice"), make_invite(live_server)).status_code == 201
    assert_error(api.register(RawAccount("alice"), token), 409, "handle_taken")
    assert uses_left(live_server, token) == 1
    assert api.register(RawAccount("bob"), token).status_code == 201


def test_an_expired_invite_is_refused(api: Api, live_server: LiveServer) -> None:
    token = make_invite(live_server, expires_in_ms=1)
    time.sleep(0.01)
    assert_error(api.register(RawAccount("alice"), token), 403, "invite_required")
    assert uses_left(live_server, token) == 1


def test_a_revoked_invite_is_refused(api: Api, live_server: LiveServer) -> None:
    token = make_invite(live_server)
    assert on_store(live_server, lambda store: store.revoke_invite(invite_hash(token)))
    assert_error(api.register(RawAccount("alice"), token), 403, "invite_required")


@pytest.mark.parametrize("server_settings", [{"registration": "open"}])
def test_an_open_server_needs_no_invite_and_ignores_one(api: Api) -> None:
    assert api.register(RawAccount("alice")).status_code == 201
    assert api.register(RawAccount("bob"), "inv_whatever").status_code == 201


def test_invite_tokens_are_random_and_stored_hashed() -> None:
    first, second = (new_invite(0, uses=1, expires_in_ms=1000) for _ in range(2))
    assert first.token.startswith("inv_") and len(first.token) == 4 + 24
    assert first.token != second.token
    assert first.row.token_hash == invite_hash(first.token) != invite_hash(second.token)
    assert first.token.encode() not in repr(first.row).encode()

