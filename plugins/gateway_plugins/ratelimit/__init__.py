"""The `ratelimit` plugin family (see `gateway_plugins.ratelimit.plugin`)."""

from gateway_plugins.ratelimit.plugin import RateLimit

__all__ = ["RateLimit"]
