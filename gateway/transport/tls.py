"""TLS towards an upstream: the context its settings (`gateway.config.TlsConfig`) make,
and what a failed handshake means, in words."""

from __future__ import annotations

import ssl
from typing import Protocol


class TlsSettings(Protocol):
    """What TLS towards an upstream is made of (`gateway.config.TlsConfig` is one)."""

    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...
    @property
    def verify(self) -> bool: ...


# OpenSSL's verification results (X509_V_ERR_*) that a reader can act on.
_NOT_TRUSTED = frozenset({2, 18, 19, 20, 21})
_EXPIRED, _NOT_YET_VALID = 10, 9
_NAME_MISMATCH = frozenset({62, 64})  # a host name, an IP address


def describe_tls_error(exc: ssl.SSLError, host: str) -> str:
    """What failed in a TLS handshake, in words: not trusted, hostname mismatch, expired..."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, detail = exc.verify_code, exc.verify_message
        if code in _NAME_MISMATCH:
            return f"hostname mismatch: the certificate is not valid for {host!r}"
        if code == _EXPIRED:
            return "certificate expired"
        if code == _NOT_YET_VALID:
            return "certificate not yet valid"
        if code in _NOT_TRUSTED:
            return f"certificate not trusted ({detail})"
        return f"certificate refused ({detail})"
    reason = exc.reason or type(exc).__name__
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        return f"the upstream refused the gateway's client certificate ({reason})"
    if reason == "WRONG_VERSION_NUMBER":
        return "the upstream does not speak TLS on that port"
    return f"handshake failed ({reason})"


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client context: the system's CAs or ``ca_file``, a client certificate if given.

    Raises `ValueError` naming the setting when a file cannot be used.
    """
    if tls.key_file is not None and tls.cert_file is None:
        raise ValueError("key_file is set but cert_file is not")
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ca_file: cannot use {tls.ca_file!r}: {_why(exc)}") from None
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cert_file/key_file: cannot use {tls.cert_file!r}: {_why(exc)}"
            ) from None
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    """An OpenSSL or file error in a few words."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or type(exc).__name__
