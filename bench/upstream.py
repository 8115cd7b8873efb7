"""The bench upstream: a fast aiohttp server answering every path the same way.

Run it in its own process (``python -m bench.upstream --port P``); it serves on
uvloop when installed, with aiohttp's low-level `web.Server` (no router, no
middlewares), so that it is as cheap as an aiohttp upstream gets.

- Any request whose body asks for ``"stream": true``, and ``POST …/conversation``
  (ChatGPT's streaming route): a ``text/event-stream`` of ``events`` OpenAI
  ``chat.completion.chunk`` events, one write each, then ``data: [DONE]``.
- Anything else: a small ``chat.completion`` JSON answer (about 300 bytes).

The runner drives it directly, never through a proxy, under ``/_bench/``:

- ``POST /_bench/mode`` ``{"events": N, "hold": bool}``: how streams behave from
  now on.  A held stream sends its first event, then waits for ``/_bench/release``.
- ``POST /_bench/release``: every held stream finishes.
- ``GET /_bench/stats``: ``{"open": streams now open}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from typing import Any

from aiohttp import web

#: How long a held stream waits for ``/_bench/release`` at most.
HOLD_LIMIT = 600.0

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-3.5-turbo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    },
    separators=(",", ":"),
).encode()


def chunk_event(text: str, finish: str | None = None) -> bytes:
    """One OpenAI streaming chunk as a server-sent event."""
    delta = {"content": text} if finish is None else {}
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-3.5-turbo",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


#: Seconds between a stream's first event and the rest (not part of any added figure:
#: direct's stream waits as long).
FIRST_EVENT_ALONE = 0.002
#: Events differ (LiteLLM ends a stream that repeats one chunk 100 times as an error).
MAX_EVENTS = 1000
EVENTS = [chunk_event(f"w{i} ") for i in range(MAX_EVENTS)]
LAST = chunk_event("", finish="stop") + b"data: [DONE]\n\n"
JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class BenchUpstream:
    """The request handler and the state the runner sets through ``/_bench/``."""

    def __init__(self) -> None:
        self.events = 200
        self.hold = False
        self.release = asyncio.Event()
        self.open = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_bench/"):
            return await self.control(request, path)
        body = await request.read() if request.body_exists else b""
        wants_stream = b'"stream":true' in body.replace(b" ", b"")
        if wants_stream or (request.method == "POST" and path.endswith("/conversation")):
            return await self.stream(request)
        return web.Response(body=COMPLETION, headers=JSON_HEADERS)

    async def stream(self, request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        self.open += 1
        try:
            await response.write(EVENTS[0])
            if self.hold:
                async with asyncio.timeout(HOLD_LIMIT):
                    await self.release.wait()
            else:
                # The first event alone, as a model's first token comes before the rest: a
                # burst right behind it measured which of three busy processes two CPUs
                # ran first (the same gateway's first event came at 0.6 or 1.9 ms).
                await asyncio.sleep(FIRST_EVENT_ALONE)
                for event in EVENTS[1 : self.events]:
                    await response.write(event)
            await response.write(LAST)
            await response.write_eof()
        finally:
            self.open -= 1
        return response

    async def control(self, request: web.BaseRequest, path: str) -> web.Response:
        if path == "/_bench/mode":
            mode: dict[str, Any] = await request.json()
            self.events = min(MAX_EVENTS, max(1, int(mode.get("events", self.events))))
            self.hold = bool(mode.get("hold", False))
            self.release = asyncio.Event()
        elif path == "/_bench/release":
            self.release.set()
        elif path != "/_bench/stats":
            return web.json_response({"error": "unknown control path"}, status=404)
        return web.json_response({"open": self.open, "events": self.events, "hold": self.hold})


#: Connections queued for accepting: the kernel drops SYNs beyond it (a 1 s retry).
BACKLOG = 4096


async def serve(host: str, port: int) -> None:
    """Serve until cancelled (the runner ends this process with SIGTERM)."""
    upstream = BenchUpstream()
    server = web.Server(upstream.handle, access_log=None, handler_cancellation=True)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    sock = socket.create_server((host, port), backlog=BACKLOG, reuse_port=False)
    # (aiohttp listens again with a backlog of 128 unless told: too few for the
    # memory probe, whose proxies open hundreds of connections here at once.)
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    print(f"bench upstream on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
