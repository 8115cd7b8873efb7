"""``upstream_proxy``: a route's own outbound proxies, and how long a failed one is skipped.

Every request to an upstream with a ``proxy`` list goes through one of them,
with or without this plugin: the gateway chooses in rotation and skips, for a
while, a proxy that could not be reached, timed out or refused the tunnel
(`gateway.proxy_rotation`).  The list is the upstream's ``proxy`` setting, which
the default config fills from ``GO_CHATGPT_API_PROXY`` (or ``PROXY``, or
``GATEWAY_PROXY``).  This plugin adds:

- ``proxies``: a list of the route's own (in ``[routes.<r>.plugins.upstream_proxy]``),
  used in place of the upstream's;
- ``cooldown``: how long a failed proxy of its lists is skipped (30 s).

The forwarder keeps one connection pool per upstream and proxy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from gateway.api import (
    Exchange,
    GatewayContext,
    Plugin,
    PositiveSeconds,
    ProxyConnectError,
    ProxyRotation,
    ProxyUrl,
    Seconds,
    redact_url,
)


class UpstreamProxy(Plugin):
    """Routes upstream calls through HTTP(S)/SOCKS proxies, in rotation, skipping broken ones."""

    @attrs.frozen
    class Config:
        #: Proxies for the routes using this config; empty: the upstream's ``proxy``.
        proxies: tuple[ProxyUrl, ...] = ()
        #: How long a proxy that failed to connect is skipped.
        cooldown: PositiveSeconds = Seconds(30.0)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.rotation = ProxyRotation()  # the gateway's own, once started
        self.proxies: tuple[str, ...] = config.proxies

    async def startup(self, context: GatewayContext) -> None:
        self.rotation = context.proxies
        upstreams = context.config.upstreams.values()
        self.proxies = self.config.proxies or tuple(p for u in upstreams for p in u.proxy)
        for proxy in self.proxies:
            self.rotation.cooldowns[proxy] = self.config.cooldown

    def status(self) -> Mapping[str, Any]:
        """Each proxy of its lists (credentials redacted): healthy, or cooling down until when."""
        wall = time.time()
        report: dict[str, dict[str, str]] = {}
        for proxy in self.proxies:
            down_for = self.rotation.down_for(proxy)
            if down_for > 0:
                until = datetime.fromtimestamp(wall + down_for, UTC).isoformat(timespec="seconds")
                report[redact_url(proxy)] = {"state": "cooling down", "until": until}
            else:
                report[redact_url(proxy)] = {"state": "healthy"}
        return {"proxies": report} if report else {}

    async def on_request(self, ex: Exchange) -> None:
        # (Without a list of its own, the upstream's proxy chosen by the gateway stays.)
        if self.config.proxies:
            ex.proxy = self.rotation.choose(self.config.proxies)

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        # The forwarder reports its own failures; this catches the plugins' (the login's).
        if ex.proxy is not None and isinstance(error, ProxyConnectError):
            self.rotation.failed(ex.proxy, error.message)
