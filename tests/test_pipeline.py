"""The plugin pipeline end to end: hook order, short-circuits, body hooks, lifecycle.

The test plugins live in this module and are registered without packaging:
`build_runtime` gets an ``installed`` mapping of entry points pointing here.
Every request goes through a real gateway to a real upstream on loopback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib.metadata import EntryPoint
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.api import Exchange, Plugin, SSEEvent
from gateway.config import parse_config
from gateway.context import GatewayContext
from gateway.errors import Forbidden
from gateway.registry import GROUP
from gateway.runtime import Runtime, build_runtime
from gateway.server import Service, make_socket
from gateway.sse import SSEParser

#: What the test plugins saw, in the order they saw it.
calls: list[tuple[Any, ...]] = []
chunks_seen: list[bytes] = []
events_seen: list[SSEEvent] = []


class Recorder(Plugin):
    """Records its request, response and complete hooks; may answer or refuse at once."""

    @attrs.frozen
    class Config:
        #: Answer ``on_request`` with this status (0: let the request through).
        answer: int = 0
        #: Raise `Forbidden` from ``on_request``.
        refuse: bool = False
        #: Raise `Forbidden` from ``on_response``.
        refuse_response: bool = False

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        calls.append((self.name, "on_request"))
        ex.upstream_headers.add("X-Request-Order", self.name)
        if self.config.refuse:
            raise Forbidden(f"{self.name} refuses")
        if self.config.answer:
            return web.json_response({"answered_by": self.name}, status=self.config.answer)
        return None

    async def on_response(self, ex: Exchange) -> None:
        calls.append((self.name, "on_response", ex.status))
        assert ex.response_headers is not None
        ex.response_headers.add("X-Response-Order", self.name)
        if self.config.refuse_response:
            raise Forbidden(f"{self.name} refuses the answer")

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        calls.append((self.name, "on_complete", type(error).__name__ if error else None))


class FailingChunk(Plugin):
    """Passes the first chunk, then fails: the client has had the head and some bytes."""

    async def on_chunk(self, ex: Exchange, chunk: bytes) -> bytes:
        if chunk and ex.bytes_out:
            raise RuntimeError("a plugin bug")
        return chunk


class FailingFirstChunk(Plugin):
    """Fails on the first chunk, before anything has reached the client."""

    async def on_chunk(self, ex: Exchange, chunk: bytes) -> bytes:
        raise RuntimeError("a plugin bug")


class CompleteOnly(Plugin):
    """Overrides nothing but ``on_complete``."""

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        calls.append((self.name, "on_complete", type(error).__name__ if error else None))


class ChunkRecorder(Plugin):
    """Records every chunk it is given and appends ``tail`` at the end of the body."""

    @attrs.frozen
    class Config:
        tail: str = ""

    async def on_chunk(self, ex: Exchange, chunk: bytes) -> bytes:
        chunks_seen.append(chunk)
        return chunk if chunk else self.config.tail.encode()


class EventRecorder(Plugin):
    """Records every event it is given and passes it on unchanged (unless disabled)."""

    @attrs.frozen
    class Config:
        enabled: bool = True

    def uses(self, hook: str) -> bool:
        if hook == "on_event" and not self.config.enabled:
            return False
        return super().uses(hook)

    async def on_event(self, ex: Exchange, event: SSEEvent) -> SSEEvent:
        events_seen.append(event)
        return event


class EventRewriter(Plugin):
    """Drops ``data: drop`` and replaces ``data: split`` by two events."""

    async def on_event(self, ex: Exchange, event: SSEEvent) -> Sequence[SSEEvent] | SSEEvent | None:
        if event.data == "drop":
            return None
        if event.data == "split":
            return [SSEEvent(data="split-1"), SSEEvent(data="split-2", event="added")]
        return event


class RetryOnce(Plugin):
    """Asks, once, for a 503 answer to be discarded and the request sent again."""

    async def on_response(self, ex: Exchange) -> None:
        calls.append((self.name, "on_response", ex.status))
        if ex.status == 503 and not ex.state.get(self.name):
            ex.state[self.name] = True
            ex.upstream_headers["X-Attempt"] = "2"
            ex.retry()


class Peek(Plugin):
    """Reads the answer's body from ``on_response`` (at most ``limit`` bytes of it)."""

    @attrs.frozen
    class Config:
        limit: int = 1024

    async def on_response(self, ex: Exchange) -> None:
        calls.append((self.name, "peeked", await ex.read_upstream_body(self.config.limit)))


