"""Server logs: JSON lines that parse, access lines with route templates, and no content or keys.

The end-to-end test runs ``mailslot serve`` as an operator would, at debug level (uvicorn then
logs every WebSocket frame), drives a whole register/send/receive/ack exchange through it, and
reads every line the process wrote.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.frames import Frame, Opcode
from websockets.sync.client import connect

from mailslot.protocol import wire
from mailslot.protocol.auth import sign_request
from mailslot.server.logs import JsonFormatter, RedactFilter, TextFormatter, configure_logging
from tests.conftest import LiveServer, make_data_dir
from tests.server.rawapi import Api, RawAccount, tls_context

SECRET = b"\x00wrapped-key-bytes\xff"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged at debug and up, as ``mailslot serve --log-format json`` writes it."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("debug", "json", stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_fields(captured: io.StringIO) -> None:
    logging.getLogger("mailslot.test").info("sent %d", 3, extra={"route": "/v1/messages", "count": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("mailslot.test").exception("failed")
    first, second = lines_of(captured)
    assert first["level"] == "INFO" and first["logger"] == "mailslot.test" and first["message"] == "sent 3"
    assert first["route"] == "/v1/messages" and first["count"] == 3
    assert str(first["time"]).endswith("+00:00") and "T" in str(first["time"])
    assert second["level"] == "ERROR" and "ValueError: boom" in str(second["exception"])


@pytest.mark.parametrize(
    "field", ["body", "key", "wrapped_key", "signature", "authorization", "passphrase", "token", "Api-Key"]
)
def test_secret_named_fields_are_redacted(captured: io.StringIO, field: str) -> None:
    logging.getLogger("mailslot.test").warning("with a field", extra={field: "hunter2-value"})
    (line,) = lines_of(captured)
    assert line[field] == "<redacted>"
    assert "hunter2" not in captured.getvalue()


def test_bytes_are_never_printed(captured: io.StringIO) -> None:
    log = logging.getLogger("mailslot.test")
    log.info("arg %s", SECRET)
    log.info("repr %r and %s", [SECRET, {"nested": SECRET}], bytearray(SECRET))
    log.info("mapping %(body)s %(size)d", {"body": "ciphertext", "size": 5})
    log.info("field", extra={"blob": SECRET, "deep": {"wrapped_key": "k", "ok": 1}})
    log.info(SECRET)  # type: ignore[arg-type]
    text = captured.getvalue()
    assert "wrapped-key" not in text and "ciphertext" not in text
    one, two, three, four, five = lines_of(captured)
    assert one["message"] == f"arg <{len(SECRET)} bytes redacted>"
    assert two["message"].count("bytes redacted") == 3  # type: ignore[union-attr]
    assert three["message"] == "mapping <redacted> 5"
    assert four["blob"] == f"<{len(SECRET)} bytes redacted>"
    assert four["deep"] == {"wrapped_key": "<redacted>", "ok": 1}
    assert five["message"] == f"<{len(SECRET)} bytes redacted>"


def test_websocket_frames_and_secret_headers_are_summarised(captured: io.StringIO) -> None:
    frame = Frame(Opcode.TEXT, b'{"type":"deliver","delivery":{"body":"c2VjcmV0"}}')
    logging.getLogger("mailslot.test.ws").debug("> %s", frame)
    logging.getLogger("mailslot.test.ws").debug("< %s: %s", "Authorization", "Mailslot device=d, sig=abc")
    logging.getLogger("mailslot.test.ws").debug("< %s: %s", "user-agent", "websockets")
    frame_line, auth_line, agent_line = lines_of(captured)
    assert frame_line["message"] == f"> <TEXT frame, {len(frame.data)} bytes>"
    assert auth_line["message"] == "< Authorization: <redacted>"
    assert agent_line["message"] == "< user-agent: websockets"


def test_text_format_is_redacted_too() -> None:
    record = logging.LogRecord("mailslot.test", logging.INFO, __file__, 1, "got %s", (SECRET,), None)
    record.token = "hunter2"
    record.route = "/v1/queue"
    assert RedactFilter().filter(record)
    line = TextFormatter().format(record)
    assert "INFO mailslot.test got <" in line and "route=/v1/queue" in line and "token=<redacted>" in line
    assert "hunter2" not in line and "wrapped" not in line
    assert json.loads(JsonFormatter().format(record))["token"] == "<redacted>"


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    level = root.level
    try:
        for stream, parses in ((io.StringIO(), True), (Terminal(), False)):
            configure_logging("info", "auto", stream)
            logging.getLogger("mailslot.test").info("hello")
            line = stream.getvalue().strip()
            assert line.startswith("{") == parses, line
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "mailslot"]:
            root.removeHandler(handler)
        root.setLevel(level)
    with pytest.raises(ValueError):
        configure_logging("info", "yaml")


def test_access_lines_name_the_route_template(
    live_server: LiveServer, api: Api, alice: RawAccount, bob: RawAccount, captured: io.StringIO
) -> None:
    assert api.call("GET", "/v1/accounts/bob/devices", alice.devices[0]).status_code == 200
    assert api.call("GET", "/v1/queue?after=0&limit=7", bob.devices[0]).status_code == 200
    assert api.call("GET", "/nothing/here", None).status_code == 404
    access = [line for line in lines_of(captured) if line["logger"] == "mailslot.access"]
    routes = [(line["method"], line["route"], line["status"]) for line in access]
    assert routes == [
        ("GET", "/v1/accounts/{handle}/devices", 200),
        ("GET", "/v1/queue", 200),
        ("GET", "unmatched", 404),
    ]
    assert all(isinstance(line["duration_ms"], float) for line in access)
    text = "\n".join(json.dumps(line) for line in access)
    assert "bob" not in text and "limit" not in text and "nothing" not in text


# --- end to end: a real `mailslot serve` process at debug level ----------------------------------
def logged(log_path: Path, field: str) -> list[object]:
    """The values of ``field`` in the JSON lines written so far (whole lines only)."""
    lines = log_path.read_text(errors="replace").split("\n")[:-1]
    return [entry[field] for entry in map(json.loads, lines) if field in entry]


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """``mailslot serve --log-level debug`` with stderr to a file (so ``auto`` means JSON), on
    ports it picks itself: the test learns them from the log, as an operator's tooling could."""
    config = make_data_dir(tmp_path / "server")  # port 0, metrics_port 0
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailslot",
                "serve",
                "--data-dir",
                str(config.data_dir),
                "--log-level",
                "debug",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(verify=tls_context(config.cert_path), timeout=2) as http:
            while True:
                assert proc.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, f"the server did not start:\n{log_path.read_text()}"
                urls = logged(log_path, "url")
                try:
                    if urls and http.get(f"{urls[0]}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        yield str(urls[0]), config.cert_path, log_path
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_whole_exchange_logs_no_content_and_no_key(serve_process: tuple[str, Path, Path]) -> None:
    url, ca, log_path = serve_process
    text = "the meeting moved to thursday"
    api = Api(url, ca)
    try:
        alice, bob = RawAccount("alice"), RawAccount("bob")
        assert api.register(alice).status_code == 201
        assert api.register(bob).status_code == 201
        assert api.send_text(alice, alice.devices[0], {"bob": bob}, text).status_code == 201
        auth = sign_request(
            bob.devices[0],
            "GET",
            "/v1/queue?after=0",
            b"",
            now_ms=time.time_ns() // 10**6,
            nonce=os.urandom(16),
        ).to_header()
        queue = api.call("GET", "/v1/queue?after=0", bob.devices[0], headers={"authorization": auth})
        (delivery,) = wire.decode(queue.content, wire.QueueResponse).messages
        sig = sign_request(
            bob.devices[0], "GET", "/v1/ws", b"", now_ms=time.time_ns() // 10**6, nonce=os.urandom(16)
        )
        wss = url.replace("https://", "wss://") + "/v1/ws"
        with connect(wss, ssl=tls_context(ca), additional_headers={"Authorization": sig.to_header()}) as ws:
            assert wire.decode(ws.recv(timeout=5), wire.WsDevices).version == 1
            pushed = wire.decode(ws.recv(timeout=5), wire.WsDeliver).delivery
            assert pushed.body == delivery.body
            ws.send(wire.encode(wire.WsAck([pushed.message_id])).decode())
            assert wire.decode(ws.recv(timeout=5), wire.WsAcked).deleted == 1
        metrics_urls = logged(log_path, "metrics_url")
        assert len(metrics_urls) == 1
        assert str(metrics_urls[0]).startswith("http://127.0.0.1:")
        assert "mailslot_deliveries_total 1.0" in httpx.get(str(metrics_urls[0]), timeout=5).text
    finally:
        api.close()
    deadline = time.monotonic() + 10  # the session's access line comes once the server saw it end
    while "/v1/ws" not in logged(log_path, "route"):
        assert time.monotonic() < deadline, "no access line for the WebSocket session"
        time.sleep(0.05)

    written = log_path.read_text()
    lines = [json.loads(line) for line in written.splitlines()]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    body_b64 = base64.b64encode(delivery.body).decode()
    key_b64 = base64.b64encode(delivery.key).decode()
    forbidden = {
        "message text": text,
        "body (base64)": body_b64[:16],
        "body (hex)": delivery.body.hex()[:16],
        "wrapped key (base64)": key_b64[:16],
        "wrapped key (hex)": delivery.key.hex()[:16],
        "request signature": auth.rsplit("sig=", 1)[1][:16],
        "WebSocket handshake signature": sig.signature.hex()[:16],
        "any signature header": "sig=",
        "query string": "after=0",
    }
    for what, needle in forbidden.items():
        assert needle not in written, f"the log holds the {what}"
    # The exchange was logged: access lines by route template, and the redacted frames.
    routes = {
        (line["method"], line["route"], line["status"])
        for line in lines
        if line["logger"] == "mailslot.access"
    }
    assert {("POST", "/v1/accounts", 201), ("POST", "/v1/messages", 201), ("GET", "/v1/queue", 200)} <= routes
    assert ("WS", "/v1/ws", 101) in routes
    assert any("TEXT frame" in str(line["message"]) for line in lines)
