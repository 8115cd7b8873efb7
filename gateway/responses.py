"""The answer to the client: an upstream's, passed on as it came, or the error that
ends it.

`ClientStream` sends the head with the first byte of the body and ends the answer
as its error says when the body cannot be finished.  aiohttp gives a response
with a body and no ``Content-Type`` the type ``application/octet-stream``: right
for a server that made the body, wrong for a proxy, whose client should see that
the upstream named no type (and sniff or refuse it as it would have).
`UpstreamStream` and `UpstreamWhole` keep the upstream's choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web

from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, error_body
from gateway.sse import EventTooLarge

if TYPE_CHECKING:
    from gateway.plugin import Exchange


class UpstreamStream(web.StreamResponse):
    """An upstream's answer, streamed; with no ``Content-Type`` if it had none."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._untyped = hdrs.CONTENT_TYPE not in self.headers

    async def _write_headers(self) -> None:
        # (aiohttp sets its default while preparing the head, just before this.)
        if self._untyped:
            self.headers.popall(hdrs.CONTENT_TYPE, None)
        await super()._write_headers()


class UpstreamWhole(UpstreamStream, web.Response):
    """An upstream's small answer, sent in one write; with no invented ``Content-Type``."""


class ClientStream:
    """The answer to the client, whose head is sent with its first byte.

    Until a body hook first returns bytes, hooks may still change ``ex.status``
    and ``ex.response_headers``: a plugin that buffers a whole body can choose
    the status from what it found.
    """

    __slots__ = ("ex", "reason", "response")

    def __init__(self, ex: Exchange, reason: str | None) -> None:
        self.ex = ex
        self.reason = reason
        self.response: web.StreamResponse | None = None

    async def start(self) -> web.StreamResponse:
        if self.response is None:
            ex = self.ex
            assert ex.status is not None
            reason = self.reason if ex.status == ex.upstream_status else None
            self.response = UpstreamStream(
                status=ex.status, reason=reason, headers=ex.response_headers
            )
            # The response holds its own copy: keep that one only, for the length of the stream.
            ex.response_headers = self.response.headers
            await self.response.prepare(ex.request)
        return self.response

    async def write(self, data: bytes) -> None:
        if data:
            self.ex.bytes_out += len(data)
            await (self.response or await self.start()).write(data)

    async def finish(self) -> web.StreamResponse:
        response = await self.start()
        await response.write_eof()
        return response

    async def hook_failed(self, exc: Exception) -> web.StreamResponse:
        """A body hook raised: end the answer as its error says.

        An upstream event longer than ``server.max_event_size`` ends an event
        stream already begun with an error event, as an SSE client reads errors
        (the OpenAI SDKs raise it); before that, it is a 502 like any other.
        """
        if not isinstance(exc, EventTooLarge):
            return self.fail(body_hook_error(self.ex, exc))[0]
        self.ex.log.warning("upstream event too large", error=str(exc))
        error = UpstreamError(f"the upstream sent {exc}", kind="event_too_large")
        if self.response is None:
            return self.fail(error)[0]
        await self.write(b"data: " + error_body(error.message, error.type, error.code) + b"\n\n")
        return await self.finish()

    def fail(self, error: GatewayError) -> tuple[web.StreamResponse, GatewayError]:
        """The body cannot be finished (the upstream broke off, or a body hook failed).

        If the client has seen nothing yet it gets a clean error; otherwise its
        connection is aborted, so that it can tell the answer is incomplete.
        """
        if self.response is None:
            self.ex.log.info("answered with an error before the body", error=error.message)
            answer = error.response()
            self.ex.status = answer.status
            return answer, error
        self.ex.log.warning("answer broken off", error=error.message)
        transport = self.ex.request.transport
        if transport is not None:
            transport.abort()
        return self.response, error


def upstream_read_error(exc: BaseException) -> GatewayError:
    """The error for an upstream body that broke off or went idle."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream went idle mid-response", kind="idle_timeout")
    return UpstreamError(f"upstream broke off mid-response: {type(exc).__name__}", kind="aborted")


def body_hook_error(ex: Exchange, exc: Exception) -> GatewayError:
    """The error for a body hook that raised: its own if it chose one, else a logged failure."""
    if isinstance(exc, GatewayError):
        return exc
    ex.log.exception("body hook failed")
    return GatewayError("a plugin failed while streaming the answer")
