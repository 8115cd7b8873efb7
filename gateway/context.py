"""What a plugin's ``startup`` hook receives: the gateway's shared services."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.forwarder import Forwarder


@attrs.frozen
class GatewayContext:
    """The config being served and the forwarder every upstream call goes through."""

    config: GatewayConfig
    forwarder: Forwarder
