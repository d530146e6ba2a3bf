"""Upload pieces as a network delivers them, over a raw TLS socket: refusals that arrive before
the body is sent, a piece cut off half-way and resumed, and two pieces racing for one blob."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from mailslot.protocol.identity import DeviceKeys
from tests.conftest import LiveServer
from tests.server.rawapi import PIECE_TYPE, Api, RawAccount
from tests.server.rawsock import connect, read_answer, request_head
from tests.server.test_blobs import MIB, blob_files, data_of, new_blob, offset_of, state, wait_for


def piece_head(api: Api, device: DeviceKeys | None, blob_id: str, offset: int, body: bytes) -> bytes:
    """The head of a PATCH carrying ``body``, signed over all of it."""
    target = f"/v1/blobs/{blob_id}"
    headers = {"content-type": PIECE_TYPE, "upload-offset": str(offset), "content-length": str(len(body))}
    if device is not None:
        headers["authorization"] = api.sign(device, "PATCH", target, body)
    return request_head("PATCH", target, headers)


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("unsigned", 401, "unauthenticated"),
        ("unknown device", 401, "unauthenticated"),
        ("other account", 403, "forbidden"),
        ("wrong offset", 409, "conflict"),
        ("past the size", 413, "too_large"),
        ("unknown blob", 404, "not_found"),
    ],
)
def test_refusals_come_before_the_body(
    api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount, case: str, status: int, code: str
) -> None:
    """Only the head is sent: a server that read the body before refusing would never answer."""
    blob_id = new_blob(api, alice.devices[0], 4 * MIB)
    body = data_of(4 * MIB)
    device, offset, target_id = alice.devices[0], 0, blob_id
    if case == "unsigned":
        device = None
    elif case == "unknown device":
        device = DeviceKeys.generate()
    elif case == "other account":
        device = bob.devices[0]
    elif case == "wrong offset":
        offset = 5
    elif case == "past the size":
        body += b"!"
    else:
        target_id = "ab" * 32
    before = state(live_server)
    with connect(live_server, timeout=5) as sock:
        sock.sendall(piece_head(api, device, target_id, offset, body))
        answer = read_answer(sock)
    assert (answer.status, answer.json()["error"]) == (status, code)
    assert state(live_server) == before


def test_a_cut_off_piece_leaves_the_offset_and_can_be_resumed(
    api: Api, live_server: LiveServer, alice: RawAccount
) -> None:
    device = alice.devices[0]
    data = data_of(5 * MIB)
    blob_id = new_blob(api, device, len(data))
    assert api.patch_blob(device, blob_id, 0, data[:MIB]).status_code == 200
    name = f"{blob_id[:2]}/{blob_id}"

    piece = data[MIB:]
    with connect(live_server) as sock:
        sock.sendall(piece_head(api, device, blob_id, MIB, piece))
        sock.sendall(piece[: 3 * MIB])
        wait_for(lambda: blob_files(live_server)[name] > MIB)  # part of the piece is on disk
    # The connection is gone mid-piece: the partial bytes are truncated away.
    wait_for(lambda: blob_files(live_server)[name] == MIB)
    assert offset_of(api, device, blob_id) == MIB
    assert api.get_blob(blob_id).status_code == 404

    assert api.patch_blob(device, blob_id, MIB, piece).status_code == 200
    assert api.get_blob(blob_id).content == data


def slow_body(byte: bytes, size: int, pause: float) -> Iterator[bytes]:
    step = 64 * 1024
    for _ in range(size // step):
        time.sleep(pause)
        yield byte * step


def test_concurrent_pieces_never_interleave(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    """Two pieces for the same offset, both in flight at once: one is committed whole, the other
    is refused with the new offset, and the blob holds exactly one of them."""
    device = alice.devices[0]
    size = 1 * MIB
    blob_id = new_blob(api, device, size)
    target = f"/v1/blobs/{blob_id}"
    answers: dict[bytes, httpx.Response] = {}

    def send(byte: bytes) -> None:
        headers = {
            "content-type": PIECE_TYPE,
            "upload-offset": "0",
            "content-length": str(size),
            "authorization": api.sign(device, "PATCH", target, byte * size),
        }
        own = Api(live_server.url, live_server.ca)
        try:
            answers[byte] = own.http.request(
                "PATCH", target, content=slow_body(byte, size, 0.01), headers=headers
            )
        finally:
            own.close()

    threads = [threading.Thread(target=send, args=(b,)) for b in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(r.status_code for r in answers.values())
    assert statuses == [200, 409], [r.text for r in answers.values()]
    winner = next(b for b, r in answers.items() if r.status_code == 200)
    loser = answers[b"a" if winner == b"b" else b"b"]
    assert loser.json()["details"] == {"offset": size}
    assert api.get_blob(blob_id).content == winner * size
