"""The request flow: route, run the pipeline, forward, stream the answer back.

`Gateway.handle` is the aiohttp request handler.  For each request it takes the
current `Runtime` (so a reload never changes a request's pipeline half-way),
checks what must be refused before anything else, builds the `Exchange`, runs
the plugins' request hooks, calls the upstream through the `Forwarder` and
streams the answer back through the response hooks, chunk by chunk.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable

import aiohttp
import structlog
from aiohttp import HttpVersion10, HttpVersion11, web
from multidict import istr
from yarl import URL

from gateway.attempts import call_upstream
from gateway.drain import end_answer, ended_by_drain
from gateway.errors import (
    BadRequest,
    ExpectationFailed,
    GatewayError,
    HeadersTooLarge,
    HttpVersionNotSupported,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from gateway.headers import (
    allow_list,
    client_address,
    upstream_request_headers,
)
from gateway.ids import new_id
from gateway.paths import PathPattern, encode_path, normalize_path
from gateway.pipeline import Pipeline
from gateway.plugin import Exchange
from gateway.responses import ClientStream, UpstreamWhole, upstream_read_error
from gateway.routing import RouteMatch
from gateway.runtime import Runtime
from gateway.transport import UpstreamProtocolError, UpstreamResponse

logger = structlog.get_logger("gateway")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Answers up to this size, of known length, that no body hook changes, go out in one write.
_SMALL_ANSWER = 64 * 1024
# (istr: a CIMultiDict keeps an istr copy of a plain str key once iterated.)
_X_ACCEL_BUFFERING = istr("X-Accel-Buffering")
_HTTP_VERSIONS = frozenset({HttpVersion10, HttpVersion11})
# How reading an upstream body fails: it broke off (OSError), went idle (TimeoutError,
# an OSError too) or broke HTTP.
_UPSTREAM_READ_ERRORS = (OSError, UpstreamProtocolError)


class Gateway:
    """Serves requests with the current runtime, which a reload may swap."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        #: Set while shutting down: readiness checks then fail, so traffic moves away.
        self.draining = False

    def handle(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """The answer to ``request``, to be awaited (not a coroutine of its own:
        one frame less held for as long as a stream is open)."""
        if request.path == "/healthz" and request.method in ("GET", "HEAD"):
            return self.health()
        # aiohttp arms an idle timer when a connection opens and keeps it through its
        # first request; a connection that carries a request is not idle, so free the
        # timer now rather than hold it for the whole of a long stream (it is armed
        # again when the answer is done).
        request.protocol.keep_alive(True)
        return serve(self.runtime, request)

    async def health(self) -> web.StreamResponse:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ok"})


def refuse_early(request: web.BaseRequest, runtime: Runtime) -> GatewayError | None:
    """What must be refused before routing: proxy-style targets and oversized requests."""
    server = runtime.config.server
    if request.version not in _HTTP_VERSIONS:
        return HttpVersionNotSupported("only HTTP/1.0 and HTTP/1.1 are served")
    if request.method == "CONNECT":
        return MethodNotAllowed("CONNECT is not supported: this gateway is not a forward proxy")
    if not request.raw_path.startswith("/"):
        # SECURITY: an absolute-form (or asterisk-form) target must never choose the upstream.
        return BadRequest("only origin-form request targets (/path?query) are accepted")
    if sum(len(k) + len(v) + 4 for k, v in request.raw_headers) > server.max_header_size:
        return HeadersTooLarge(f"request headers are larger than {server.max_header_size} bytes")
    length = request.headers.get("Content-Length")
    if length is not None:
        if not length.isdigit():
            return BadRequest("malformed Content-Length")
        if int(length) > server.max_body_size:
            return PayloadTooLarge(server.max_body_size)
    return None


async def serve(runtime: Runtime, request: web.BaseRequest) -> web.StreamResponse:
    """Answer one request with ``runtime``, counted in flight meanwhile (for reloads)."""
    runtime.enter()
    try:
        admitted = await admit(runtime, request)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        match, path = admitted
        pipeline = runtime.pipelines[match.name]
        ex = new_exchange(runtime, request, match, path)
        error: BaseException | None = None
        try:
            answer, error = await run_exchange(runtime, pipeline, ex, match)
            if isinstance(answer, UpstreamResponse):
                # Streamed from here: no frame of run_exchange or forward is held
                # for as long as the stream is open.
                answer, error = await stream_back(pipeline, ex, answer)
            return answer
        except BaseException as exc:  # cancelled by a client disconnect, or a bug
            error = exc
            if ended_by_drain(exc):  # before the answer began
                return await end_answer(ex, None)
            if isinstance(exc, Exception):
                ex.log.exception("request failed", path=path)
                response = GatewayError("the gateway failed to handle the request").response()
                ex.status = response.status
                return response
            raise
        finally:
            await pipeline.run_complete(ex, error)
    finally:
        runtime.leave()


async def admit(
    runtime: Runtime, request: web.BaseRequest
) -> tuple[RouteMatch, str] | web.StreamResponse:
    """The route and normalised path of ``request``, or the answer that refuses it.

    Nothing has reached a plugin yet.  An ``Expect`` other than ``100-continue``
    is refused here; ``100-continue`` is met only when the body is first read
    (`gateway.body.continue_if_expected`), after the plugins before that (auth,
    limits) have let the request through.
    """
    refusal = refuse_early(request, runtime)
    if refusal is not None:
        return refusal.response()
    if "Upgrade" in request.headers:
        # The gateway switches no protocol.  aiohttp's parser drops what followed an
        # Upgrade request in the same read (a pipelined request would wait for the idle
        # timeout, unanswered): close the connection after this answer instead.
        request.protocol.close()
    path = normalize_path(request.path)
    match = runtime.router.match(request.method, path)
    if match is None:
        return NotFound(f"no route for {request.method} {path}").response()
    expect = request.headers.get("Expect")
    if expect is not None and expect.strip().lower() != "100-continue":
        return ExpectationFailed(f"cannot meet the expectation {expect[:40]!r}").response()
    return match, path


def new_exchange(
    runtime: Runtime, request: web.BaseRequest, match: RouteMatch, path: str
) -> Exchange:
    """The `Exchange` for a matched request, its upstream URL built from config only."""
    config = runtime.config
    route = match.route
    upstream = config.upstreams[route.upstream] if route.upstream is not None else None
    upstream_url = None
    if upstream is not None:
        mapped = (
            PathPattern.fill(route.upstream_path, match.params) if route.upstream_path else path
        )
        query = request.raw_path.partition("?")[2]
        target = upstream.url.rstrip("/") + encode_path(mapped) + (f"?{query}" if query else "")
        upstream_url = URL(target, encoded=True)
    forward_address = upstream is not None and upstream.forward_client_address
    headers = upstream_request_headers(
        request.headers,
        keep_length=True,
        forward_client_address=forward_address,
        forward_cookies=route.forward_cookies,
        allowed=allow_list(upstream.forward_headers) if upstream is not None else None,
    )
    peer = request.remote or ""
    forwarded_for = request.headers.getall("X-Forwarded-For", ())
    client_ip = client_address(peer, forwarded_for, config.server.trusted_hops)
    if upstream is not None:
        headers.update(upstream.headers)
        if forward_address:
            chain = ", ".join([*forwarded_for, peer])
            headers["X-Forwarded-For"] = chain
            headers["X-Forwarded-Proto"] = request.scheme
    given_id = request.headers.get("X-Request-ID", "")
    request_id = given_id if _REQUEST_ID.fullmatch(given_id) else new_id()
    return Exchange(
        request=request,
        route_name=match.name,
        route=route,
        upstream=upstream,
        path_params=dict(match.params),  # (the router's is shared: `Router.match`)
        path=path,
        upstream_url=upstream_url,
        upstream_headers=headers,
        client_ip=client_ip,
        request_id=request_id,
        # SECURITY: the upstream's proxy from the start, for every plugin that calls out too.
        proxy=runtime.forwarder.choose_proxy(upstream),
        upstreams=config.upstreams,
        max_body_size=config.server.max_body_size,
        body_idle_timeout=config.server.client_idle_timeout,
        max_event_size=config.server.max_event_size,
    )


async def run_exchange(
    runtime: Runtime, pipeline: Pipeline, ex: Exchange, match: RouteMatch
) -> tuple[web.StreamResponse | UpstreamResponse, BaseException | None]:
    """Run the pipeline and the upstream call.

    Returns the response, or the upstream's answer to `stream_back`, and the error if any.
    """
    try:
        response, index, error = await pipeline.run_request(ex)
        if response is not None:
            return await answer_locally(ex, pipeline, response, index), error
        if not match.method_allowed:
            allowed = ", ".join(runtime.router.allowed_methods(ex.path))
            raise MethodNotAllowed(
                f"{ex.method} is not allowed on {ex.path}", headers={"Allow": allowed}
            )
        if ex.upstream is None:
            raise NotFound(f"no plugin answered {ex.method} {ex.path}")
        return await call_upstream(runtime.forwarder, pipeline, ex)
    except GatewayError as exc:
        return await answer_locally(ex, pipeline, exc.response(), None), exc


async def answer_locally(
    ex: Exchange, pipeline: Pipeline, response: web.StreamResponse, before: int | None
) -> web.StreamResponse:
    """Let the response hooks see an answer the gateway or a plugin made itself.

    Only plugins before the one that answered (``before``) see it, as in Envoy.
    Returns what to send: the answer, or the error a response hook raised instead.
    """
    ex.status = response.status
    ex.response_headers = response.headers
    if response.prepared:  # a plugin that streamed its answer itself
        return response
    replaced, _ = await pipeline.run_response(ex, before)
    return replaced or response


async def stream_back(
    pipeline: Pipeline, ex: Exchange, upstream: UpstreamResponse
) -> tuple[web.StreamResponse, BaseException | None]:
    """Stream the upstream's body to the client as it arrives, through the body hooks.

    Whatever happens (an answer, an error, the client gone, a cancellation), the
    upstream connection is released or closed exactly once, here.
    """
    out = ClientStream(ex, upstream.reason)
    try:
        sse = ready_head(ex)
        length = upstream.content_length
        if (
            not sse
            and length is not None
            and length <= _SMALL_ANSWER
            and not pipeline.changes_bodies
        ):
            return await answer_whole(ex, upstream, pipeline)
        body_filter = pipeline.body_filter(ex, sse)
        if body_filter is not None and ex.response_headers is not None:
            ex.response_headers.popall("Content-Length", None)  # the hooks may change it
        if body_filter is None:
            await out.start()  # nothing can change the head any more: send it now
        broken: GatewayError | None = None
        while True:
            try:
                chunk = await upstream.chunk()
            except _UPSTREAM_READ_ERRORS as exc:
                broken = upstream_read_error(exc)
                if body_filter is None or not ex.ends_broken_body:
                    return out.fail(broken)
                break  # the body hooks end the answer in their own format
            if not chunk:
                break
            if ex.first_byte_at is None:
                ex.first_byte_at = time.perf_counter()
            if body_filter is not None:
                try:
                    chunk = await body_filter.feed(chunk)
                except Exception as exc:
                    return await out.hook_failed(exc), exc
            await out.write(chunk)
        if body_filter is not None:
            try:
                tail = await body_filter.finish()
            except Exception as exc:
                return await out.hook_failed(exc), exc
            await out.write(tail)
        response = await out.finish()
        if broken is None:
            upstream.release()
        return response, broken
    except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
        # The client went away: stop reading the upstream at once.
        ex.log.info("client disconnected", bytes_out=ex.bytes_out)
        return out.response or web.StreamResponse(status=499), exc
    except asyncio.CancelledError as exc:
        if not ended_by_drain(exc):
            raise
        return await end_answer(ex, out.response), exc
    finally:
        upstream.close()  # unless released above: an answer not read to its end


def ready_head(ex: Exchange) -> bool:
    """Whether the answer is an event stream; if so, its head is marked not to be buffered.

    (A function of its own so that the stream's frame does not hold these headers:
    the response copies them, and only its copy should live as long as the stream.)
    """
    headers = ex.response_headers
    assert headers is not None
    sse = headers.get("Content-Type", "").startswith("text/event-stream")
    if sse:
        headers[_X_ACCEL_BUFFERING] = "no"
    return sse


async def answer_whole(
    ex: Exchange, upstream: UpstreamResponse, pipeline: Pipeline
) -> tuple[web.StreamResponse, BaseException | None]:
    """A small answer of known length that no plugin changes, sent in one write rather
    than head, body and end (and metered, if a plugin wants its tokens).

    (Called by `stream_back`, which closes the upstream connection unless released here.)
    """
    try:
        body = await upstream.read()
    except _UPSTREAM_READ_ERRORS as exc:
        error = upstream_read_error(exc)
        answer = error.response()
        ex.status = answer.status
        return answer, error
    ex.first_byte_at = time.perf_counter()
    ex.bytes_out = len(body)
    upstream.release()
    pipeline.meter_whole(ex, body)
    assert ex.status is not None and ex.response_headers is not None
    if ex.method != "HEAD":  # (a HEAD answer keeps the length the body would have had)
        ex.response_headers.popall("Content-Length", None)  # the response sets its own
    reason = upstream.reason if ex.status == ex.upstream_status else None
    return UpstreamWhole(
        status=ex.status, reason=reason, headers=ex.response_headers, body=body
    ), None
