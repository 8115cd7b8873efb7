"""(Legacy: the name ``imitate`` imports, until it imports the plugin API.)"""

from gateway.transport.failures import UpstreamProtocolError

__all__ = ["UpstreamProtocolError"]
