"""A fake upstream for forwarder tests: a real aiohttp app whose handlers misbehave on cue."""

from __future__ import annotations

import asyncio
import gzip
import json

from aiohttp import web


class Upstream:
    """What the fake upstream saw, plus gates the tests open to pace its answers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.gate = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/sse", self.sse)
        self.app.router.add_get("/gzip", self.gzipped)
        self.app.router.add_get("/die", self.die)
        self.app.router.add_get("/slow-head", self.slow_head)
        self.app.router.add_get("/stall", self.stall)
        self.app.router.add_get("/heartbeat", self.heartbeat)
        self.app.router.add_get("/trickle", self.trickle)
        self.app.router.add_get("/redirect", self.redirect)
        self.app.router.add_get("/hop", self.hop_by_hop)
        self.app.router.add_get("/teapot", self.teapot)
        self.app.router.add_route("*", "/{tail:.*}", self.echo)

    async def record(self, request: web.Request) -> dict[str, object]:
        body = await request.read()
        seen = {
            "method": request.method,
            "path_qs": request.raw_path,
            "headers": list(request.headers.items()),
            "body": body,
        }
        self.requests.append(seen)
        return seen

    async def echo(self, request: web.Request) -> web.Response:
        seen = await self.record(request)
        payload = {
            **seen,
            "body": seen["body"].decode("utf-8", "replace"),
            "size": len(seen["body"]),
        }  # type: ignore[attr-defined]
        return web.Response(body=json.dumps(payload), content_type="application/json")

    async def sse(self, request: web.Request) -> web.StreamResponse:
        """One event, then wait for the test's gate, then the rest."""
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await asyncio.wait_for(self.gate.wait(), 10)
        await response.write(b"data: sec")
        await asyncio.sleep(0.02)
        await response.write(b"ond\n\ndata: [DONE]\n\n")
        return response

    async def gzipped(self, request: web.Request) -> web.Response:
        await self.record(request)
        body = gzip.compress(b'{"compressed": true}')
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def die(self, request: web.Request) -> web.StreamResponse:
        """Start a chunked body, then drop the connection without finishing it."""
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: partial\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def slow_head(self, request: web.Request) -> web.Response:
        await self.record(request)
        await asyncio.sleep(5)
        return web.Response(text="too late")

    async def stall(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"some bytes")
        await asyncio.sleep(5)
        return response

    async def heartbeat(self, request: web.Request) -> web.StreamResponse:
        """Write a byte every 10 ms until the connection breaks; note when it did."""
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(1000):
                await response.write(b": beat\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return response

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        """A plain body that keeps coming: a byte every 10 ms, for ten seconds at most."""
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b"x")
            await asyncio.sleep(0.01)
        return response

    async def teapot(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.Response(
            status=418,
            body=b'{"detail": "short and stout"}',
            headers={"X-Upstream": "yes", "Content-Type": "application/json"},
        )

    async def redirect(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async def hop_by_hop(self, request: web.Request) -> web.Response:
        await self.record(request)
        return web.Response(
            text="ok",
            headers={
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "Upgrade": "h2c",
                "Trailer": "X-Checksum",
                "X-Kept": "yes",
            },
        )


def seen_headers(seen: dict[str, object]) -> dict[str, str]:
    """The headers an upstream request carried, names lower-cased."""
    return {k.lower(): v for k, v in seen["headers"]}  # type: ignore[attr-defined]
