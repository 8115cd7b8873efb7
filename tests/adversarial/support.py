"""What the adversarial tests share: a recording upstream, a byte tap in front of it,
gateway configs, and the checks every case makes on the gateway's answers.

The upstream is a real aiohttp app that records each request it handled.  The
`Tap` is a TCP relay between the gateway and that app which keeps every byte the
gateway sent and counts its connections, so a test can prove that *nothing*
reached the upstream, or exactly which request lines did (no smuggled second one).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import attrs
from aiohttp import web
from multidict import CIMultiDict

from gateway.keys import key_digest
from gateway.server import Service
from tests.adversarial.rawhttp import RawConnection, RawResponse

# The gateway every test starts from: one restricted route to one upstream, nothing else.
BASE_CONFIG = """
pipeline = ["access_log"]
[server]
max_body_size = "64KiB"
max_header_size = "8KiB"
client_idle_timeout = "@IDLE@"
[upstreams.up]
url = "@URL@"
connect_timeout = "1s"
idle_timeout = "1s"
[routes.public]
path = "/public/{rest*}"
upstream = "up"
"""

# The base gateway with ``auth`` (passthrough mode unless `keys_config` says otherwise).
AUTH_CONFIG = BASE_CONFIG.replace('pipeline = ["access_log"]', 'pipeline = ["access_log", "auth"]')


def keys_config(key: str, base: str = AUTH_CONFIG) -> str:
    """``base`` in auth's keys mode: ``key`` is client alice's, ``upstream-secret`` the
    upstream credential."""
    return (
        base
        + f"""
[plugins.auth]
mode = "keys"
credentials.up = [{{ name = "main", token = "upstream-secret" }}]
keys.alice = {{ sha256 = "{key_digest(key)}" }}
"""
    )


# A route whose pipeline parses the JSON body (``rewrite`` sets a default field).
JSON_ROUTE = """
[routes.json]
methods = ["POST"]
path = "/json"
upstream = "up"
pipeline = ["rewrite"]
[routes.json.plugins.rewrite]
json_defaults = { "added" = true }
"""

# A route whose answers go through the SSE event hooks (``rewrite`` drops ``ping``).
SSE_ROUTE = """
[routes.events]
path = "/events/{rest*}"
upstream = "up"
upstream_path = "/public/{rest}"
pipeline = ["rewrite"]
[routes.events.plugins.rewrite]
drop_events = ["ping"]
"""

_TRACEBACK = re.compile(rb"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")


@attrs.define
class Seen:
    """One request as the upstream handled it."""

    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body: bytes


class Recorder:
    """The fake upstream: echoes and records requests, and streams events (some badly)."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        #: When the heartbeat stream found its client (the gateway) gone.
        self.broken_at: float | None = None
        self.broken = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/public/beat", self.beat)
        self.app.router.add_get("/public/die", self.die)
        self.app.router.add_get("/public/events", self.events)
        # [\s\S]: a decoded path may hold a newline, which "." would not match.
        self.app.router.add_route("*", r"/{tail:[\s\S]*}", self.echo)

    async def record(self, request: web.Request) -> Seen:
        seen = Seen(request.method, request.raw_path, CIMultiDict(request.headers), b"")
        seen.body = await request.read()
        self.requests.append(seen)
        return seen

    async def echo(self, request: web.Request) -> web.Response:
        seen = await self.record(request)
        return web.json_response({"path": seen.raw_path, "size": len(seen.body)})

    async def beat(self, request: web.Request) -> web.StreamResponse:
        """An event, a comment and an event every 5 ms until writing fails; note when it did."""
        self.broken_at = None
        self.broken.clear()
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(2000):
                await response.write(b"event: ping\ndata: {}\n\n: beat\n\ndata: tick\n\n")
                await asyncio.sleep(0.005)
        except (ConnectionError, asyncio.CancelledError):
            self.broken_at = time.perf_counter()
            self.broken.set()
            raise
        return response

    async def events(self, request: web.Request) -> web.StreamResponse:
        """A short event stream that ends properly."""
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for part in (b"event: ping\ndata: {}\n\n", b"data: one\n\n", b"data: [DONE]\n\n"):
            await response.write(part)
        await response.write_eof()
        return response

    async def die(self, request: web.Request) -> web.StreamResponse:
        """Start a body (chunked, or with a ``?length=`` it never reaches), then drop dead."""
        await self.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if "length" in request.query:
            response.content_length = int(request.query["length"])
        await response.prepare(request)
        await response.write(b"data: partial\n\n")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return response


