"""What a plugin's ``startup`` hook receives: the gateway's shared services."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.http_client import HttpClient
    from gateway.proxy_rotation import ProxyRotation


@attrs.frozen
class GatewayContext:
    """The config being served, and the services plugins share with the gateway."""

    config: GatewayConfig
    #: Calls services through the gateway's transport (its proxies, TLS, time-outs).
    http: HttpClient
    #: The outbound proxies' turns and health, shared with the forwarder: a plugin
    #: that chooses ``ex.proxy`` itself takes turns here and reports failures here.
    proxies: ProxyRotation
