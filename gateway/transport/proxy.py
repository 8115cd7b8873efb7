"""Connecting through an outbound proxy: HTTP(S) ``CONNECT``, SOCKS4 and SOCKS5 tunnels.

One implementation for every caller (the forwarder and `gateway.http_client`):
python-socks opens the tunnel, TLS to the upstream then runs inside it, and the
tunnel's socket is handed to the same `Connection` a direct connection uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from python_socks import ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio.v2 import Proxy
from yarl import URL

from gateway.transport.connection import Connection

PROXY_TYPES = {
    "http": ProxyType.HTTP,
    "https": ProxyType.HTTP,
    "socks4": ProxyType.SOCKS4,
    "socks5": ProxyType.SOCKS5,
    "socks5h": ProxyType.SOCKS5,
}
#: The port of each scheme when a URL gives none.
DEFAULT_PORTS = {"http": 80, "https": 443, "socks4": 1080, "socks5": 1080, "socks5h": 1080}


def make_proxy(url: str) -> Proxy:
    """A python-socks proxy for an ``http``, ``https``, ``socks4``, ``socks5(h)`` URL."""
    return Proxy(**proxy_settings(url))


def proxy_settings(url: str) -> dict[str, Any]:
    """What python-socks needs to know of a proxy URL."""
    parsed = URL(url)
    scheme = parsed.scheme
    return {
        "proxy_type": PROXY_TYPES[scheme],
        "host": parsed.host or "",
        "port": parsed.port or DEFAULT_PORTS[scheme],
        "username": parsed.user,
        "password": parsed.password,
        # socks5h asks the proxy to resolve names; socks5 resolves them here.
        "rdns": True if scheme == "socks5h" else (False if scheme == "socks5" else None),
        "proxy_ssl": ssl.create_default_context() if scheme == "https" else None,
    }


async def connect_through_proxy(
    proxy: Proxy,
    connection: Connection,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    deadline: float,
) -> None:
    """Open a tunnel to ``host:port`` through ``proxy``, then TLS inside it, both by
    ``deadline``, and hand the tunnel to ``connection``.

    A proxy that has not opened the tunnel by then timed out, whatever the
    reason (it hangs, or the upstream behind it does): that is the proxy's failure.
    """
    try:
        async with asyncio.timeout_at(deadline):
            stream = await proxy.connect(dest_host=host, dest_port=port)
    except TimeoutError:
        raise ProxyTimeoutError("the proxy did not open the tunnel in time") from None
    try:
        if tls is not None:
            async with asyncio.timeout_at(deadline):
                stream = await stream.start_tls(hostname=host, ssl_context=tls)
    except BaseException:
        with contextlib.suppress(Exception):
            await stream.close()
        raise
    transport = stream.writer.transport
    connection._keep = stream.writer  # its collection would close the socket
    transport.set_protocol(connection)
    connection.connection_made(transport)
