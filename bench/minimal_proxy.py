"""The issue's yardstick: a bare pass-through proxy in a few lines of aiohttp.

``python -m bench.minimal_proxy --port P --upstream http://127.0.0.1:U``

No routes, plugins, limits or error envelope: every request goes to the
upstream with its headers (hop-by-hop ones left out) and the answer streams
back chunk by chunk.  The issue quotes what such a proxy measured on this
kind of machine (0.24x nginx's requests per second, +174 µs p50); measured in
the same run, it tells what of the gateway's figures any aiohttp proxy pays here.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import uvloop
from aiohttp import web

# Its own list, not gateway.headers': the yardstick shares no code with the gateway.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


async def serve(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        upstream, connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
    )

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("Host", None)
        body = await request.read()
        async with session.request(
            request.method, request.raw_path, headers=headers, data=body or None
        ) as answer:
            out = web.StreamResponse(status=answer.status)
            out.headers.update(
                (k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP
            )
            out.headers.popall("Content-Length", None)
            await out.prepare(request)
            async for chunk in answer.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()  # as the gateway
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.minimal_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
