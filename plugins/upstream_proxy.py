"""``upstream_proxy``: chooses the outbound proxy for each request.

The list comes from this plugin's ``proxies`` (per route, if a route sets it)
or else from the upstream's ``proxy`` setting, which the default config fills
from ``GO_CHATGPT_API_PROXY`` (or ``PROXY``, or ``GATEWAY_PROXY``).  Proxies are
used in rotation; one that fails to connect is skipped for ``cooldown``.  The
forwarder keeps one connection pool per upstream and proxy.
"""

from __future__ import annotations

import itertools
import time

import attrs
import structlog

from gateway.config import ProxyUrl, Seconds, redact_url
from gateway.forwarder import ProxyConnectError
from gateway.plugin import Exchange, Plugin

logger = structlog.get_logger("gateway")


class UpstreamProxy(Plugin):
    """Routes upstream calls through HTTP(S)/SOCKS proxies, in rotation, skipping broken ones."""

    @attrs.frozen
    class Config:
        #: Proxies for the routes using this config; empty: the upstream's ``proxy``.
        proxies: tuple[ProxyUrl, ...] = ()
        #: How long a proxy that failed to connect is skipped.
        cooldown: Seconds = Seconds(30.0)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._counter = itertools.count()
        self._down_until: dict[str, float] = {}

    async def on_request(self, ex: Exchange) -> None:
        proxies = self.config.proxies or (ex.upstream.proxy if ex.upstream is not None else ())
        if proxies:
            ex.proxy = self.choose(proxies)

    def choose(self, proxies: tuple[str, ...]) -> str:
        """The next healthy proxy in rotation; if none is, the one that recovers first."""
        start = next(self._counter)
        now = time.monotonic()
        for offset in range(len(proxies)):
            proxy = proxies[(start + offset) % len(proxies)]
            if self._down_until.get(proxy, 0.0) <= now:
                return proxy
        return min(proxies, key=lambda p: self._down_until.get(p, 0.0))

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        if ex.proxy is not None and isinstance(error, ProxyConnectError):
            self._down_until[ex.proxy] = time.monotonic() + self.config.cooldown
            logger.warning(
                "proxy failed, skipping it for a while",
                proxy=redact_url(ex.proxy),
                cooldown_s=self.config.cooldown,
            )
