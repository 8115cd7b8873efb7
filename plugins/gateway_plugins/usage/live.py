"""What the admin page shows beside the ledger, read from the running gateway when asked."""

from __future__ import annotations

from typing import Any

from gateway.api import GatewayConfig, GatewayContext, redact_url, route_plugin_names

from .dashboard import LiveState


def live_state(context: GatewayContext) -> LiveState:
    """The plugins' statuses (credentials, proxies, quotas) and the routes, now."""
    statuses = {name: dict(status) for name, status in context.statuses().items() if status}
    quotas = [q for status in statuses.values() for q in status.get("quotas", ())]
    return LiveState(quotas=quotas, statuses=statuses, routes=route_listing(context.config))


def route_listing(config: GatewayConfig) -> list[dict[str, Any]]:
    """Each route with its target and pipeline, as ``gateway check`` prints them."""
    listing = []
    for name, route in config.routes.items():
        target = "(answered by a plugin)"
        if route.upstream is not None:
            upstream = config.upstreams[route.upstream]
            path = route.upstream_path or route.path
            # SECURITY: an upstream URL may carry credentials.
            target = f"-> {upstream.name} {redact_url(upstream.url).rstrip('/')}{path}"
        pipeline = " > ".join(route_plugin_names(config, route)) or "(no plugins)"
        listing.append(
            {
                "name": name,
                "methods": ",".join(route.methods),
                "path": route.path,
                "target": target,
                "pipeline": pipeline,
            }
        )
    return listing
