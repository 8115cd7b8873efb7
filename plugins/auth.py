"""``auth``: the client's credential, checked and passed on.

In ``passthrough`` mode (the default, as go-chatgpt-api) the client's own
token goes upstream: ``Authorization: Bearer <token>`` (a bare token gets the
prefix; ``X-Authorization`` is accepted too).  A ChatGPT access token (a JWT)
that has expired is answered 401 here, without calling the upstream.
"""

from __future__ import annotations

import time
from typing import Literal

import attrs

from gateway.errors import Unauthorized
from gateway.plugin import Exchange, Plugin
from plugins.jwt import jwt_expiry


def bearer(value: str) -> str:
    """``value`` as a bearer credential (the prefix added when it is missing)."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    return value if scheme.lower() == "bearer" and rest else f"Bearer {value}"


def client_token(ex: Exchange) -> str | None:
    """The token the client sent in ``Authorization`` or ``X-Authorization``, unprefixed."""
    headers = ex.request.headers
    value = headers.get("Authorization") or headers.get("X-Authorization")
    if not value or not value.strip():
        return None
    return bearer(value)[len("Bearer ") :].strip()


class Auth(Plugin):
    """Passes the client's credential upstream (adding ``Bearer ``), refusing expired JWTs."""

    @attrs.frozen
    class Config:
        mode: Literal["passthrough"] = "passthrough"
        #: Answer 401 when the client sent no credential at all (else the upstream decides).
        require_credential: bool = False
        #: Seconds of clock skew allowed when judging a JWT expired.
        leeway: int = 0

    async def on_request(self, ex: Exchange) -> None:
        token = client_token(ex)
        ex.upstream_headers.popall("X-Authorization", None)
        if token is None:
            ex.upstream_headers.popall("Authorization", None)
            if self.config.require_credential:
                raise Unauthorized("missing credential: send Authorization: Bearer <token>")
            return
        expiry = jwt_expiry(token)
        if expiry is not None and expiry + self.config.leeway < time.time():
            raise Unauthorized("the access token has expired: log in again")
        ex.upstream_headers["Authorization"] = f"Bearer {token}"
