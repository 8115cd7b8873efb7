"""The gateway's one HTTP stack towards upstreams: connections, pools, proxies, TLS.

`Transport` takes plain request parts (method, URL, headers, body, proxy,
time-outs) and returns an `UpstreamResponse`; it imports nothing from the plugin
API, so that the forwarder and `gateway.http_client.HttpClient` (what
plugins call services with) share one implementation and one error mapping.

- `connection` and `answer_reader`: one HTTP/1.1 connection, the answer parsed by llhttp;
- `pool`: kept-alive connections per origin and proxy, with a bounded wait for a slot;
- `proxy`: HTTP ``CONNECT``, SOCKS4 and SOCKS5 tunnels (python-socks);
- `tls`: TLS contexts from settings, and handshake failures in words;
- `errors`: every failure as the gateway's error, mapped in one place.
"""

from gateway.transport.errors import ProxyConnectError, UpstreamBusy, UpstreamTlsFailed
from gateway.transport.failures import UpstreamProtocolError
from gateway.transport.response import UpstreamResponse
from gateway.transport.transport import Body, Limits, Timeouts, Transport

__all__ = [
    "Body",
    "Limits",
    "ProxyConnectError",
    "Timeouts",
    "Transport",
    "UpstreamBusy",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTlsFailed",
]