class Lifecycle(Plugin):
    """Records its start-up and shut-down hooks."""

    async def startup(self, context: GatewayContext) -> None:
        calls.append((self.name, "startup", context))

    async def shutdown(self) -> None:
        calls.append((self.name, "shutdown"))


def entry_point(name: str, cls: type[Plugin]) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{cls.__qualname__}", group=GROUP)


INSTALLED = {
    "a": entry_point("a", Recorder),
    "b": entry_point("b", Recorder),
    "c": entry_point("c", Recorder),
    "complete_only": entry_point("complete_only", CompleteOnly),
    "failing_chunk": entry_point("failing_chunk", FailingChunk),
    "failing_first_chunk": entry_point("failing_first_chunk", FailingFirstChunk),
    "chunks": entry_point("chunks", ChunkRecorder),
    "events": entry_point("events", EventRecorder),
    "rewrite_events": entry_point("rewrite_events", EventRewriter),
    "retry_once": entry_point("retry_once", RetryOnce),
    "peek": entry_point("peek", Peek),
    "life1": entry_point("life1", Lifecycle),
    "life2": entry_point("life2", Lifecycle),
}

# One event split across writes mid-line and mid-field, then the rest, with a comment.
SSE_PIECES = [
    b"event: greeting\ndata: hel",
    b"lo\ndata: wor",
    b"ld\n",
    b"\nid: 7\ndata: drop\n\ndata: spl",
    b"it\n",
    b"\n: a comment\n\ndata: last\n\n",
]
SSE_EVENTS = [
    SSEEvent(data="hello\nworld", event="greeting"),
    SSEEvent(data="drop", id="7"),
    SSEEvent(data="split"),
    SSEEvent(data="last"),
]


@pytest.fixture(autouse=True)
def clear_records() -> None:
    calls.clear()
    chunks_seen.clear()
    events_seen.clear()


@attrs.define
class Upstream:
    url: str
    #: The ``X-Request-Order`` headers of every request the upstream received.
    hits: list[list[str]]


