"""Attachments and long texts end to end, through the real server on loopback with real TLS.

Nothing here mocks the server. Hostile references (names, keys, hashes, addresses) are made
the way a malicious sender would: real uploads, a crafted but validly signed message, posted
through the sender's own transport. Tampering with stored blobs is done the way a malicious
server would: by flipping a byte in the blob's file in the server's data directory. Dropped
connections come from a relay that cuts the TLS stream mid-way (``proxy.CuttingProxy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mailslot.client import Attachment, Client, ReceivedMessage
from mailslot.client.blobs import PIECE_SIZE, upload_blob
from mailslot.client.session import Session
from mailslot.client.transport import Transport, now_ms
from mailslot.errors import InputError, NotFoundError, UnknownHandle, VerificationError
from mailslot.protocol import chunked, crypto, wire
from mailslot.protocol.attachment import FLAG_LONG_TEXT, INLINE_TEXT_LIMIT, AttachmentRef, RichBody
from mailslot.protocol.message import KIND_RICH, Content, members_of, seal_message
from tests.client.conftest import FAST_KDF, PASSPHRASE, Devices
from tests.client.proxy import CuttingProxy

CHUNK = chunked.CHUNK_SIZE


def session_of(client: Client) -> Session:
    return client._session


def write(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def receive(client: Client, folder: Path | None = None, download: bool = True) -> list[ReceivedMessage]:
    return [m async for m in client.receive(download=download, downloads=folder)]


def visible(folder: Path) -> list[str]:
    """Every name in ``folder`` (hidden temporary files included: there must be none)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class Calls:
    """Records the transport calls of one client (the way the flow tests spy)."""

    def __init__(self, transport: Transport) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.starts: list[int] = []
        real_call, real_download = transport.call, transport.download

        async def call(method: str, path: str, kind: Any, **kwargs: Any) -> Any:
            self.calls.append((method, path, kwargs))
            return await real_call(method, path, kind, **kwargs)

        async def download(path: str, *, start: int, sink: Any) -> None:
            self.starts.append(start)
            await real_download(path, start=start, sink=sink)

        transport.call = call  # type: ignore[method-assign]
        transport.download = download  # type: ignore[method-assign]

    def patch_offsets(self) -> list[int]:
        return [int(kw["headers"]["Upload-Offset"]) for m, _, kw in self.calls if m == "PATCH"]

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p, _ in self.calls if m == method and p.endswith(suffix))


# --- round trips -------------------------------------------------------------------------------

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, PIECE_SIZE + 12345]


