"""The server's memory stays flat whatever the blob size: upload and download a 256 MiB blob
through `mailslot serve` in its own process, and read its peak resident size from the kernel.

The bytes are generated piece by piece and hashed on the fly on this side too, so the test
process never holds the blob either.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import pytest

from tests.conftest import make_data_dir
from tests.server.rawapi import Api, RawAccount
from tests.system.test_crash import free_port, start_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status"),
]

MIB = 1024 * 1024
BLOB = 256 * MIB
PIECE = 8 * MIB
PEAK_LIMIT = 100 * MIB
GROWTH_LIMIT = 40 * MIB  # over the idle peak: a few pieces' worth of buffers at most


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def piece(index: int) -> bytes:
    return random.Random(index).randbytes(PIECE)


def upload(api: Api, acct: RawAccount) -> tuple[str, bytes]:
    created = api.create_blob(acct.devices[0], BLOB)
    assert created.status_code == 201, created.text
    blob_id: str = created.json()["blob_id"]
    digest = hashlib.sha256()
    for index in range(BLOB // PIECE):
        data = piece(index)
        digest.update(data)
        answer = api.patch_blob(acct.devices[0], blob_id, index * PIECE, data)
        assert answer.status_code == 200, answer.text
    return blob_id, digest.digest()


def download(api: Api, blob_id: str) -> tuple[int, bytes]:
    digest = hashlib.sha256()
    size = 0
    with api.http.stream("GET", f"/v1/blobs/{blob_id}") as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return size, digest.digest()


def test_a_256_mib_blob_goes_through_in_constant_server_memory(tmp_path: Path) -> None:
    config = make_data_dir(tmp_path / "server", max_blob_bytes=BLOB, blob_piece_bytes=PIECE)
    port = free_port()
    proc = start_server(config.data_dir, port)
    api = Api(f"https://127.0.0.1:{port}", config.cert_path)
    api.http.timeout = None  # type: ignore[assignment]
    try:
        alice = RawAccount("alice")
        assert api.register(alice).status_code == 201
        baseline = peak_rss(proc.pid)
        blob_id, sent = upload(api, alice)
        after_upload = peak_rss(proc.pid)
        size, received = download(api, blob_id)
        after_download = peak_rss(proc.pid)
        print(
            f"server peak RSS: {baseline / MIB:.1f} MiB idle, {after_upload / MIB:.1f} MiB after the "
            f"upload, {after_download / MIB:.1f} MiB after the download of {BLOB // MIB} MiB"
        )
        assert (size, received) == (BLOB, sent)
        assert after_download < PEAK_LIMIT
        assert after_download - baseline < GROWTH_LIMIT
    finally:
        api.close()
        proc.kill()
        proc.wait()
