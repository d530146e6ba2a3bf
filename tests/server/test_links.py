"""The link mailbox through a real server: two sealed halves under a random id."""

from __future__ import annotations

import os

from mailslot.protocol import wire
from tests.server.rawapi import Api, RawAccount
from tests.server.test_api import assert_error


def test_link_round_trip(api: Api, alice: RawAccount) -> None:
    link = os.urandom(16).hex()
    assert (
        api.call("POST", f"/v1/links/{link}", None, wire.LinkRequestBody(b"sealed-request")).status_code
        == 201
    )
    assert api.call("GET", f"/v1/links/{link}/response", None).json() == {
        "status": "pending",
        "response": None,
    }
    got = api.call("GET", f"/v1/links/{link}", alice.devices[0])
    assert wire.decode(got.content, wire.LinkRequestBody).request == b"sealed-request"
    answer = api.call(
        "POST", f"/v1/links/{link}/response", alice.devices[0], wire.LinkResponseBody(b"sealed-answer")
    )
    assert answer.status_code == 201
    status = wire.decode(api.call("GET", f"/v1/links/{link}/response?wait=1", None).content, wire.LinkStatus)
    assert status.status == "approved" and status.response == b"sealed-answer"
    again = api.call("POST", f"/v1/links/{link}/response", alice.devices[0], wire.LinkResponseBody(b"other"))
    assert_error(again, 409, "conflict")


def test_link_refusals(api: Api, alice: RawAccount) -> None:
    link = os.urandom(16).hex()
    assert_error(api.call("GET", f"/v1/links/{link}", alice.devices[0]), 404, "not_found")
    assert_error(api.call("GET", f"/v1/links/{link}", None), 401, "unauthenticated")
    assert_error(api.call("POST", "/v1/links/xyz", None, wire.LinkRequestBody(b"x")), 400, "bad_request")
    assert_error(api.call("POST", f"/v1/links/{link}", None, wire.LinkRequestBody(b"")), 400, "bad_request")
    assert api.call("POST", f"/v1/links/{link}", None, wire.LinkRequestBody(b"x")).status_code == 201
    assert_error(api.call("POST", f"/v1/links/{link}", None, wire.LinkRequestBody(b"y")), 409, "conflict")
