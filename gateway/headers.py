"""Header rules of a proxy: hop-by-hop removal, what upstreams may learn of the
client, and the client's address."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 section 7.6.1, plus the proxy-only headers a gateway must not pass on.
# Names are kept lower-cased: ``istr`` compares case-insensitively but hashes
# case-sensitively, so a set of them would miss "keep-alive" written in lower case.
#: An HTTP token (RFC 9110 section 5.6.2): what a header name, or a method, may be.
HEADER_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

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

# SECURITY: what identifies the client is recognised by rule, not by a list of names
# (every CDN and proxy invents its own: True-Client-IP, Fastly-Client-IP, X-ProxyUser-Ip,
# ...).  A name is read lower-cased, "_" as "-", and split into words; it identifies
# the client when it speaks of forwarding or trace context anywhere, or has one of
# these words, or a word ending in "ip" after one of the prefixes below (X-ClientIP).
_IDENTIFYING_PARTS = ("forwarded", "trace")
_IDENTIFYING_WORDS = frozenset(
    {
        # addresses
        "ip",
        "ips",
        "ipv4",
        "ipv6",
        "addr",
        "address",
        "ipaddr",
        "ipaddress",
        "via",
        "real",
        "remote",
        "originating",
        "connecting",
        # trace context beyond the "trace" names: Zipkin, W3C baggage, OpenTracing, Datadog
        "b3",
        "baggage",
        "span",
        "spanid",
        "datadog",
        # client certificates (nginx's $ssl_client_*, Envoy's XFCC)
        "cert",
        "certs",
        "certificate",
        "dn",
        "verify",
    }
)
_IP_OF = ("client", "real", "remote", "user", "source", "src", "peer", "origin", "connecting")


@functools.lru_cache(maxsize=4096)
def identifies_client(name: str) -> bool:
    """Whether a header ``name`` (any case, ``_`` or ``-``) may identify the client.

    True for any name that names a forwarded, real, remote, originating or client
    address, a trace context or a client certificate (``X-Forwarded-For``,
    ``X_Real_IP``, ``CF-Connecting-IP``, ``traceparent``, ``X-SSL-Client-Cert``, ...).
    """
    lower = name.lower().replace("_", "-")
    if any(part in lower for part in _IDENTIFYING_PARTS):
        return True
    words = lower.split("-")
    return any(
        word in _IDENTIFYING_WORDS or (word.endswith("ip") and word[:-2].endswith(_IP_OF))
        for word in words
    )


# The request's Host is the gateway's; the forwarder sets the upstream's.
_REQUEST_ONLY = frozenset(("host", "content-length", "expect"))

Headers = CIMultiDictProxy[str] | CIMultiDict[str]


def strip_hop_by_hop(
    headers: Headers | Iterable[tuple[str, str]],
    drop: frozenset[str] = HOP_BY_HOP,
    keep: Callable[[str], bool] | None = None,
) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop headers and any of ``drop`` (lower-case),
    and, when ``keep`` is given, only those whose lower-cased name it keeps.

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
        if keep is not None and not keep(lower):
            continue
        kept.append((name, value))
    if connection:
        named = {token.strip().lower() for token in connection.split(",")}
        kept = [(name, value) for name, value in kept if name.lower() not in named]
    return CIMultiDict(kept)


@functools.cache
def _request_drop(keep_length: bool, forward_cookies: bool) -> frozenset[str]:
    """What never goes upstream, for one combination of the route's settings."""
    drop = HOP_BY_HOP | _REQUEST_ONLY
    if keep_length:
        drop -= {"content-length"}
    if not forward_cookies:
        drop |= {"cookie"}
    return drop


# What frames and describes a body: kept in the allow-list mode, or the body means nothing.
_REPRESENTATION = frozenset(("content-length", "content-type", "content-encoding"))


@functools.cache
def _request_keep(
    forward_client_address: bool, allowed: frozenset[str] | None
) -> Callable[[str], bool] | None:
    """Which client headers may go upstream (of those not dropped), by lower-cased name."""
    if allowed is None:
        return None if forward_client_address else _not_identifying
    allowed = allowed | _REPRESENTATION
    if forward_client_address:
        return allowed.__contains__
    return lambda lower: lower in allowed and not identifies_client(lower)


def _not_identifying(lower: str) -> bool:
    return not identifies_client(lower)


@functools.lru_cache(maxsize=64)
def allow_list(names: tuple[str, ...]) -> frozenset[str] | None:
    """An upstream's ``forward_headers`` as lower-cased names; ``None`` when it sets none."""
    return frozenset(name.lower() for name in names) if names else None


def upstream_request_headers(
    headers: Headers,
    *,
    keep_length: bool,
    forward_client_address: bool,
    forward_cookies: bool,
    allowed: frozenset[str] | None = None,
) -> CIMultiDict[str]:
    """The client's headers as they may go upstream, before plugins add their own.

    Never hop-by-hop headers; without ``forward_client_address``, none that
    `identifies_client`; with ``allowed`` (lower-case names: the allow-list mode),
    only those it names and the body's ``Content-*``.
    """
    drop = _request_drop(keep_length, forward_cookies)
    return strip_hop_by_hop(headers, drop, _request_keep(forward_client_address, allowed))


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
