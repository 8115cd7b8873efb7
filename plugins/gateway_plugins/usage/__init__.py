"""The `usage` plugin family: the ledger, `gateway usage` and the admin page (see
`gateway_plugins.usage.plugin`)."""

from gateway_plugins.usage.plugin import UsageLedger

__all__ = ["UsageLedger"]
