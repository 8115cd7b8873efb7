"""The forwarder: the only code that talks to upstreams.

It keeps one pooled `aiohttp.ClientSession` per upstream and outbound proxy,
sends the request an `Exchange` describes, and maps network failures to the
gateway's errors: a refused connection is 502, a timeout before the response
head 504.  Responses are never decompressed: bytes and ``Content-Encoding``
pass through together.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, Iterator

import aiohttp
from aiohttp_socks import (
    ProxyConnectionError,
    ProxyConnector,
    ProxyError,
    ProxyTimeoutError,
    ProxyType,
)
from yarl import URL

from gateway.config import UpstreamConfig, redact_url
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.plugin import Exchange

_PROXY_TYPES = {
    "http": ProxyType.HTTP,
    "https": ProxyType.HTTP,
    "socks4": ProxyType.SOCKS4,
    "socks5": ProxyType.SOCKS5,
    "socks5h": ProxyType.SOCKS5,
}
_DEFAULT_PORTS = {"http": 80, "https": 443, "socks4": 1080, "socks5": 1080, "socks5h": 1080}


class ProxyConnectError(UpstreamError):
    """The outbound proxy could not be reached or refused the tunnel."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="proxy")


def make_connector(
    proxy: str | None, limit: int, keepalive_timeout: float = 15.0
) -> aiohttp.BaseConnector:
    """A connector that dials directly, or through an HTTP(S) or SOCKS proxy."""
    if proxy is None:
        return aiohttp.TCPConnector(limit=limit, keepalive_timeout=keepalive_timeout)
    url = URL(proxy)
    scheme = url.scheme
    return ProxyConnector(
        proxy_type=_PROXY_TYPES[scheme],
        host=url.host or "",
        port=url.port or _DEFAULT_PORTS[scheme],
        username=url.user,
        password=url.password,
        # socks5h asks the proxy to resolve names; socks5 resolves them here.
        rdns=True if scheme == "socks5h" else (False if scheme == "socks5" else None),
        proxy_ssl=ssl.create_default_context() if scheme == "https" else None,
        limit=limit,
        keepalive_timeout=keepalive_timeout,
    )


def make_session(upstream: UpstreamConfig, proxy: str | None) -> aiohttp.ClientSession:
    """A client session for forwarding: no cookies, no decompression, no added headers."""
    return aiohttp.ClientSession(
        connector=make_connector(proxy, upstream.max_connections, upstream.keepalive_timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        # Without this aiohttp would add its own User-Agent, Accept and Accept-Encoding.
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None),
        raise_for_status=False,
    )


class Forwarder:
    """Sends requests upstream over pooled sessions, one per upstream and proxy."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str | None], aiohttp.ClientSession] = {}

    def session(self, upstream: UpstreamConfig, proxy: str | None) -> aiohttp.ClientSession:
        """The pooled session for ``upstream`` through ``proxy`` (made on first use)."""
        key = (upstream.name, proxy)
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = self._sessions[key] = make_session(upstream, proxy)
        return session

    async def send(
        self, ex: Exchange, data: bytes | AsyncIterable[bytes] | None
    ) -> aiohttp.ClientResponse:
        """Send the exchange's request; return the response once its head arrived."""
        upstream = ex.upstream
        assert upstream is not None and ex.upstream_url is not None
        route = ex.route
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=route.connect_timeout or upstream.connect_timeout,
            sock_read=route.idle_timeout or upstream.idle_timeout,
        )
        session = self.session(upstream, ex.proxy)
        ex.attempts += 1
        with upstream_errors(f"upstream {upstream.name!r}", ex.proxy):
            return await session.request(
                ex.method,
                ex.upstream_url,
                headers=ex.upstream_headers,
                data=data,
                timeout=timeout,
                allow_redirects=False,
                compress=None,
            )

    async def close(self) -> None:
        """Close every pooled connection."""
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def client_body_error(exc: BaseException) -> GatewayError | None:
    """A `GatewayError` the request body raised while aiohttp was sending it, if any."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; bound it anyway
        if seen is None:
            return None
        if isinstance(seen, GatewayError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def upstream_errors(target: str, proxy: str | None) -> Iterator[None]:
    """Turn the client library's failures into the gateway's; ``target`` names what was called.

    A timeout is `UpstreamTimeout` (504), a proxy that cannot be reached or
    refuses the tunnel `ProxyConnectError`, a refused connection or a broken
    answer `UpstreamError` (502).  Proxy credentials never reach the message.
    """
    try:
        yield
    except (TimeoutError, ProxyTimeoutError) as exc:
        raise UpstreamTimeout(f"{target} did not answer in time", kind="timeout") from exc
    # A SOCKS proxy that refuses the credentials may just hang up (EOFError).
    except (
        aiohttp.ClientProxyConnectionError,
        ProxyConnectionError,
        ProxyError,
        EOFError,
    ) as exc:
        where = redact_url(proxy) if proxy else "the proxy"
        raise ProxyConnectError(f"cannot connect to {target} through {where}") from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"cannot connect to {target}", kind="connect") from exc
    except (aiohttp.ClientError, OSError) as exc:
        # The client's own body may have failed (a stalled upload): its error, not ours.
        client_side = client_body_error(exc)
        if client_side is not None:
            raise client_side from None
        raise UpstreamError(f"{target} failed: {type(exc).__name__}", kind="failed") from exc
