"""The forwarder: the only code that talks to upstreams.

It keeps one pool of kept-alive connections (`gateway.upstream_pool`) per
upstream origin and outbound proxy, sends the request an `Exchange` describes,
and maps network failures to the gateway's errors: a refused connection is
502, a timeout before the response head 504.  Responses are never
decompressed: bytes and ``Content-Encoding`` pass through together.

`make_connector` and `upstream_errors` also serve plugins that call services
with aiohttp themselves (the ChatGPT login).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterable, Iterator

import aiohttp
import aiohttp_socks
import python_socks
from aiohttp_socks import ProxyConnector
from yarl import URL

from gateway.config import UpstreamConfig, redact_url
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.plugin import Exchange
from gateway.upstream_client import (
    BadRequestHead,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    request_head,
)
from gateway.upstream_pool import Pool, proxy_settings

# The proxy failures of both python-socks (the forwarder) and aiohttp-socks (plugins).
_PROXY_TIMEOUTS = (python_socks.ProxyTimeoutError, aiohttp_socks.ProxyTimeoutError)
_PROXY_FAILURES = (
    python_socks.ProxyConnectionError,
    python_socks.ProxyError,
    aiohttp_socks.ProxyConnectionError,
    aiohttp_socks.ProxyError,
    aiohttp.ClientProxyConnectionError,
    # A SOCKS proxy that refuses the credentials may just hang up.
    EOFError,
)


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
    return ProxyConnector(**proxy_settings(proxy), limit=limit, keepalive_timeout=keepalive_timeout)


class Forwarder:
    """Sends requests upstream over pooled connections, one pool per origin and proxy."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str | None, str, str | None, int | None], Pool] = {}
        self._tls: ssl.SSLContext | None = None

    def pool(self, upstream: UpstreamConfig, proxy: str | None, url: URL) -> Pool:
        """The pool for ``url``'s origin through ``proxy`` (made on first use)."""
        key = (upstream.name, proxy, url.scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            if self._tls is None and url.scheme == "https":
                self._tls = ssl.create_default_context()
            pool = self._pools[key] = Pool(
                url, proxy, upstream.max_connections, upstream.keepalive_timeout, self._tls
            )
        return pool

    async def send(
        self, ex: Exchange, data: bytes | AsyncIterable[bytes] | None
    ) -> UpstreamResponse:
        """Send the exchange's request; return the response once its head arrived."""
        upstream, url = ex.upstream, ex.upstream_url
        assert upstream is not None and url is not None
        route = ex.route
        pool = self.pool(upstream, ex.proxy, url)
        ex.attempts += 1
        with upstream_errors(f"upstream {upstream.name!r}", ex.proxy):
            head, chunked = request_head(
                ex.method, url.raw_path_qs, pool.host_header, ex.upstream_headers, data
            )
            return await pool.request(
                ex.method,
                head,
                data,
                chunked,
                connect_timeout=route.connect_timeout or upstream.connect_timeout,
                idle_timeout=route.idle_timeout or upstream.idle_timeout,
            )

    async def close(self) -> None:
        """Close every pooled connection."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


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
    except _PROXY_TIMEOUTS as exc:
        raise UpstreamTimeout(f"{target} did not answer in time", kind="timeout") from exc
    except _PROXY_FAILURES as exc:
        where = redact_url(proxy) if proxy else "the proxy"
        raise ProxyConnectError(f"cannot connect to {target} through {where}") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{target} did not answer in time", kind="timeout") from exc
    except (UpstreamConnectError, aiohttp.ClientConnectorError) as exc:
        raise UpstreamError(f"cannot connect to {target}", kind="connect") from exc
    except BadRequestHead as exc:
        raise GatewayError(f"cannot send the request to {target}: {exc}") from None
    except (UpstreamProtocolError, aiohttp.ClientError, OSError) as exc:
        # The client's own body may have failed (a stalled upload): its error, not ours.
        client_side = client_body_error(exc)
        if client_side is not None:
            raise client_side from None
        raise UpstreamError(f"{target} failed: {type(exc).__name__}", kind="failed") from exc