class Tap:
    """A TCP relay that keeps, per connection, every byte sent through it to the upstream."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        #: What the gateway sent on each connection it opened to the upstream.
        self.streams: list[bytearray] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    @property
    def connections(self) -> int:
        return len(self.streams)

    @property
    def received(self) -> bytes:
        return b"".join(self.streams)

    def requests(self) -> list[tuple[bytes, bytes]]:
        """Each request the upstream was sent, as (request line, decoded body)."""
        return [request for stream in self.streams for request in split_requests(bytes(stream))]

    async def start(self) -> Tap:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        stream = bytearray()
        self.streams.append(stream)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_w)
            await asyncio.gather(self._pipe(client_r, up_w, stream), self._pipe(up_r, client_w))
        except OSError:
            pass
        finally:
            self._tasks.discard(task)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        record: bytearray | None = None,
    ) -> None:
        try:
            while data := await source.read(65536):
                if record is not None:
                    record += data
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            # Pass the close on, so each side sees what the other did.
            with contextlib.suppress(Exception):
                sink.close()


def split_requests(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split what a client (the gateway) sent on one connection into its requests.

    A small strict parser: ``Content-Length`` or chunked bodies, as the gateway's
    own HTTP client writes them.  Bytes that do not parse end the list with a
    ``(b"<unparsed>", rest)`` entry, so that a test sees them.
    """
    out: list[tuple[bytes, bytes]] = []
    while data:
        head, found, data = data.partition(b"\r\n\r\n")
        if not found:
            out.append((b"<unparsed>", head))
            break
        line, *fields = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(b":") for f in fields)}
        body = b""
        if headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, data = body + data[:size], data[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            body, data = data[:length], data[length:]
        out.append((line, body))
    return out


@attrs.define
class Target:
    """A gateway on loopback in front of a `Recorder` reached through a `Tap`."""

    service: Service
    recorder: Recorder
    tap: Tap

    @property
    def port(self) -> int:
        return self.service.port

    async def idle(self, timeout: float = 5.0) -> bool:
        """Whether every request the gateway was handling has ended within ``timeout``."""
        return await self.service.runtime.wait_idle(timeout)

    def nothing_reached_upstream(self) -> bool:
        return self.tap.connections == 0 and not self.tap.received and not self.recorder.requests

    async def converse(
        self, data: bytes, answers: int = 1, linger: float = 0.05
    ) -> tuple[list[RawResponse], bool]:
        """Send ``data`` on one connection and read ``answers`` answers, then anything
        else within ``linger`` seconds; check that no further answer came.

        Returns the answers and whether the gateway closed the connection.
        """
        async with await RawConnection.open(self.port) as connection:
            await connection.send(data)
            got = [await connection.read_response(5) for _ in range(answers)]
            answered = len(connection.received)
            closed = await connection.server_closed(linger)
            raw = bytes(connection.received)
        assert_clean(raw)
        assert raw[answered:] == b"", raw[answered:][:300]  # no further answer
        return got, closed


def assert_clean(raw: bytes) -> None:
    """No 500 and no stack trace anywhere in what the gateway sent."""
    assert not re.search(rb"(?m)^HTTP/1\.\d 500 ", raw), raw[:300]
    assert not _TRACEBACK.search(raw), raw[:300]


def assert_envelope(response: RawResponse, status: int, code: str | None = None) -> dict[str, str]:
    """The gateway answered ``status`` itself, in the JSON error envelope; return the error."""
    assert response.status == status, (response.status, response.body[:300])
    assert (response.header("Content-Type") or "").startswith("application/json")
    assert response.complete
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "code"}, error
    assert all(isinstance(value, str) and value for value in error.values()), error
    if code is not None:
        assert error["code"] == code, error
    return error


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    """A well-formed HTTP/1.1 request (tests break it on purpose elsewhere)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
