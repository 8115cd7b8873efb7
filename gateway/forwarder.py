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

import structlog
from multidict import CIMultiDict
from yarl import URL

from gateway.config import RouteConfig, UpstreamConfig
from gateway.proxy_rotation import ProxyRotation
from gateway.transport import (
    Body,
    Limits,
    ProxyConnectError,
    Timeouts,
    Transport,
    UpstreamResponse,
    UpstreamTlsFailed,
)

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
        target: str | None = None,
    ) -> UpstreamResponse:
        """Send a request to ``upstream``; return the answer once its head arrived.

        ``timeouts``, or else ``route``'s own time-outs if it sets any, win over
        the upstream's.  ``target`` names what is called in messages.
        """
        limits, own, name = self._upstream_settings(upstream)
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
                target=target or name,
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
