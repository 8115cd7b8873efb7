"""The forwarder: the only code that talks to upstreams.

It keeps one pool of kept-alive connections (`gateway.upstream_pool`) per
upstream origin and outbound proxy, sends the request an `Exchange` describes,
and maps network failures to the gateway's errors: a refused connection is
502, a timeout before the response head 504, a TLS failure 502 saying what
failed, a proxy failure 502 saying which (unreachable, timed out, refused the
credentials), all connections in use for ``connect_timeout`` 503.  Responses
are never decompressed: bytes and ``Content-Encoding`` pass through together.

SECURITY: an upstream's configured proxy is always used: when no plugin chose
one, the forwarder chooses from the upstream's list itself (`ProxyRotation`),
so that no route connects directly to an upstream meant to be reached through
a proxy.  A proxy that fails is skipped for a while.

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
import structlog
from aiohttp_socks import ProxyConnector
from yarl import URL

from gateway.config import TlsConfig, UpstreamConfig, redact_url
from gateway.errors import GatewayError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from gateway.plugin import Exchange
from gateway.proxy_rotation import ProxyRotation
from gateway.upstream_client import (
    BadRequestHead,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    request_head,
)
from gateway.upstream_pool import Pool, SlotTimeout, UpstreamTlsError, proxy_settings
from gateway.upstream_tls import tls_context

logger = structlog.get_logger("gateway")

# The proxy failures of both python-socks (the forwarder) and aiohttp-socks (plugins).
_PROXY_TIMEOUTS = (python_socks.ProxyTimeoutError, aiohttp_socks.ProxyTimeoutError)
_PROXY_UNREACHABLE = (
    python_socks.ProxyConnectionError,
    aiohttp_socks.ProxyConnectionError,
    aiohttp.ClientProxyConnectionError,
)
_PROXY_REFUSALS = (
    python_socks.ProxyError,
    aiohttp_socks.ProxyError,
    # A SOCKS proxy that refuses the credentials may just hang up.
    EOFError,
)


class ProxyConnectError(UpstreamError):
    """The outbound proxy could not be reached, timed out, or refused the tunnel."""

    code = "proxy_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="proxy")


class UpstreamTlsFailed(UpstreamError):
    """TLS with the upstream failed (its certificate, its name, the handshake)."""

    code = "upstream_tls_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="tls")


class UpstreamBusy(ServiceUnavailable):
    """Every connection the upstream may have (``max_connections``) stayed in use."""

    code = "upstream_connections_exhausted"


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
        self._tls: dict[TlsConfig, ssl.SSLContext] = {}
        #: The outbound proxies' turns and health, for every route of this config.
        self.proxies = ProxyRotation()

    def choose_proxy(self, upstream: UpstreamConfig | None) -> str | None:
        """The proxy to reach ``upstream`` through next (``None``: it has none)."""
        return self.proxies.choose(upstream.proxy) if upstream and upstream.proxy else None

    def pool(self, upstream: UpstreamConfig, proxy: str | None, url: URL) -> Pool:
        """The pool for ``url``'s origin through ``proxy`` (made on first use)."""
        key = (upstream.name, proxy, url.scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            tls = self.tls_context(upstream) if url.scheme == "https" else None
            pool = self._pools[key] = Pool(
                url, proxy, upstream.max_connections, upstream.keepalive_timeout, tls
            )
        return pool

    def tls_context(self, upstream: UpstreamConfig) -> ssl.SSLContext:
        """The TLS settings for ``upstream`` (one context per distinct setting)."""
        context = self._tls.get(upstream.tls)
        if context is None:
            try:
                context = self._tls[upstream.tls] = tls_context(upstream.tls)
            except ValueError as exc:  # (checked at load; a file may have gone since)
                raise UpstreamTlsFailed(
                    f"TLS settings of upstream {upstream.name!r}: {exc}"
                ) from None
            if not upstream.tls.verify:
                logger.warning(
                    "TLS certificates of this upstream are not verified", upstream=upstream.name
                )
        return context

    async def send(
        self, ex: Exchange, data: bytes | AsyncIterable[bytes] | None
    ) -> UpstreamResponse:
        """Send the exchange's request; return the response once its head arrived."""
        upstream, url = ex.upstream, ex.upstream_url
        assert upstream is not None and url is not None
        if ex.proxy is None:  # SECURITY: never directly to an upstream that has a proxy
            ex.proxy = self.choose_proxy(upstream)
        # A route's own timeouts are for its upstream, not for one a plugin switched to.
        route = ex.route if upstream.name == ex.route.upstream else None
        ex.attempts += 1
        try:
            pool = self.pool(upstream, ex.proxy, url)
            with upstream_errors(f"upstream {upstream.name!r}", ex.proxy):
                head, chunked = request_head(
                    ex.method, url.raw_path_qs, pool.host_header, ex.upstream_headers, data
                )
                return await pool.request(
                    ex.method,
                    head,
                    data,
                    chunked,
                    connect_timeout=(route and route.connect_timeout) or upstream.connect_timeout,
                    idle_timeout=(route and route.idle_timeout) or upstream.idle_timeout,
                )
        except ProxyConnectError as exc:
            if ex.proxy is not None:
                self.proxies.failed(ex.proxy, exc.message)
            raise
        except UpstreamTlsFailed as exc:
            logger.warning("upstream TLS failed", upstream=upstream.name, error=exc.message)
            raise

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

    A timeout is `UpstreamTimeout` (504); a proxy that cannot be reached, times
    out or refuses the tunnel `ProxyConnectError`; failed TLS `UpstreamTlsFailed`;
    a refused connection or a broken answer `UpstreamError` (502); every slot in
    use `UpstreamBusy` (503).  Proxy credentials never reach the message.
    """
    where = redact_url(proxy) if proxy else "the proxy"
    try:
        yield
    except _PROXY_TIMEOUTS as exc:
        raise ProxyConnectError(
            f"proxy timed out: {where} did not open a tunnel to {target} in time"
        ) from exc
    except _PROXY_UNREACHABLE as exc:
        raise ProxyConnectError(f"proxy unreachable: cannot connect to {where}") from exc
    except _PROXY_REFUSALS as exc:
        raise ProxyConnectError(proxy_refusal(exc, where, target, proxy)) from exc
    except SlotTimeout as exc:
        raise UpstreamBusy(
            f"{target} has all its connections ({exc.limit}, max_connections) in use: "
            "try again shortly",
            headers={"Retry-After": "1"},
        ) from None
    except UpstreamTlsError as exc:
        raise UpstreamTlsFailed(f"TLS with {target} failed: {exc.reason}") from exc
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


def proxy_refusal(exc: BaseException, where: str, target: str, proxy: str | None) -> str:
    """What a proxy that answered, but opened no tunnel, meant by it."""
    code = getattr(exc, "error_code", None)
    text = str(exc).lower()
    # (python-socks wraps a proxy that hung up mid-handshake as IncompleteReadError.)
    hung_up = isinstance(exc, EOFError) or type(exc.__cause__).__name__ == "IncompleteReadError"
    with_credentials = proxy is not None and URL(proxy).user is not None
    if code == 407 or "authentication" in text or (hung_up and with_credentials):
        return f"proxy refused the credentials: {where}"
    reason = str(exc) or type(exc).__name__
    return f"proxy {where} could not open a tunnel to {target}: {reason}"
