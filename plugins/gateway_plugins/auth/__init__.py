"""The `auth` plugin family (see `gateway_plugins.auth.plugin`)."""

from gateway_plugins.auth.plugin import Auth

__all__ = ["Auth"]
