"""The `metrics` plugin family (see `gateway_plugins.metrics.plugin`)."""

from gateway_plugins.metrics.plugin import Metrics

__all__ = ["Metrics"]
