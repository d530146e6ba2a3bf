"""The baseline server: a raw ASGI app that reads the request body and answers 200.

It runs under exactly what ``mailslot serve`` runs under: the uvicorn configuration built by
``mailslot.server.runner`` for the same data directory (certificate, key, protocol
implementations, lifespan, shutdown) and a socket from the same ``bind``; only the app differs.
So ``relay accepted/s ÷ baseline req/s`` is the share of the HTTP+TLS stack's capacity that is
left once mailslot parses, authenticates, checks and commits each message.

    python bench/bare_app.py --data-dir D --port P [--log-level warning]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import uvicorn

from mailslot.server import runner
from mailslot.server.config import load_config

# About the size of a SendResponse, so the client reads a similar answer from both servers.
ANSWER = b'{"message_id":"00000000000000000000000000000000","accepted_at":1700000000000,"devices":8}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return  # no WebSocket here: uvicorn refuses the upgrade
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    config = load_config(args.data_dir.resolve()).with_overrides(port=args.port)
    # The runner's own uvicorn settings, with the bare app swapped in before uvicorn loads it.
    uv_config = runner._uvicorn_config(config, None, args.log_level)
    uv_config.app = app
    sock = runner.bind(config.host, config.port)
    uvicorn.Server(uv_config).run(sockets=[sock])


if __name__ == "__main__":
    main()