async def test_files_of_every_boundary_size_round_trip(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    files = [write(tmp_path / "out" / f"file-{size}.bin", size, seed=size) for size in SIZES]
    sent = await alice.send(["bob"], "files", files)
    assert [a.name for a in sent.attachments] == [f.name for f in files]
    assert all(a.path == f.resolve() for a, f in zip(sent.attachments, files, strict=True))

    folder = tmp_path / "bob-downloads"
    (got,) = await receive(bob, folder)
    assert got.id == sent.id and got.text == "files"
    assert [(a.name, a.size, a.media_type) for a in got.attachments] == [
        (f.name, f.stat().st_size, "application/octet-stream") for f in files
    ]
    for attachment, original in zip(got.attachments, files, strict=True):
        assert attachment.path is not None and attachment.path.parent == folder.resolve()
        assert attachment.error is None and digest(attachment.path) == digest(original)
    assert visible(folder) == sorted(f.name for f in files)

    (entry,) = bob.history()
    assert [a.path for a in entry.attachments] == [a.path for a in got.attachments]
    assert [a.name for a in alice.history()[0].attachments] == [f.name for f in files]


async def test_a_message_of_attachments_only_and_media_types(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    files = [write(tmp_path / name, 10) for name in ("notes.txt", "song.mp3", "doc.pdf", "noext")]
    await alice.send(["bob"], "", files)
    (got,) = await receive(bob, download=False)
    assert got.text == ""
    assert [a.media_type for a in got.attachments] == [
        "text/plain",
        "audio/mpeg",
        "application/pdf",
        "application/octet-stream",
    ]
    assert all(a.path is None and a.error is None for a in got.attachments)


async def test_long_text_travels_as_a_blob_and_arrives_as_text(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    calls = Calls(session_of(alice).transport)
    at_limit = "x" * INLINE_TEXT_LIMIT
    await alice.send(["bob"], at_limit)
    assert calls.count("POST", "/v1/blobs") == 0  # inline up to the limit

    long_text = "✉ long letter, " * 2000  # well past the limit, multi-byte characters included
    sent = await alice.send(["bob"], long_text)
    assert calls.count("POST", "/v1/blobs") == 1
    assert sent.attachments == ()
    first, second = await receive(bob, tmp_path / "dl")
    assert first.text == at_limit
    assert (second.text, second.attachments) == (long_text, ())
    assert bob.history()[-1].text == long_text and alice.history()[-1].text == long_text
    assert visible(tmp_path / "dl") == []  # the long text is not a file

    with_file = await alice.send(["bob"], long_text, [write(tmp_path / "a.bin", 5)])
    (got,) = await receive(bob, tmp_path / "dl")
    assert got.text == long_text and [a.name for a in got.attachments] == ["a.bin"]
    assert [a.id for a in got.attachments] == [f"{with_file.id}-0"]


async def test_an_image_gets_a_thumbnail(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    picture = tmp_path / "picture.png"
    image = Image.new("RGB", (1200, 800))
    image.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(800) for x in range(1200)])
    image.save(picture)
    fake = tmp_path / "broken.png"
    fake.write_bytes(b"\x89PNG but not really")
    await alice.send(["bob"], "look", [picture, fake])

    (got,) = await receive(bob, tmp_path / "dl")
    real, broken = got.attachments
    assert real.media_type == "image/png" and real.has_thumbnail
    assert broken.media_type == "image/png" and not broken.has_thumbnail
    assert broken.path is not None and broken.path.read_bytes() == fake.read_bytes()
    thumbnail = bob.thumbnail(real.id)
    assert 0 < len(thumbnail) <= 48 * 1024
    with Image.open(io.BytesIO(thumbnail)) as preview:
        assert preview.format == "JPEG" and preview.size[0] == 160 and preview.size[1] in (106, 107)
    assert bob.thumbnail(broken.id) == b""
    listed, saved = await bob.save_thumbnail(real.id, downloads=tmp_path / "previews")
    assert listed == real and saved.name == "picture.png.preview.jpg" and saved.read_bytes() == thumbnail
    with pytest.raises(NotFoundError):
        await bob.save_thumbnail(broken.id, downloads=tmp_path / "previews")


async def test_a_file_pushed_over_the_websocket_is_downloaded_too(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    original = write(tmp_path / "live.bin", 2 * CHUNK + 3)

    async def first_streamed() -> ReceivedMessage:
        stream = bob.receive(timeout=15, download=True, downloads=tmp_path / "dl")
        async with contextlib.aclosing(stream) as messages:
            async for message in messages:
                return message
        raise AssertionError("nothing arrived")

    task = asyncio.create_task(first_streamed())
    await asyncio.sleep(0.5)  # let bob drain the (empty) queue and open the socket
    await alice.send(["bob"], "live", [original])
    got = await asyncio.wait_for(task, 15)
    assert got.attachments[0].path is not None and digest(got.attachments[0].path) == digest(original)
    for _ in range(50):  # the ack frame is processed by the server asynchronously
        page = await session_of(bob).transport.call("GET", "/v1/queue", wire.QueueResponse)
        if not page.messages:
            break
        await asyncio.sleep(0.05)
    assert page.messages == []


# --- what the sender checks first ------------------------------------------------------------------


async def test_nothing_is_uploaded_when_a_file_or_recipient_is_wrong(
    devices: Devices, tmp_path: Path
) -> None:
    alice = await devices.register("alice")
    await devices.register("bob")
    calls = Calls(session_of(alice).transport)
    good = write(tmp_path / "good.bin", 100)
    with pytest.raises(InputError, match=r"missing\.bin"):
        await alice.send(["bob"], "x", [good, tmp_path / "missing.bin"])
    with pytest.raises(InputError, match="not a regular file"):
        await alice.send(["bob"], "x", [good, tmp_path])
    with pytest.raises(UnknownHandle):
        await alice.send(["nobody"], "x", [good])
    with pytest.raises(InputError, match="empty"):
        await alice.send(["bob"], "", [])
    with pytest.raises(InputError, match="at most 32"):
        await alice.send(["bob"], "x", [good] * 33)
    assert calls.count("POST", "/v1/blobs") == 0


# --- hostile references ------------------------------------------------------------------------------


async def upload_ref(client: Client, data: bytes, **changes: Any) -> AttachmentRef:
    blob = await upload_blob(session_of(client).transport, io.BytesIO(data), len(data))
    ref = AttachmentRef(blob.blob_id, blob.key, blob.sha256, blob.blob_size, len(data), "file.bin", "x/y")
    return dataclasses.replace(ref, **changes)


async def send_rich(sender: Client, recipient: Client, body: RichBody) -> str:
    """A validly signed rich message with whatever references the sender chose."""
    session = session_of(sender)
    listed = await sender.device_list(recipient.handle)
    content = Content(
        sender.handle,
        bytes.fromhex(sender.device_id),
        members_of(sender.handle, [recipient.handle]),
        crypto.random_bytes(16),
        now_ms(),
        KIND_RICH,
        body.to_bytes(),
    )
    sealed = seal_message(content, session.secrets.device, {d.device_id: d.enc_key for d in listed.devices})
    request = wire.SendRequest(
        content.message_id.hex(),
        [recipient.handle],
        sealed.body,
        {d.hex(): k for d, k in sealed.wrapped_keys.items()},
        versions={
            sender.handle: session.directory.cached_version(sender.handle) or 1,
            recipient.handle: listed.version,
        },
    )
    await session.transport.call("POST", "/v1/messages", wire.SendResponse, body=request)
    return content.message_id.hex()


HOSTILE_NAMES = {
    "../../etc/passwd": "passwd",
    "/abs": "abs",
    "a/b": "b",
    "..": "attachment.bin",
    ".hidden": "hidden",
    "nul\x00and\x07bell.txt": "nulandbell.txt",
    "y" * 251 + ".txt": "y" * 196 + ".txt",
    "CON": "_CON",
    "passwd": "passwd (1)",  # the same name again: never an overwrite
}


async def test_hostile_names_are_saved_inside_the_folder_under_safe_names(
    devices: Devices, tmp_path: Path
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "abs").write_text("already here")
    refs = [
        await upload_ref(alice, name.encode(), name=name, media_type="application/x-binary")
        for name in HOSTILE_NAMES
    ]
    await send_rich(alice, bob, RichBody("", tuple(refs)))
    (got,) = await receive(bob, folder)
    names = {a.name: a.path for a in got.attachments}
    assert set(names) == set(HOSTILE_NAMES)
    expected = {**HOSTILE_NAMES, "/abs": "abs (1)", "..": "attachment"}
    for name, path in names.items():
        assert path is not None and path.parent == folder.resolve(), name
        assert path.name == expected[name] and path.read_bytes() == name.encode()
    assert (folder / "abs").read_text() == "already here"
    assert not (tmp_path / "etc").exists()
    assert len(visible(folder)) == len(HOSTILE_NAMES) + 1


def flip_blob_byte(live_server: Any, blob_id: bytes, at: int) -> None:
    name = blob_id.hex()
    path = live_server.data_dir / "blobs" / name[:2] / name
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("at", [0, 30, CHUNK + 100, -1])
async def test_a_tampered_blob_is_refused_and_leaves_no_file(
    devices: Devices, live_server: Any, tmp_path: Path, at: int
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    sent = await alice.send(["bob"], "", [write(tmp_path / "f.bin", 3 * CHUNK)])
    blob_id = bytes.fromhex(sent.attachments[0].blob_id)
    flip_blob_byte(live_server, blob_id, at)

    folder = tmp_path / "downloads"
    (got,) = await receive(bob, folder)
    (attachment,) = got.attachments
    assert attachment.path is None and attachment.error is not None
    assert visible(folder) == []
    with pytest.raises(VerificationError):
        await bob.fetch_attachment(attachment.id, downloads=folder)
    assert visible(folder) == []
    assert bob.history()[0].attachments[0].error is not None


async def test_swapped_or_forged_references_are_refused(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    one = await upload_ref(alice, b"first blob " * 1000)
    two = await upload_ref(alice, b"other blob " * 1000)
    forged = [
        dataclasses.replace(one, key=two.key),  # wrong key
        dataclasses.replace(one, sha256=two.sha256),  # wrong hash
        dataclasses.replace(one, blob_id=two.blob_id),  # another blob of the same size
        dataclasses.replace(one, blob_id=b"\x00" * 32),  # no such blob
        dataclasses.replace(one, size=one.size - 1, blob_size=one.blob_size - 1),  # wrong size
    ]
    await send_rich(alice, bob, RichBody("forged", (*forged, one)))
    folder = tmp_path / "downloads"
    (got,) = await receive(bob, folder)
    assert [a.path is None for a in got.attachments] == [True] * 5 + [False]
    assert all(a.error for a in got.attachments[:5])
    assert visible(folder) == ["file.bin"]


async def test_a_long_text_that_fails_its_checks_is_listed_not_shown(
    devices: Devices, tmp_path: Path
) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    ref = await upload_ref(alice, b"long " * 2000, flags=FLAG_LONG_TEXT, name="message.txt")
    await send_rich(alice, bob, RichBody("", (dataclasses.replace(ref, key=bytes(32)),)))
    (got,) = await receive(bob, tmp_path / "dl")
    assert got.text == ""
    (attachment,) = got.attachments
    assert attachment.name == "message.txt" and attachment.error is not None


# --- dropped connections -----------------------------------------------------------------------------


@pytest.fixture
async def proxy(live_server: Any) -> AsyncIterator[CuttingProxy]:
    async with CuttingProxy(live_server.url) as relay:
        yield relay


async def register_via(proxy: CuttingProxy, live_server: Any, tmp_path: Path, handle: str) -> Client:
    return await Client.register(
        tmp_path / f"proxied-{handle}",
        proxy.url,
        handle,
        passphrase=PASSPHRASE,
        ca=live_server.ca,
        kdf=FAST_KDF,
    )


async def test_an_upload_cut_mid_piece_resumes_from_the_committed_offset(
    devices: Devices, proxy: CuttingProxy, live_server: Any, tmp_path: Path
) -> None:
    alice = await register_via(proxy, live_server, tmp_path, "alice")
    devices.opened.append(alice)
    bob = await devices.register("bob")
    big = write(tmp_path / "big.bin", 2 * PIECE_SIZE + 777)
    calls = Calls(session_of(alice).transport)
    proxy.cut("up", PIECE_SIZE + PIECE_SIZE // 2)  # in the middle of the second piece
    await alice.send(["bob"], "", [big])

    assert proxy.cuts == 1
    assert calls.patch_offsets() == [0, PIECE_SIZE, PIECE_SIZE, 2 * PIECE_SIZE]
    assert calls.count("GET", "/upload") == 1
    (got,) = await receive(bob, tmp_path / "dl")
    assert got.attachments[0].path is not None and digest(got.attachments[0].path) == digest(big)


async def test_a_lost_answer_to_a_committed_piece_is_not_sent_again(
    devices: Devices, proxy: CuttingProxy, live_server: Any, tmp_path: Path
) -> None:
    alice = await register_via(proxy, live_server, tmp_path, "alice")
    devices.opened.append(alice)
    bob = await devices.register("bob")
    big = write(tmp_path / "big.bin", 2 * PIECE_SIZE + 5)
    calls = Calls(session_of(alice).transport)
    real_call = session_of(alice).transport.call

    async def cut_the_second_answer(method: str, path: str, kind: Any, **kwargs: Any) -> Any:
        if method == "PATCH" and kwargs["headers"]["Upload-Offset"] == str(PIECE_SIZE):
            proxy.cut("down", 0)  # the server commits the piece; its answer never arrives
        return await real_call(method, path, kind, **kwargs)

    session_of(alice).transport.call = cut_the_second_answer  # type: ignore[method-assign]
    await alice.send(["bob"], "", [big])
    assert proxy.cuts == 1
    assert calls.patch_offsets() == [0, PIECE_SIZE, 2 * PIECE_SIZE]
    (got,) = await receive(bob, tmp_path / "dl")
    assert got.attachments[0].path is not None and digest(got.attachments[0].path) == digest(big)


async def test_a_download_cut_mid_way_resumes_with_a_range(
    devices: Devices, proxy: CuttingProxy, live_server: Any, tmp_path: Path
) -> None:
    alice = await devices.register("alice")
    bob = await register_via(proxy, live_server, tmp_path, "bob")
    devices.opened.append(bob)
    big = write(tmp_path / "big.bin", 3 * 1024 * 1024)
    await alice.send(["bob"], "", [big])
    calls = Calls(session_of(bob).transport)
    messages = [m async for m in bob.receive()]  # references only, then the download, cut
    proxy.cut("down", 1024 * 1024)
    attachment = await bob.fetch_attachment(messages[0].attachments[0].id, downloads=tmp_path / "dl")
    assert proxy.cuts == 1
    assert calls.starts[0] == 0 and len(calls.starts) == 2 and 0 < calls.starts[1] < big.stat().st_size
    assert attachment.path is not None and digest(attachment.path) == digest(big)
    assert visible(tmp_path / "dl") == ["big.bin"]


# --- fetching again -------------------------------------------------------------------------------------


async def test_fetch_an_attachment_again(devices: Devices, tmp_path: Path) -> None:
    alice, bob = await devices.register("alice"), await devices.register("bob")
    original = write(tmp_path / "report.pdf", 70_000)
    await alice.send(["bob"], "see", [original])
    (got,) = await receive(bob, download=False)
    (listed,) = got.attachments
    assert listed.path is None and bob.history()[0].attachments[0].path is None

    folder = tmp_path / "dl"
    first = await bob.fetch_attachment(listed.id, downloads=folder)
    again = await bob.fetch_attachment(listed.id.upper(), downloads=folder)
    assert isinstance(first, Attachment) and first.path is not None and again.path is not None
    assert (first.path.name, again.path.name) == ("report.pdf", "report (1).pdf")
    assert digest(first.path) == digest(again.path) == digest(original)
    assert bob.history()[0].attachments[0].path == again.path

    default = await bob.fetch_attachment(listed.id)
    assert default.path is not None and default.path.parent == (bob.home / "downloads").resolve()
    with pytest.raises(NotFoundError):
        await bob.fetch_attachment(f"{listed.id[:32]}-9")
    with pytest.raises(InputError):
        await bob.fetch_attachment("not-an-id")
