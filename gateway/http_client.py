"""`HttpClient`: how plugins call services, through the gateway's own transport.

A plugin that calls a service itself (a login flow, a token refresh, a
continuation of an answer) gets `GatewayContext.http` at start-up.  Its calls
go through the same connections, proxies, TLS settings, time-outs and error
mapping as the gateway's forwarding (`gateway.transport`): given ``upstream=``
(an ``[upstreams.<name>]`` or its config), a call uses that upstream's pool,
proxies (SECURITY: never directly when it has some), TLS settings and
time-outs; without, a direct connection (or ``proxy=``) with the system's CAs.

Every failure is one of the gateway's errors: `UpstreamError` (502) when the
service cannot be reached or breaks off, `UpstreamTimeout` (504) when it does
go silent for ``timeout``, `ProxyConnectError` for the proxy's own failure.
No cookies, redirects, decompression or default headers: a request goes out
as given.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway import jsonbody
from gateway.config import UpstreamConfig
from gateway.errors import UpstreamError
from gateway.forwarder import Forwarder
from gateway.transport import Body, ProxyConnectError, Timeouts, UpstreamResponse
from gateway.transport.errors import upstream_errors

#: The largest answer `HttpClient.request` reads whole, unless told otherwise.
MAX_ANSWER = 16 * 1024 * 1024
#: Time-outs of a call to no configured upstream, when ``timeout`` does not set them.
DIRECT_TIMEOUTS = Timeouts(connect=10.0, idle=60.0)
# The pools of calls to no configured upstream (an upstream's name is never empty).
_DIRECT = ""


@attrs.frozen
class HttpResponse:
    """An answer read whole: status, headers and body."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as strict JSON (`ValueError` when it is not)."""
        return jsonbody.loads_upstream(self.body)


class HttpStream:
    """An answer whose body is read as it arrives (`HttpClient.stream`)."""

    def __init__(self, answer: UpstreamResponse, target: str, proxy: str | None) -> None:
        self._answer = answer
        #: What was called, in messages.
        self.target = target
        self._proxy = proxy
        self.status = answer.status
        self.reason = answer.reason
        self.headers = CIMultiDictProxy(answer.headers)

    async def chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" at the end."""
        with upstream_errors(self.target, self._proxy):
            chunk = await self._answer.chunk()
        if not chunk:
            self._answer.release()  # read to its end: the connection may serve again
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.chunk():
            yield chunk

    def close(self) -> None:
        """Done with the answer, read or not (called on leaving ``async with``)."""
        self._answer.close()


class HttpClient:
    """Calls services for plugins through the gateway's transport."""

    def __init__(self, forwarder: Forwarder, upstreams: Mapping[str, UpstreamConfig]) -> None:
        self._forwarder = forwarder
        self._upstreams = upstreams

    async def request(
        self,
        method: str,
        url: URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        upstream: UpstreamConfig | str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        max_size: int = MAX_ANSWER,
        target: str | None = None,
    ) -> HttpResponse:
        """Send one request and read its answer whole (at most ``max_size`` bytes, else 502).

        ``timeout`` bounds each wait: for a connection (through the proxy, TLS
        included), then for each next byte of the answer.  By default the
        upstream's time-outs (or `DIRECT_TIMEOUTS`) do.  ``target`` names what is
        called in error messages (by default the upstream, or the URL's host).
        """
        url = URL(url)
        async with self.stream(
            method,
            url,
            headers=headers,
            body=body,
            upstream=upstream,
            proxy=proxy,
            timeout=timeout,
            target=target,
        ) as answer:
            parts: list[bytes] = []
            size = 0
            while chunk := await answer.chunk():
                size += len(chunk)
                if size > max_size:
                    raise UpstreamError(
                        f"{answer.target} answered more than {max_size} bytes", kind="failed"
                    )
                parts.append(chunk)
            return HttpResponse(answer.status, answer.reason, answer.headers, b"".join(parts), url)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        upstream: UpstreamConfig | str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        target: str | None = None,
    ) -> AsyncIterator[HttpStream]:
        """Send one request; yield its answer once the head has arrived, the body to be read.

        ``timeout`` and ``target`` are as for `request`.
        """
        url = URL(url)
        sent = CIMultiDict(headers or {})
        if isinstance(upstream, str):
            upstream = self._upstreams[upstream]
        target = target or self._target(upstream, url)
        if upstream is not None:
            if proxy is None:  # SECURITY: never directly to an upstream that has a proxy
                proxy = self._forwarder.choose_proxy(upstream)
            answer = await self._forwarder.request(
                upstream,
                method,
                url,
                sent,
                body,
                proxy=proxy,
                timeouts=_timeouts(timeout),
                target=target,
            )
        else:
            answer = await self._direct(method, url, sent, body, proxy, timeout, target)
        stream = HttpStream(answer, target, proxy)
        try:
            yield stream
        finally:
            stream.close()

    def _target(self, upstream: UpstreamConfig | None, url: URL) -> str:
        """What a call is to, in messages, unless told."""
        return f"upstream {upstream.name!r}" if upstream is not None else url.host or "the service"

    async def _direct(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Body,
        proxy: str | None,
        timeout: float | None,
        target: str,
    ) -> UpstreamResponse:
        """A call to no configured upstream: its own pools, the system's CAs."""
        try:
            return await self._forwarder.transport.request(
                method,
                url,
                headers,
                body,
                proxy=proxy,
                timeouts=_timeouts(timeout) or DIRECT_TIMEOUTS,
                group=_DIRECT,
                target=target,
            )
        except ProxyConnectError as exc:
            if proxy is not None:
                self._forwarder.proxies.failed(proxy, exc.message)
            raise


def _timeouts(timeout: float | None) -> Timeouts | None:
    return Timeouts(connect=timeout, idle=timeout) if timeout is not None else None
