"""The `imitate` plugin family (see `gateway_plugins.imitate.plugin`)."""

from gateway_plugins.imitate.plugin import Imitate

__all__ = ["Imitate"]
