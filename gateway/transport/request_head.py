"""Writing a request's line and headers, and choosing how its body is framed."""

from __future__ import annotations

from collections.abc import AsyncIterable

from multidict import CIMultiDict

_NO_BODY_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))


class BadRequestHead(ValueError):
    """A header name or value that would break the request head (CR, LF)."""


def request_head(
    method: str,
    target: str,
    host: str,
    headers: CIMultiDict[str],
    body: bytes | AsyncIterable[bytes] | None,
) -> tuple[bytes, bool]:
    """The request line and headers, and whether the body goes chunked.

    A body given whole is sent with its own ``Content-Length``; a streamed one
    keeps the client's, or goes chunked without one.
    """
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    if "Host" not in headers:
        lines.append(f"Host: {host}\r\n")
    chunked = False
    if isinstance(body, bytes) or (body is None and method not in _NO_BODY_METHODS):
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "content-length")
        lines.append(f"Content-Length: {len(body or b'')}\r\n")
    else:
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if body is not None and "Content-Length" not in headers:
            chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # SECURITY: a CR or LF inside a name or value would let it inject headers.
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise BadRequestHead("a request header contains a line break")
    return head.encode("utf-8", "surrogateescape"), chunked
