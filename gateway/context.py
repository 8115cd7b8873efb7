"""What a plugin's ``startup`` hook receives: the gateway's shared services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.http_client import HttpClient
    from gateway.plugin import Plugin
    from gateway.proxy_rotation import ProxyRotation


@attrs.frozen
class GatewayContext:
    """The config being served, the services plugins share with the gateway,
    and the running plugins' reports."""

    config: GatewayConfig
    #: Calls services through the gateway's transport (its proxies, TLS, time-outs).
    http: HttpClient
    #: The outbound proxies' turns and health, shared with the forwarder: a plugin
    #: that chooses ``ex.proxy`` itself takes turns here and reports failures here.
    proxies: ProxyRotation
    #: The plugins serving this config, in pipeline order (one per distinct config table).
    plugins: tuple[Plugin, ...] = ()
    #: Each route's pipeline, by route name.
    pipelines: Mapping[str, tuple[Plugin, ...]] = attrs.field(factory=dict)

    def route_plugins(self, route: str) -> tuple[Plugin, ...]:
        """The plugins ``route`` runs, in pipeline order (none for an unknown route)."""
        return tuple(self.pipelines.get(route, ()))

    def statuses(self) -> dict[str, Mapping[str, Any]]:
        """``{plugin name: Plugin.status()}`` for the running plugins that report one.

        A plugin that routes configure differently runs as several instances: their
        reports are merged, the first instance's value winning where they overlap.
        """
        merged: dict[str, Mapping[str, Any]] = {}
        for plugin in self.plugins:
            status = plugin.status()
            if status:
                merged[plugin.name] = _merge(merged.get(plugin.name, {}), status)
        return merged


def _merge(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """``first`` with what only ``second`` has added, table by table."""
    merged = dict(first)
    for key, value in second.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], Mapping) and isinstance(value, Mapping):
            merged[key] = _merge(merged[key], value)
    return merged
