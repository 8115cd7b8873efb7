"""The transport's failures as the gateway's errors, mapped in this one place.

A timeout is `UpstreamTimeout` (504); a proxy that cannot be reached, times out
or refuses the tunnel `ProxyConnectError`; failed TLS `UpstreamTlsFailed`; a
refused connection or a broken answer `UpstreamError` (502); every connection
in use `UpstreamBusy` (503).  Proxy credentials never reach a message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import python_socks
from yarl import URL

from gateway.errors import GatewayError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from gateway.redaction import redact_url
from gateway.transport.failures import (
    SlotTimeout,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTlsError,
)
from gateway.transport.request_head import BadRequestHead

# A SOCKS proxy that refuses the credentials may just hang up (EOFError).
_PROXY_REFUSALS = (python_socks.ProxyError, EOFError)


class ProxyConnectError(UpstreamError):
    """The outbound proxy could not be reached, timed out, or refused the tunnel."""

    code = "proxy_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="proxy")


class UpstreamTlsFailed(UpstreamError):
    """TLS with the upstream failed (its certificate, its name, the handshake)."""

    code = "upstream_tls_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="tls")


class UpstreamBusy(ServiceUnavailable):
    """Every connection the upstream may have (``max_connections``) stayed in use."""

    code = "upstream_connections_exhausted"


@contextlib.contextmanager
def upstream_errors(target: str, proxy: str | None) -> Iterator[None]:
    """Turn the transport's failures into the gateway's; ``target`` names what was called."""
    where = redact_url(proxy) if proxy else "the proxy"
    try:
        yield
    except python_socks.ProxyTimeoutError as exc:
        raise ProxyConnectError(
            f"proxy timed out: {where} did not open a tunnel to {target} in time"
        ) from exc
    except python_socks.ProxyConnectionError as exc:
        raise ProxyConnectError(f"proxy unreachable: cannot connect to {where}") from exc
    except _PROXY_REFUSALS as exc:
        raise ProxyConnectError(proxy_refusal(exc, where, target, proxy)) from exc
    except SlotTimeout as exc:
        raise UpstreamBusy(
            f"{target} has all its connections ({exc.limit}, max_connections) in use: "
            "try again shortly",
            headers={"Retry-After": "1"},
        ) from None
    except UpstreamTlsError as exc:
        raise UpstreamTlsFailed(f"TLS with {target} failed: {exc.reason}") from exc
    except TimeoutError as exc:
        raise UpstreamTimeout(f"{target} did not answer in time", kind="timeout") from exc
    except UpstreamConnectError as exc:
        raise UpstreamError(f"cannot connect to {target}", kind="connect") from exc
    except BadRequestHead as exc:
        raise GatewayError(f"cannot send the request to {target}: {exc}") from None
    except (UpstreamProtocolError, OSError) as exc:
        # The client's own body may have failed (a stalled upload): its error, not ours.
        client_side = client_body_error(exc)
        if client_side is not None:
            raise client_side from None
        raise UpstreamError(f"{target} failed: {type(exc).__name__}", kind="failed") from exc


def client_body_error(exc: BaseException) -> GatewayError | None:
    """A `GatewayError` the request body raised while it was being sent, if any."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain is short; bound it anyway
        if seen is None:
            return None
        if isinstance(seen, GatewayError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def proxy_refusal(exc: BaseException, where: str, target: str, proxy: str | None) -> str:
    """What a proxy that answered, but opened no tunnel, meant by it."""
    code = getattr(exc, "error_code", None)
    text = str(exc).lower()
    # (python-socks wraps a proxy that hung up mid-handshake as IncompleteReadError.)
    hung_up = isinstance(exc, EOFError) or type(exc.__cause__).__name__ == "IncompleteReadError"
    with_credentials = proxy is not None and URL(proxy).user is not None
    if code == 407 or "authentication" in text or (hung_up and with_credentials):
        return f"proxy refused the credentials: {where}"
    reason = str(exc) or type(exc).__name__
    return f"proxy {where} could not open a tunnel to {target}: {reason}"
