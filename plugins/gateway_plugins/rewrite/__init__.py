"""The `rewrite` plugin family (see `gateway_plugins.rewrite.plugin`)."""

from gateway_plugins.rewrite.plugin import Rewrite

__all__ = ["Rewrite"]
