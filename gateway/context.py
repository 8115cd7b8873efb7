"""What a plugin's ``startup`` hook receives: the gateway's shared services."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.forwarder import Forwarder
    from gateway.http_client import HttpClient


@attrs.frozen
class GatewayContext:
    """The config being served, and the client plugins call services with."""

    config: GatewayConfig
    #: Calls services through the gateway's transport (its proxies, TLS, time-outs).
    http: HttpClient
    #: (Legacy: for the built-in plugins that still send through it; usable by no other.)
    forwarder: Forwarder
