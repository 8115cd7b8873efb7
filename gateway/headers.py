"""Header rules of a proxy: hop-by-hop removal and the client's address."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 section 7.6.1, plus the proxy-only headers a gateway must not pass on.
# Names are kept lower-cased: ``istr`` compares case-insensitively but hashes
# case-sensitively, so a set of them would miss "keep-alive" written in lower case.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
    )
)

# Headers that reveal the client or the proxies it came through.  They are not
# sent to an upstream unless it is configured to receive the client's address.
CLIENT_ADDRESS = frozenset(
    h.lower()
    for h in (
        "Forwarded",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Port",
        "X-Real-IP",
        "Via",
        "True-Client-IP",
        "CF-Connecting-IP",
        "X-Client-IP",
    )
)

# The request's Host is the gateway's; the forwarder sets the upstream's.
_REQUEST_ONLY = frozenset(("host", "content-length", "expect"))

Headers = CIMultiDictProxy[str] | CIMultiDict[str]


def strip_hop_by_hop(
    headers: Headers | Iterable[tuple[str, str]],
    drop: frozenset[str] = HOP_BY_HOP,
) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop headers and any of ``drop`` (lower-case).

    Also without the headers a ``Connection`` header names.  One pass into a
    list, then one `CIMultiDict`: building it from a generator costs three times more.
    """
    items = headers.items() if isinstance(headers, CIMultiDict | CIMultiDictProxy) else headers
    kept = []
    connection = ""
    for name, value in items:
        lower = name.lower()
        if lower in drop:
            if lower == "connection":
                connection += "," + value
            continue
        kept.append((name, value))
    if connection:
        named = {token.strip().lower() for token in connection.split(",")}
        kept = [(name, value) for name, value in kept if name.lower() not in named]
    return CIMultiDict(kept)


@functools.cache
def _request_drop(
    keep_length: bool, forward_client_address: bool, forward_cookies: bool
) -> frozenset[str]:
    """What never goes upstream, for one combination of the route's settings."""
    drop = HOP_BY_HOP | _REQUEST_ONLY
    if keep_length:
        drop -= {"content-length"}
    if not forward_client_address:
        drop |= CLIENT_ADDRESS
    if not forward_cookies:
        drop |= {"cookie"}
    return drop


def upstream_request_headers(
    headers: Headers,
    *,
    keep_length: bool,
    forward_client_address: bool,
    forward_cookies: bool,
) -> CIMultiDict[str]:
    """The client's headers as they may go upstream, before plugins add their own."""
    drop = _request_drop(keep_length, forward_client_address, forward_cookies)
    return strip_hop_by_hop(headers, drop)


def client_address(peer: str, forwarded_for: Iterable[str], trusted_hops: int) -> str:
    """The client's address, believing ``X-Forwarded-For`` through ``trusted_hops`` proxies.

    With no trusted hops the peer is the client.  Each trusted proxy appends the
    address it saw, so the client is the entry ``trusted_hops`` places from the
    right of the chain ``forwarded_for + [peer]``.
    """
    if trusted_hops <= 0:
        return peer
    chain = [a.strip() for value in forwarded_for for a in value.split(",") if a.strip()]
    chain.append(peer)
    return chain[max(0, len(chain) - 1 - trusted_hops)]
