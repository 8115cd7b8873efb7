"""Calling the upstream until an answer is chosen: retries, and upstreams that fail.

A request goes out once, and again each time a plugin asks for it with
``ex.retry()`` while it is safe (no byte sent to the client, the body
replayable, attempts left):

- from ``on_response``, once the upstream's status and headers are known, to
  discard that answer (another credential, say);
- from ``on_upstream_error``, when the upstream could not be reached, refused the
  connection or the tunnel, failed TLS, or gave no answer head in time, to try
  again elsewhere (``ex.use_upstream``): otherwise that failure is the answer
  (502, 503 or 504).
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import UpstreamError
from gateway.forwarder import Forwarder
from gateway.headers import strip_hop_by_hop
from gateway.pipeline import Pipeline
from gateway.plugin import Exchange
from gateway.transport import Body, UpstreamBusy, UpstreamResponse
from gateway.upstream_body import request_body

#: The most times one request is sent upstream, retries included.
MAX_ATTEMPTS = 8
# What `Forwarder.request` raises when no answer head came: what `on_upstream_error` sees.
_NO_ANSWER = (UpstreamError, UpstreamBusy)


async def call_upstream(
    forwarder: Forwarder, pipeline: Pipeline, ex: Exchange
) -> tuple[web.StreamResponse | UpstreamResponse, BaseException | None]:
    """Call the upstream (again if a plugin asks and it is safe) until an answer is chosen.

    Returns the upstream's answer, to stream back, or the response a response
    hook put in its place; and the error, if any.  An upstream that gave no
    answer, and that no plugin retried, raises its error.
    """
    data, replayable = await request_body(ex)
    while True:
        ex.can_retry = replayable and ex.attempts + 1 < MAX_ATTEMPTS
        ex.upstream_status = None  # a discarded answer's status must not linger
        try:
            upstream = await send(forwarder, ex, data)
        except _NO_ANSWER as exc:
            error = await pipeline.run_upstream_error(ex, exc)
            if not ex.retry_requested:
                raise error  # noqa: B904 (the hooks' answer: ``exc`` itself, or its stand-in)
        else:
            answer = await choose_answer(pipeline, ex, upstream)
            if answer is not None:
                return answer
        ex.retry_requested = False
        if replayable:
            data = ex.body  # a plugin may have changed it before asking again


async def send(forwarder: Forwarder, ex: Exchange, data: Body) -> UpstreamResponse:
    """Send the exchange's request as it stands; return the answer once its head arrived."""
    upstream, url = ex.upstream, ex.upstream_url
    assert upstream is not None and url is not None
    if ex.proxy is None:  # SECURITY: never directly to an upstream that has a proxy
        ex.proxy = forwarder.choose_proxy(upstream)
    ex.attempts += 1
    # A route's own time-outs are for its upstream, not for one a plugin switched to.
    route = ex.route if upstream.name == ex.route.upstream else None
    return await forwarder.request(
        upstream, ex.method, url, ex.upstream_headers, data, proxy=ex.proxy, route=route
    )


async def choose_answer(
    pipeline: Pipeline, ex: Exchange, upstream: UpstreamResponse
) -> tuple[web.StreamResponse | UpstreamResponse, BaseException | None] | None:
    """Run the response hooks on the upstream's answer; ``None`` when one asked for a retry."""
    if not 100 <= upstream.status <= 599:
        upstream.close()
        raise UpstreamError(f"upstream answered an invalid status {upstream.status}", kind="failed")
    ex.upstream_status = ex.status = upstream.status
    ex.upstream_response = upstream
    ex.response_headers = strip_hop_by_hop(upstream.header_list)
    upstream.forget_headers()  # not held for the length of a stream
    try:
        replaced, error = await pipeline.run_response(ex)
    except BaseException:
        upstream.close()
        raise
    if replaced is not None:
        upstream.close()
        return replaced, error
    if not ex.retry_requested:
        return upstream, None
    upstream.close()
    return None
