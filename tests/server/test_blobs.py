"""The blob API through a real server over real TLS: upload in pieces, download with ranges, and
every refusal, each checked to have stored nothing (database rows and files on disk)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailslot.protocol import wire
from mailslot.protocol.auth import sign_request
from mailslot.protocol.identity import DeviceKeys
from tests.conftest import LiveServer
from tests.server.rawapi import PIECE_TYPE, Api, RawAccount, snapshot
from tests.server.test_api import assert_error

KIB = 1024
MIB = 1024 * KIB


def blob_files(server: LiveServer) -> dict[str, int]:
    """Every file under the blob folder, by path relative to it, with its size."""
    root = server.data_dir / "blobs"
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def state(server: LiveServer) -> tuple[object, dict[str, int]]:
    """Database rows and blob files together: a refusal must change neither."""
    return snapshot(server.data_dir / "mailslot.db"), blob_files(server)


def data_of(size: int, seed: int = 1) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def new_blob(api: Api, device: DeviceKeys, size: int) -> str:
    created = api.create_blob(device, size)
    assert created.status_code == 201, created.text
    blob_id: str = created.json()["blob_id"]
    return blob_id


def offset_of(api: Api, device: DeviceKeys, blob_id: str) -> int:
    status = api.blob_status(device, blob_id)
    assert status.status_code == 200, status.text
    offset: int = status.json()["offset"]
    return offset


# --- the happy path -----------------------------------------------------------------------------
def test_create_upload_in_pieces_download(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    device = alice.devices[0]
    data = data_of(300 * KIB)
    created = api.create_blob(device, len(data))
    assert created.status_code == 201
    info = wire.decode(created.content, wire.BlobInfo)
    assert re.fullmatch("[0-9a-f]{64}", info.blob_id)
    assert (info.size, info.offset) == (len(data), 0)
    ttl_ms = live_server.config.blob_ttl_s * 1000
    assert abs(info.expires_at - (time.time_ns() // 10**6 + ttl_ms)) < 60_000
    assert api.get_blob(info.blob_id).status_code == 404  # incomplete

    for start, end in [(0, 100 * KIB), (100 * KIB, 250 * KIB), (250 * KIB, len(data))]:
        piece = api.patch_blob(device, info.blob_id, start, data[start:end])
        assert piece.status_code == 200, piece.text
        assert piece.json() == {
            "blob_id": info.blob_id,
            "size": len(data),
            "offset": end,
            "expires_at": info.expires_at,
        }
        assert piece.headers["upload-offset"] == str(end)

    got = api.get_blob(info.blob_id)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-length"] == str(len(data))
    assert offset_of(api, device, info.blob_id) == len(data)


def test_files_on_disk_are_named_only_by_the_blob_id(
    api: Api, live_server: LiveServer, alice: RawAccount
) -> None:
    ids = [api.upload(alice.devices[0], data_of(10 + n, seed=n), piece=8) for n in range(3)]
    assert blob_files(live_server) == {f"{i[:2]}/{i}": 10 + n for n, i in enumerate(ids)}
    rows = snapshot(live_server.data_dir / "mailslot.db")["blobs"]
    assert sorted(row[0].hex() for row in rows) == sorted(ids)


def test_another_device_of_the_account_may_resume(api: Api, alice: RawAccount) -> None:
    alice.devices.append(DeviceKeys.generate())
    assert api.publish(alice).status_code == 200
    blob_id = new_blob(api, alice.devices[0], 4)
    assert api.patch_blob(alice.devices[0], blob_id, 0, b"ab").status_code == 200
    assert offset_of(api, alice.devices[1], blob_id) == 2
    assert api.patch_blob(alice.devices[1], blob_id, 2, b"cd").status_code == 200
    assert api.get_blob(blob_id).content == b"abcd"


def test_an_empty_blob_is_complete_at_once(api: Api, alice: RawAccount) -> None:
    blob_id = new_blob(api, alice.devices[0], 0)
    got = api.get_blob(blob_id)
    assert (got.status_code, got.content) == (200, b"")
    assert api.get_blob(blob_id, {"range": "bytes=0-"}).status_code == 416


def test_head_gives_the_headers_only(api: Api, alice: RawAccount) -> None:
    blob_id = api.upload(alice.devices[0], b"0123456789", piece=10)
    head = api.http.head(f"/v1/blobs/{blob_id}")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == "10"


@pytest.mark.parametrize(
    "server_settings", [{"max_body_bytes": 1024, "max_recipients": 1, "max_devices_per_account": 1}]
)
def test_pieces_are_not_bound_by_the_json_request_limit(
    api: Api, live_server: LiveServer, alice: RawAccount
) -> None:
    assert live_server.config.max_request_bytes < 1 * MIB
    data = data_of(1 * MIB)
    assert api.get_blob(api.upload(alice.devices[0], data, piece=len(data))).content == data


# --- ranges ---------------------------------------------------------------------------------------
@pytest.fixture
def ten(api: Api, alice: RawAccount) -> str:
    """A complete blob holding b"0123456789"."""
    return api.upload(alice.devices[0], b"0123456789", piece=4)


@pytest.mark.parametrize(
    ("header", "content", "content_range"),
    [
        ("bytes=0-0", b"0", "bytes 0-0/10"),
        ("bytes=2-5", b"2345", "bytes 2-5/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=-30", b"0123456789", "bytes 0-9/10"),
        ("bytes=8-99", b"89", "bytes 8-9/10"),
    ],
)
def test_range_requests(api: Api, ten: str, header: str, content: bytes, content_range: str) -> None:
    got = api.get_blob(ten, {"range": header})
    assert got.status_code == 206
    assert got.content == content
    assert got.headers["content-range"] == content_range
    assert got.headers["content-length"] == str(len(content))


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=10-20", "bytes=-0"])
def test_unsatisfiable_ranges(api: Api, ten: str, header: str) -> None:
    got = api.get_blob(ten, {"range": header})
    assert_error(got, 416, "range_not_satisfiable")
    assert got.headers["content-range"] == "bytes */10"


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "items=0-1", "bytes=5-2", "bytes=x-"])
def test_ranges_not_served_are_ignored(api: Api, ten: str, header: str) -> None:
    got = api.get_blob(ten, {"range": header})
    assert (got.status_code, got.content) == (200, b"0123456789")


# --- refusals -------------------------------------------------------------------------------------
def test_unknown_and_malformed_ids(api: Api, alice: RawAccount) -> None:
    unknown = os.urandom(32).hex()
    assert_error(api.get_blob(unknown), 404, "not_found")
    assert_error(api.blob_status(alice.devices[0], unknown), 404, "not_found")
    assert_error(api.patch_blob(alice.devices[0], unknown, 0, b"x"), 404, "not_found")
    for bad in ["abc", unknown.upper(), unknown[:-1] + "g", unknown + "00", "-" * 64]:
        assert_error(api.get_blob(bad), 400, "bad_request")
    assert_error(api.get_blob("..%2F..%2Fetc%2Fpasswd"), 404, "not_found")  # no such route


def test_incomplete_blob_is_not_readable(api: Api, alice: RawAccount) -> None:
    blob_id = new_blob(api, alice.devices[0], 10)
    assert api.patch_blob(alice.devices[0], blob_id, 0, b"012345678").status_code == 200
    assert_error(api.get_blob(blob_id), 404, "not_found")
    assert_error(api.get_blob(blob_id, {"range": "bytes=0-3"}), 404, "not_found")


def test_wrong_offset_is_a_conflict(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    blob_id = new_blob(api, alice.devices[0], 10)
    assert api.patch_blob(alice.devices[0], blob_id, 0, b"0123").status_code == 200
    before = state(live_server)
    for offset in (0, 3, 5):
        answer = api.patch_blob(alice.devices[0], blob_id, offset, b"45")
        assert_error(answer, 409, "conflict")
        assert answer.json()["details"] == {"offset": 4}
    assert state(live_server) == before


def test_piece_past_the_declared_size(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    """Refused whether the length comes up front (Content-Length) or only as the bytes arrive
    (chunked), and the committed bytes stay as they were."""
    blob_id = new_blob(api, alice.devices[0], 10)
    assert api.patch_blob(alice.devices[0], blob_id, 0, b"0123").status_code == 200
    before = state(live_server)
    assert_error(api.patch_blob(alice.devices[0], blob_id, 4, b"4567890"), 413, "too_large")
    assert_error(chunked_patch(api, alice.devices[0], blob_id, 4, [b"456", b"7890"]), 413, "too_large")
    assert state(live_server) == before
    assert api.patch_blob(alice.devices[0], blob_id, 4, b"456789").status_code == 200
    assert api.get_blob(blob_id).content == b"0123456789"


def chunked_patch(
    api: Api, device: DeviceKeys, blob_id: str, offset: int, parts: list[bytes]
) -> httpx.Response:
    """A piece sent with chunked transfer encoding: the server learns its length only as it comes."""
    target = f"/v1/blobs/{blob_id}"
    headers = {
        "content-type": PIECE_TYPE,
        "upload-offset": str(offset),
        "authorization": api.sign(device, "PATCH", target, b"".join(parts)),
    }

    def body() -> Iterator[bytes]:
        yield from parts

    return api.http.request("PATCH", target, content=body(), headers=headers)


@pytest.mark.parametrize("server_settings", [{"blob_piece_bytes": 64 * KIB}])
def test_piece_over_the_piece_limit(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    data = data_of(200 * KIB)
    blob_id = new_blob(api, alice.devices[0], len(data))
    before = state(live_server)
    assert_error(api.patch_blob(alice.devices[0], blob_id, 0, data[: 64 * KIB + 1]), 413, "too_large")
    parts = [data[i : i + 16 * KIB] for i in range(0, 80 * KIB, 16 * KIB)]
    assert_error(chunked_patch(api, alice.devices[0], blob_id, 0, parts), 413, "too_large")
    assert state(live_server) == before
    assert api.get_blob(api.upload(alice.devices[0], data, piece=64 * KIB)).content == data


def test_chunked_pieces_are_accepted(api: Api, alice: RawAccount) -> None:
    blob_id = new_blob(api, alice.devices[0], 9)
    answer = chunked_patch(api, alice.devices[0], blob_id, 0, [b"abc", b"def", b"ghi"])
    assert answer.status_code == 200, answer.text
    assert api.get_blob(blob_id).content == b"abcdefghi"


@pytest.mark.parametrize("server_settings", [{"max_blob_bytes": 1000}])
def test_oversized_blob_is_refused_before_anything_is_stored(
    api: Api, live_server: LiveServer, alice: RawAccount
) -> None:
    before = state(live_server)
    answer = api.create_blob(alice.devices[0], 1001)
    assert_error(answer, 413, "too_large")
    assert answer.json()["details"] == {"max_blob_bytes": 1000}
    assert state(live_server) == before
    assert api.create_blob(alice.devices[0], 1000).status_code == 201


@pytest.mark.parametrize(
    "raw",
    [b'{"size": -1}', b'{"size": "10"}', b'{"size": 1.5}', b'{"size": null}', b"{}", b'{"size": 1, "x": 2}'],
)
def test_malformed_create(api: Api, live_server: LiveServer, alice: RawAccount, raw: bytes) -> None:
    before = state(live_server)
    assert_error(api.call("POST", "/v1/blobs", alice.devices[0], raw=raw), 400, "bad_request")
    assert state(live_server) == before


@pytest.mark.parametrize("server_settings", [{"account_blob_quota_bytes": 1000}])
def test_quota_is_refused_before_anything_is_stored(
    api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
) -> None:
    assert api.create_blob(alice.devices[0], 600).status_code == 201
    before = state(live_server)
    answer = api.create_blob(alice.devices[0], 401)
    assert_error(answer, 413, "quota_exceeded")
    assert answer.json()["details"] == {"quota_bytes": 1000, "used_bytes": 600}
    assert state(live_server) == before
    assert api.create_blob(bob.devices[0], 1000).status_code == 201  # quotas are per account
    assert api.create_blob(alice.devices[0], 400).status_code == 201


def test_another_account_cannot_upload_or_see_the_state(
    api: Api, live_server: LiveServer, alice: RawAccount, bob: RawAccount
) -> None:
    blob_id = new_blob(api, alice.devices[0], 10)
    before = state(live_server)
    assert_error(api.patch_blob(bob.devices[0], blob_id, 0, b"0123456789"), 403, "forbidden")
    assert_error(api.blob_status(bob.devices[0], blob_id), 403, "forbidden")
    assert state(live_server) == before


def test_unauthenticated_pieces_store_nothing(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    blob_id = new_blob(api, alice.devices[0], 10)
    before = state(live_server)
    stale = time.time_ns() // 10**6 - 10 * 60 * 1000
    old = sign_request(
        alice.devices[0], "PATCH", f"/v1/blobs/{blob_id}", b"x", now_ms=stale, nonce=os.urandom(16)
    )
    for device, headers in [
        (None, {}),
        (None, {"authorization": "Mailslot nonsense"}),
        (DeviceKeys.generate(), {}),
        (None, {"authorization": old.to_header()}),
    ]:
        assert_error(api.patch_blob(device, blob_id, 0, b"x", headers=headers), 401, "unauthenticated")
    assert_error(api.call("POST", "/v1/blobs", None, wire.BlobCreate(10)), 401, "unauthenticated")
    assert_error(api.call("GET", f"/v1/blobs/{blob_id}/upload", None), 401, "unauthenticated")
    assert state(live_server) == before


def test_a_forged_piece_is_truncated_away(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    """The body is stored before its signature can be checked; a bad one takes it out again."""
    data = data_of(3 * MIB)
    blob_id = new_blob(api, alice.devices[0], len(data))
    assert api.patch_blob(alice.devices[0], blob_id, 0, data[:MIB]).status_code == 200
    before = state(live_server)
    forged = api.patch_blob(alice.devices[0], blob_id, MIB, b"\0" * (2 * MIB), signed_body=data[MIB:])
    assert_error(forged, 401, "unauthenticated")
    assert state(live_server) == before
    assert blob_files(live_server) == {f"{blob_id[:2]}/{blob_id}": MIB}
    assert api.patch_blob(alice.devices[0], blob_id, MIB, data[MIB:]).status_code == 200
    assert api.get_blob(blob_id).content == data


def test_a_replayed_piece_is_refused(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    blob_id = new_blob(api, alice.devices[0], 4)
    first = api.patch_blob(alice.devices[0], blob_id, 0, b"ab")
    assert first.status_code == 200
    before = state(live_server)
    replay = api.http.request("PATCH", first.request.url, content=b"ab", headers=dict(first.request.headers))
    assert_error(replay, 401, "unauthenticated")
    assert state(live_server) == before


def test_malformed_piece_headers(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    blob_id = new_blob(api, alice.devices[0], 4)
    before = state(live_server)
    for headers in [
        {"content-type": "application/octet-stream"},
        {"content-type": "application/json"},
        {"upload-offset": "-1"},
        {"upload-offset": "1e3"},
        {"upload-offset": ""},
        {"upload-offset": "9" * 40},
    ]:
        assert_error(api.patch_blob(alice.devices[0], blob_id, 0, b"ab", headers=headers), 400, "bad_request")
    assert state(live_server) == before


@pytest.mark.parametrize("server_settings", [{"blob_ttl_s": 1, "sweep_interval_s": 0.2}])
def test_expired_blobs_are_deleted(api: Api, live_server: LiveServer, alice: RawAccount) -> None:
    blob_id = api.upload(alice.devices[0], b"short-lived", piece=100)
    assert api.get_blob(blob_id).status_code == 200
    assert blob_files(live_server) == {f"{blob_id[:2]}/{blob_id}": 11}
    wait_for(lambda: not blob_files(live_server))
    assert snapshot(live_server.data_dir / "mailslot.db")["blobs"] == []
    assert_error(api.get_blob(blob_id), 404, "not_found")
    assert_error(api.blob_status(alice.devices[0], blob_id), 404, "not_found")


def test_openapi_lists_the_blob_api(api: Api) -> None:
    doc = api.call("GET", "/openapi.json", None).json()
    assert set(doc["paths"]["/v1/blobs/{blob_id}"]) == {"get", "patch"}
    assert "post" in doc["paths"]["/v1/blobs"]
    assert {"BlobCreate", "BlobInfo"} <= set(doc["components"]["schemas"])


def test_blob_folder_is_under_the_data_dir(live_server: LiveServer) -> None:
    assert live_server.config.blob_store_url == (live_server.data_dir / "blobs").absolute().as_uri()
    assert Path(live_server.data_dir / "blobs").is_dir()
