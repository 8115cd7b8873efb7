"""``add_header``: a third-party gateway plugin, kept small to be read as an example.

It sets one configured header on every upstream request and, optionally, one
on the response the client gets.  Installed, it does nothing until
``config.toml`` names it::

    pipeline = ["access_log", "add_header"]

    [plugins.add_header]
    name = "X-Team"
    value = "research"
"""

from __future__ import annotations

import attrs

from gateway.api import Exchange, Plugin

__all__ = ["AddHeader"]


class AddHeader(Plugin):
    """Adds one configured header to every upstream request (and optionally the response)."""

    @attrs.frozen
    class Config:
        """``[plugins.add_header]``, structured by cattrs: unknown keys are config errors."""

        #: The header sent upstream, replacing any the client sent under that name.
        name: str
        value: str
        #: A header added to the client's response too; none unless both are set.
        response_name: str | None = None
        response_value: str | None = None

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        # A ValueError here is reported as a config problem with its key path.
        if (config.response_name is None) != (config.response_value is None):
            raise ValueError("set both response_name and response_value, or neither")

    async def on_request(self, ex: Exchange) -> None:
        """Set the header on the request the forwarder will send."""
        ex.upstream_headers[self.config.name] = self.config.value

    async def on_response(self, ex: Exchange) -> None:
        """Add the response header, when one is configured."""
        if self.config.response_name is not None and ex.response_headers is not None:
            ex.response_headers[self.config.response_name] = self.config.response_value