@pytest.fixture
async def upstream(serve_app: Callable[[web.Application], Awaitable[str]]) -> Upstream:
    """A real upstream: ``/sse`` streams `SSE_PIECES` slowly, ``/text`` two chunks, else JSON."""
    hits: list[list[str]] = []

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in SSE_PIECES:
            await response.write(piece)
            await asyncio.sleep(0.03)  # each piece reaches the gateway on its own
        await response.write_eof()
        return response

    async def text(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for piece in (b"hello ", b"world"):
            await response.write(piece)
            await asyncio.sleep(0.03)
        await response.write_eof()
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(500):  # ends early when the gateway goes away
            try:
                await response.write(f"data: {i}\n\n".encode())
            except ConnectionError:
                break
            await asyncio.sleep(0.02)
        return response

    async def flaky(request: web.Request) -> web.Response:
        if request.headers.get("X-Attempt") == "2":
            return web.json_response({"ok": True})
        return web.json_response({"error": "busy"}, status=503)

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        hits.append(request.headers.getall("X-Request-Order", []))
        return await handler(request)  # type: ignore[no-any-return]

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application(middlewares=[record])
    app.router.add_get("/sse", sse)
    app.router.add_get("/text", text)
    app.router.add_get("/flaky", flaky)
    app.router.add_get("/endless", endless)
    app.router.add_route("*", "/{tail:.*}", echo)
    return Upstream(await serve_app(app), hits)


def make_runtime(upstream_url: str, pipeline: list[str], extra: str = "") -> Runtime:
    """A runtime for one catch-all route to ``upstream_url`` (``extra`` TOML goes first)."""
    names = ", ".join(f'"{n}"' for n in pipeline)
    text = f"""
pipeline = [{names}]
{extra}

[upstreams.up]
url = "{upstream_url}"

[routes.r]
path = "/{{rest*}}"
upstream = "up"
"""
    return build_runtime(parse_config(text, "test.toml", env={}), installed=INSTALLED)


@attrs.frozen
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


Serve = Callable[[Runtime], Awaitable[Callable[[str], Awaitable[Answer]]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve a runtime on loopback; return a function that GETs a path from it."""
    services: list[Service] = []
    session = aiohttp.ClientSession(auto_decompress=False)

    async def start(runtime: Runtime) -> Callable[[str], Awaitable[Answer]]:
        service = await Service.create(runtime)
        await service.start(make_socket("127.0.0.1", 0))
        services.append(service)

        async def get(path: str) -> Answer:
            async with session.get(f"http://127.0.0.1:{service.port}{path}") as response:
                return Answer(response.status, response.headers, await response.read())

        return get

    yield start
    await session.close()
    for service in services:
        await service.stop(1)


async def completed(count: int) -> list[tuple[Any, ...]]:
    """The ``on_complete`` calls, once ``count`` of them have happened (and no more)."""
    for _ in range(200):
        done = [c for c in calls if c[1] == "on_complete"]
        if len(done) >= count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # a second call, were there one, would show by now
    return [c for c in calls if c[1] == "on_complete"]


def parse_events(body: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    parsed = parser.feed(body) + parser.flush()
    return [event for event, _ in parsed if event is not None]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- order ----------------------------------------------------------------------


async def test_request_hooks_in_order_response_and_complete_in_reverse(
    upstream: Upstream, serve: Serve
) -> None:
    get = await serve(make_runtime(upstream.url, ["a", "b", "c"]))

    answer = await get("/anything")

    assert answer.status == 200
    assert upstream.hits == [["a", "b", "c"]]
    assert answer.headers.getall("X-Response-Order") == ["c", "b", "a"]
    assert await completed(3) == [
        ("c", "on_complete", None),
        ("b", "on_complete", None),
        ("a", "on_complete", None),
    ]
    assert [c[:2] for c in calls if c[1] != "on_complete"] == [
        ("a", "on_request"),
        ("b", "on_request"),
        ("c", "on_request"),
        ("c", "on_response"),
        ("b", "on_response"),
        ("a", "on_response"),
    ]


async def test_route_pipeline_skip_and_config_override(upstream: Upstream, serve: Serve) -> None:
    extra = """
[routes.special]
path = "/special"
upstream = "up"
skip = ["a"]
pipeline = ["c"]

[routes.teapot]
path = "/teapot"
upstream = "up"
[routes.teapot.plugins.b]
answer = 418
"""
    get = await serve(make_runtime(upstream.url, ["a", "b"], extra))

    assert (await get("/special")).status == 200
    assert (await get("/other")).status == 200
    teapot = await get("/teapot")

    # The route's own plugins run after the global ones it keeps.
    assert upstream.hits == [["b", "c"], ["a", "b"]]
    # [routes.teapot.plugins.b] is merged over [plugins.b] for that route only.
    assert teapot.status == 418
    assert b'"answered_by": "b"' in teapot.body


# --- short-circuits -------------------------------------------------------------


async def test_returned_response_skips_upstream_and_later_plugins(
    upstream: Upstream, serve: Serve
) -> None:
    get = await serve(make_runtime(upstream.url, ["a", "b", "c"], "[plugins.b]\nanswer = 403"))

    answer = await get("/anything")

    assert answer.status == 403
    assert answer.body == b'{"answered_by": "b"}'
    assert upstream.hits == []
    # Only plugins before the one that answered see on_response, as in Envoy.
    assert answer.headers.getall("X-Response-Order") == ["a"]
    assert [c for c in calls if c[1] != "on_complete"] == [
        ("a", "on_request"),
        ("b", "on_request"),
        ("a", "on_response", 403),
    ]
    # on_complete still runs exactly once for every plugin of the pipeline.
    assert await completed(3) == [
        ("c", "on_complete", None),
        ("b", "on_complete", None),
        ("a", "on_complete", None),
    ]


async def test_raised_error_skips_upstream_and_later_request_hooks(
    upstream: Upstream, serve: Serve
) -> None:
    get = await serve(make_runtime(upstream.url, ["a", "b", "c"], "[plugins.b]\nrefuse = true"))

    answer = await get("/anything")

    assert answer.status == 403
    assert answer.headers["Content-Type"].startswith("application/json")
    assert b'"code": "forbidden"' in answer.body
    assert upstream.hits == []
    assert ("c", "on_request") not in calls
    assert await completed(3) == [
        ("c", "on_complete", "Forbidden"),
        ("b", "on_complete", "Forbidden"),
        ("a", "on_complete", "Forbidden"),
    ]


async def test_raised_error_is_seen_only_by_earlier_plugins(
    upstream: Upstream, serve: Serve
) -> None:
    get = await serve(make_runtime(upstream.url, ["a", "b", "c"], "[plugins.b]\nrefuse = true"))

    answer = await get("/anything")

    assert answer.status == 403
    assert answer.headers.getall("X-Response-Order") == ["a"]


async def test_unreachable_upstream_is_502_and_completes_once(serve: Serve) -> None:
    get = await serve(make_runtime(f"http://127.0.0.1:{closed_port()}", ["a", "b"]))

    answer = await get("/anything")

    assert answer.status == 502
    assert b'"code": "bad_gateway"' in answer.body
    # Every plugin's on_request ran, so every plugin sees the error answer.
    assert answer.headers.getall("X-Response-Order") == ["b", "a"]
    assert await completed(2) == [
        ("b", "on_complete", "UpstreamError"),
        ("a", "on_complete", "UpstreamError"),
    ]


async def test_error_raised_by_on_response_reaches_earlier_plugins_once(
    upstream: Upstream, serve: Serve
) -> None:
    get = await serve(make_runtime(upstream.url, ["a", "b"], "[plugins.b]\nrefuse_response = true"))

    answer = await get("/anything")

    assert answer.status == 403
    assert b'"code": "forbidden"' in answer.body
    assert [c for c in calls if c[:2] == ("b", "on_response")] == [("b", "on_response", 200)]
    assert ("a", "on_response", 403) in calls


async def test_a_body_hook_failing_mid_stream_aborts_the_client(upstream: Upstream) -> None:
    runtime = make_runtime(upstream.url, ["a", "failing_chunk"])
    service = await Service.create(runtime)
    await service.start(make_socket("127.0.0.1", 0))
    try:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.get(f"http://127.0.0.1:{service.port}/text") as response:
                    body: bytes | None = await response.read()
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                body = None  # the connection was aborted mid-body: the client can tell
            except aiohttp.ClientResponseError as exc:  # a malformed answer
                body = exc.message.encode()
        done = await completed(1)
    finally:
        await service.stop(1)

    assert body is None, body
    assert done == [("a", "on_complete", "RuntimeError")]


async def test_a_body_hook_failing_before_any_byte_gives_a_clean_error(upstream: Upstream) -> None:
    runtime = make_runtime(upstream.url, ["a", "failing_first_chunk"])
    service = await Service.create(runtime)
    await service.start(make_socket("127.0.0.1", 0))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{service.port}/text") as response:
                status, body = response.status, await response.json()
    finally:
        await service.stop(1)
    assert status == 500
    assert body["error"]["message"] == "a plugin failed while streaming the answer"


# --- which hooks are called -----------------------------------------------------


async def test_only_overridden_hooks_are_called(upstream: Upstream, serve: Serve) -> None:
    runtime = make_runtime(upstream.url, ["a", "complete_only", "b"])
    pipeline = runtime.pipelines["r"]
    only = pipeline.plugins[1]
    assert isinstance(only, CompleteOnly)

    assert [i for i, _ in pipeline.request_hooks] == [0, 2]
    assert [i for i, _ in pipeline.response_hooks] == [2, 0]
    assert pipeline.body_stages == []
    assert pipeline.body_filter(None, sse=True) is None  # type: ignore[arg-type]
    assert [hook.__self__ for hook in pipeline.complete_hooks] == [  # type: ignore[attr-defined]
        pipeline.plugins[2],
        only,
        pipeline.plugins[0],
    ]

    get = await serve(runtime)
    assert (await get("/anything")).status == 200
    assert await completed(3) == [
        ("b", "on_complete", None),
        ("complete_only", "on_complete", None),
        ("a", "on_complete", None),
    ]


async def test_a_plugin_may_decline_a_hook_it_overrides(upstream: Upstream, serve: Serve) -> None:
    runtime = make_runtime(upstream.url, ["events"], "[plugins.events]\nenabled = false")
    assert runtime.pipelines["r"].body_stages == []
    get = await serve(runtime)

    answer = await get("/sse")

    assert answer.body == b"".join(SSE_PIECES)
    assert events_seen == []


# --- body hooks -----------------------------------------------------------------


async def test_on_event_sees_whole_events_however_the_bytes_arrive(
    upstream: Upstream, serve: Serve
) -> None:
    # "chunks" is later in the pipeline, so it sees the body first: the raw chunks.
    get = await serve(make_runtime(upstream.url, ["events", "chunks"]))

    answer = await get("/sse")

    assert answer.status == 200
    assert answer.headers["X-Accel-Buffering"] == "no"
    # The upstream's pieces reached the gateway as separate chunks, mid-event...
    raw = [c for c in chunks_seen if c]
    assert len(raw) >= 3
    assert raw[0].startswith(b"event: greeting\ndata: hel")
    assert not raw[0].endswith(b"\n\n")
    # ...yet on_event saw each event whole, once.
    assert events_seen == SSE_EVENTS
    # Events no plugin changed pass through byte for byte (the comment too).
    assert answer.body == b"".join(SSE_PIECES)


async def test_on_event_list_inserts_and_none_drops(upstream: Upstream, serve: Serve) -> None:
    # "rewrite_events" is later in the pipeline, so "events" sees what it made.
    get = await serve(make_runtime(upstream.url, ["events", "rewrite_events"]))

    answer = await get("/sse")

    expected = [
        SSEEvent(data="hello\nworld", event="greeting"),
        SSEEvent(data="split-1"),
        SSEEvent(data="split-2", event="added"),
        SSEEvent(data="last"),
    ]
    assert events_seen == expected
    assert parse_events(answer.body) == expected
    assert b"data: drop" not in answer.body
    assert b": a comment\n\n" in answer.body


async def test_on_chunk_gets_a_final_empty_chunk(upstream: Upstream, serve: Serve) -> None:
    runtime = make_runtime(upstream.url, ["chunks"], '[plugins.chunks]\ntail = "<end>"')
    get = await serve(runtime)

    answer = await get("/text")

    assert b"".join(chunks_seen) == b"hello world"
    assert chunks_seen[-1] == b""
    assert chunks_seen.count(b"") == 1
    # What a chunk hook returns for the final b"" is sent after the body.
    assert answer.body == b"hello world<end>"


# --- retry ------------------------------------------------------------------------


async def test_retry_sends_the_request_again(upstream: Upstream, serve: Serve) -> None:
    get = await serve(make_runtime(upstream.url, ["a", "retry_once"]))

    answer = await get("/flaky")

    assert answer.status == 200
    assert answer.body == b'{"ok": true}'
    assert len(upstream.hits) == 2
    assert ("retry_once", "on_response", 503) in calls
    assert ("retry_once", "on_response", 200) in calls
    assert await completed(1) == [("a", "on_complete", None)]


async def test_a_discarded_answer_is_not_shown_to_later_response_hooks(
    upstream: Upstream, serve: Serve
) -> None:
    get = await serve(make_runtime(upstream.url, ["a", "retry_once"]))

    answer = await get("/flaky")

    assert answer.status == 200
    assert [c for c in calls if c[:2] == ("a", "on_response")] == [("a", "on_response", 200)]


# --- lifecycle ------------------------------------------------------------------


async def test_startup_and_shutdown_follow_the_service(upstream: Upstream) -> None:
    runtime = make_runtime(upstream.url, ["life1", "life2"])
    assert calls == []

    service = await Service.create(runtime)
    try:
        assert [c[:2] for c in calls] == [("life1", "startup"), ("life2", "startup")]
        context = calls[0][2]
        assert context.config is runtime.config
        assert context.proxies is runtime.forwarder.proxies  # one rotation, shared
        assert not hasattr(context, "forwarder")  # usable by no plugin: gone
        await service.start(make_socket("127.0.0.1", 0))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{service.port}/x") as response,
        ):
            assert response.status == 200
        assert not [c for c in calls if c[1] == "shutdown"]
    finally:
        await service.stop(1)

    assert [c for c in calls if c[1] == "shutdown"] == [
        ("life2", "shutdown"),
        ("life1", "shutdown"),
    ]


async def test_client_disconnect_completes_once(upstream: Upstream) -> None:
    runtime = make_runtime(upstream.url, ["a", "events"])
    service = await Service.create(runtime)
    await service.start(make_socket("127.0.0.1", 0))
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"http://127.0.0.1:{service.port}/endless")
            assert response.status == 200
            assert await response.content.readuntil(b"\n\n") == b"data: 0\n\n"
            response.close()  # the client goes away mid-stream
        done = await completed(1)
    finally:
        await service.stop(1)

    assert len(done) == 1
    assert done[0][:2] == ("a", "on_complete")
    assert done[0][2] is not None  # the disconnect is reported as the error
    assert len(events_seen) < 100  # the upstream stream was not read to its end


@pytest.mark.parametrize(("limit", "peeked"), [(1024, b"hello world"), (5, None)])
async def test_a_response_hook_reads_the_body_first_and_the_client_still_gets_it(
    upstream: Upstream, serve: Serve, limit: int, peeked: bytes | None
) -> None:
    extra = f"[plugins.peek]\nlimit = {limit}"
    get = await serve(make_runtime(upstream.url, ["chunks", "peek"], extra))
    answer = await get("/text")
    assert answer.status == 200 and answer.body == b"hello world"
    assert ("peek", "peeked", peeked) in calls
    assert b"".join(chunks_seen) == b"hello world"  # the body hooks saw all of it too
