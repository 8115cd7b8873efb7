"""The forwarder: the only code that talks to upstreams for client requests.

It sends a request to an ``[upstreams.<name>]`` through the transport
(`gateway.transport`) with that upstream's pool, proxy, TLS settings and
time-outs, and keeps the proxies' rotation and health.  Network failures come
back as the gateway's errors: a refused connection is 502, a timeout before the
response head 504, a TLS failure 502 saying what failed, a proxy failure 502
saying which (unreachable, timed out, refused the credentials), all
connections in use for ``connect_timeout`` 503.  Responses are never
decompressed: bytes and ``Content-Encoding`` pass through together.

SECURITY: an upstream's configured proxy is always used: when no plugin chose
one, the forwarder chooses from the upstream's list itself (`ProxyRotation`),
so that no route connects directly to an upstream meant to be reached through
a proxy.  A proxy that fails is skipped for a while.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import aiohttp_socks
import structlog
from aiohttp_socks import ProxyConnector
from multidict import CIMultiDict
from yarl import URL

from gateway.config import RouteConfig, UpstreamConfig
from gateway.errors import UpstreamError
from gateway.proxy_rotation import ProxyRotation
from gateway.redaction import redact_url
from gateway.transport import (
    Body,
    Limits,
    Timeouts,
    Transport,
    UpstreamResponse,
    UpstreamTlsFailed,
)

# (Also imported from here by ``upstream_proxy``, until it imports the plugin API.)
from gateway.transport.errors import ProxyConnectError as ProxyConnectError
from gateway.transport.errors import client_body_error, proxy_refusal
from gateway.transport.errors import upstream_errors as transport_errors
from gateway.transport.proxy import proxy_settings

logger = structlog.get_logger("gateway")


class Forwarder:
    """Sends requests to the config's upstreams, each with its own settings."""

    def __init__(self) -> None:
        self.transport = Transport()
        #: The outbound proxies' turns and health, for every route of this config.
        self.proxies = ProxyRotation()
        self._settings: dict[str, tuple[Limits, Timeouts, str]] = {}

    def choose_proxy(self, upstream: UpstreamConfig | None) -> str | None:
        """The proxy to reach ``upstream`` through next (``None``: it has none)."""
        return self.proxies.choose(upstream.proxy) if upstream and upstream.proxy else None

    async def request(
        self,
        upstream: UpstreamConfig,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Body,
        *,
        proxy: str | None,
        route: RouteConfig | None = None,
        timeouts: Timeouts | None = None,
    ) -> UpstreamResponse:
        """Send a request to ``upstream``; return the answer once its head arrived.

        ``timeouts``, or else ``route``'s own time-outs if it sets any, win over
        the upstream's.
        """
        limits, own, target = self._upstream_settings(upstream)
        if timeouts is None and route is not None and (route.connect_timeout or route.idle_timeout):
            timeouts = Timeouts(
                route.connect_timeout or own.connect, route.idle_timeout or own.idle
            )
        try:
            return await self.transport.request(
                method,
                url,
                headers,
                body,
                proxy=proxy,
                timeouts=timeouts or own,
                limits=limits,
                tls=upstream.tls,
                group=upstream.name,
                target=target,
            )
        except ProxyConnectError as exc:
            if proxy is not None:
                self.proxies.failed(proxy, exc.message)
            raise
        except UpstreamTlsFailed as exc:
            logger.warning("upstream TLS failed", upstream=upstream.name, error=exc.message)
            raise

    def _upstream_settings(self, upstream: UpstreamConfig) -> tuple[Limits, Timeouts, str]:
        """An upstream's limits, time-outs and name in messages (made once per upstream)."""
        settings = self._settings.get(upstream.name)
        if settings is None:
            settings = self._settings[upstream.name] = (
                Limits(upstream.max_connections, upstream.keepalive_timeout),
                Timeouts(upstream.connect_timeout, upstream.idle_timeout),
                f"upstream {upstream.name!r}",
            )
        return settings

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.transport.close()

    async def send(self, ex: Any, data: Body) -> UpstreamResponse:
        """(Legacy: ``imitate``'s continuation, until it calls through the plugin API.)"""
        if ex.proxy is None:  # SECURITY: never directly to an upstream that has a proxy
            ex.proxy = self.choose_proxy(ex.upstream)
        ex.attempts += 1
        return await self.request(
            ex.upstream,
            ex.method,
            ex.upstream_url,
            ex.upstream_headers,
            data,
            proxy=ex.proxy,
            route=ex.route if ex.upstream.name == ex.route.upstream else None,
        )


# -- Legacy, for the built-in plugins that call services with aiohttp themselves
# -- (the ChatGPT login), until they call through the plugin API's HTTP client.

# The proxy failures of aiohttp-socks, as the transport's are mapped.
_PROXY_TIMEOUTS = aiohttp_socks.ProxyTimeoutError
_PROXY_UNREACHABLE = (aiohttp_socks.ProxyConnectionError, aiohttp.ClientProxyConnectionError)


def make_connector(
    proxy: str | None, limit: int, keepalive_timeout: float = 15.0
) -> aiohttp.BaseConnector:
    """A connector that dials directly, or through an HTTP(S) or SOCKS proxy."""
    if proxy is None:
        return aiohttp.TCPConnector(limit=limit, keepalive_timeout=keepalive_timeout)
    return ProxyConnector(**proxy_settings(proxy), limit=limit, keepalive_timeout=keepalive_timeout)


@contextlib.contextmanager
def upstream_errors(target: str, proxy: str | None) -> Iterator[None]:
    """The transport's error mapping (`gateway.transport.errors`), and aiohttp's failures."""
    where = redact_url(proxy) if proxy else "the proxy"
    with transport_errors(target, proxy):
        try:
            yield
        except _PROXY_TIMEOUTS as exc:
            raise ProxyConnectError(
                f"proxy timed out: {where} did not open a tunnel to {target} in time"
            ) from exc
        except _PROXY_UNREACHABLE as exc:
            raise ProxyConnectError(f"proxy unreachable: cannot connect to {where}") from exc
        except aiohttp_socks.ProxyError as exc:
            raise ProxyConnectError(proxy_refusal(exc, where, target, proxy)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(f"cannot connect to {target}", kind="connect") from exc
        except aiohttp.ClientError as exc:
            client_side = client_body_error(exc)
            if client_side is not None:
                raise client_side from None
            raise UpstreamError(f"{target} failed: {type(exc).__name__}", kind="failed") from exc
