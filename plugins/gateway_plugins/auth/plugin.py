"""``auth``: who the client is, and which credential goes upstream.

- ``passthrough`` (the default, as go-chatgpt-api): the client's own token goes
  upstream as ``Authorization: Bearer <token>`` (a bare token gets the prefix;
  ``X-Authorization`` is accepted too).  An expired ChatGPT access token (a JWT)
  is answered 401 here, without calling the upstream.
- ``keys``: the client presents a gateway key (made by ``gateway keygen``; the
  config stores only its SHA-256).  The key maps to an identity (name, team,
  allowed routes and models); the client's credential and the headers that
  would choose an upstream account are removed, and one credential from the
  upstream's pool is injected (`gateway_plugins.auth.credentials`).

A pool credential rests only on the upstream's word about the credential
itself (`gateway_plugins.auth.pool_failover`); when none is usable, the client gets the
upstream's own status and error, with ``Retry-After``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from gateway.api import (
    Exchange,
    Forbidden,
    Identity,
    NonNegativeInt,
    Plugin,
    PositiveSeconds,
    Seconds,
    Unauthorized,
    digests_match,
    key_digest,
)
from gateway_plugins.auth.credentials import Credential, CredentialPool
from gateway_plugins.auth.pool_failover import PoolFailover, RestRules
from gateway_plugins.jwt import jwt_expiry

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Methods whose body chooses what runs: a key restricted to some models must name one.
_MODEL_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Client headers that choose or authenticate an upstream account (OpenAI's, Azure's,
#: Anthropic's): in keys mode the server's credential speaks for the account.
ACCOUNT_HEADERS = ("OpenAI-Organization", "OpenAI-Project", "api-key", "X-Api-Key")


def bare_token(value: str) -> str:
    """The token of a header value, with any ``Bearer`` prefix removed ("" if none)."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip()
    return value


def client_token(ex: Exchange) -> str | None:
    """The token the client sent in ``Authorization`` or ``X-Authorization``, unprefixed.

    ``Bearer`` with nothing after it (what SDKs send for an empty key) is no token.
    """
    headers = ex.request.headers
    for name in ("Authorization", "X-Authorization"):
        token = bare_token(headers.get(name, ""))
        if token:
            return token
    return None


@attrs.frozen
class ClientKey:
    """``[plugins.auth.keys.<name>]``: one client key, by the hash of its secret."""

    sha256: str
    team: str | None = None
    #: Route names this key may use; empty: every route.
    routes: tuple[str, ...] = ()
    #: Values of the body's ``model`` this key may ask for; empty: any.
    models: tuple[str, ...] = ()


class Auth(Plugin):
    """Passes the client's credential upstream, or maps client keys to pooled credentials."""

    @attrs.frozen
    class Config:
        mode: Literal["passthrough", "keys"] = "passthrough"
        #: Passthrough: answer 401 when the client sent no credential (else the upstream decides).
        require_credential: bool = False
        #: Seconds of clock skew allowed when judging a JWT expired.
        leeway: NonNegativeInt = 0
        #: Keys mode: the client keys, by name.
        keys: Mapping[str, ClientKey] = attrs.field(factory=dict)
        #: Keys mode: each upstream's credential pool, by upstream name.
        credentials: Mapping[str, tuple[Credential, ...]] = attrs.field(factory=dict)
        #: Error codes (OpenAI's ``error.code`` or ``error.type``, ChatGPT's ``detail.code``)
        #: that say a credential is unusable: it is set aside for ``disable_for``.
        refusal_codes: tuple[str, ...] = (
            "invalid_api_key",
            "account_deactivated",
            "token_expired",
            "token_invalidated",
        )
        disable_for: PositiveSeconds = Seconds(3600.0)
        #: Error codes that say a credential's quota is spent: it rests for ``quota_rest``.
        quota_codes: tuple[str, ...] = ("insufficient_quota",)
        quota_rest: PositiveSeconds = Seconds(6 * 3600.0)
        #: How long a credential rate-limited (429) for a model cools when the upstream
        #: gives neither ``Retry-After`` nor ``x-ratelimit-reset-*``.
        cooldown: PositiveSeconds = Seconds(30.0)
        #: The longest an upstream's ``Retry-After`` (or reset time) may cool a credential.
        max_retry_after: PositiveSeconds = Seconds(3600.0)
        #: Keys mode: forward the client's ``OpenAI-Organization``, ``OpenAI-Project``,
        #: ``api-key`` and ``X-Api-Key`` (off: the credential chooses its account).
        #: A route that needs them sets it in ``[routes.<name>.plugins.auth]``.
        forward_account_headers: bool = False

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        for name, key in config.keys.items():
            if not _SHA256.fullmatch(key.sha256):
                raise ValueError(
                    f"keys.{name}.sha256: not a hex SHA-256 digest (use `gateway keygen`)"
                )
        for upstream, credentials in config.credentials.items():
            names = [c.name for c in credentials]
            if not names:
                raise ValueError(f"credentials.{upstream}: the pool has no credential")
            if len(set(names)) != len(names):
                raise ValueError(f"credentials.{upstream}: credential names must be unique")
        if config.mode == "keys" and not config.keys:
            raise ValueError("mode is 'keys' but no keys are configured")
        self.pools = {name: CredentialPool(creds) for name, creds in config.credentials.items()}
        rules = RestRules(
            config.refusal_codes,
            config.disable_for,
            config.quota_codes,
            config.quota_rest,
            config.cooldown,
            config.max_retry_after,
        )
        self.failover = PoolFailover(self.pools, rules)

    def identifies_clients(self) -> bool:
        """Keys mode: every request that passes has an identity."""
        return bool(self.config.mode == "keys")

    def status(self) -> Mapping[str, Any]:
        """Keys mode: each upstream's pooled credentials, usable, cooling or set aside."""
        if not self.pools:
            return {}
        return {"credentials": {name: pool.status() for name, pool in self.pools.items()}}

    def uses(self, hook: str) -> bool:
        if hook == "on_response":
            return bool(self.config.mode == "keys")
        return super().uses(hook)

    async def on_request(self, ex: Exchange) -> None:
        token = client_token(ex)
        ex.upstream_headers.popall("X-Authorization", None)
        if self.config.mode == "keys":
            ex.upstream_headers.popall("Authorization", None)
            await self.admit_key(ex, token)
            self.drop_account_headers(ex, token)
            await self.failover.inject(ex)
        else:
            self.pass_through(ex, token)

    async def on_response(self, ex: Exchange) -> None:
        await self.failover.on_response(ex)

    def pass_through(self, ex: Exchange, token: str | None) -> None:
        if token is None:
            ex.upstream_headers.popall("Authorization", None)
            if self.config.require_credential:
                raise Unauthorized("missing credential: send Authorization: Bearer <token>")
            return
        expiry = jwt_expiry(token)
        if expiry is not None and expiry + self.config.leeway < time.time():
            raise Unauthorized("the access token has expired: log in again")
        value = f"Bearer {token}"
        # Left alone when the client sent it so: a replaced value takes a new slot in the
        # header table, which grows and is kept as long as the answer streams (about
        # 0.4 KB per open stream, bench/streams.py hold_streams).
        if ex.upstream_headers.getall("Authorization", ()) != [value]:
            ex.upstream_headers["Authorization"] = value

    def identify(self, token: str) -> tuple[str, ClientKey] | None:
        """The key whose hash matches ``token``; every stored hash is compared, in constant time."""
        digest = key_digest(token)
        found = None
        for name, key in self.config.keys.items():
            if digests_match(digest, key.sha256):
                found = (name, key)
        return found

    async def admit_key(self, ex: Exchange, token: str | None) -> None:
        if token is None:
            raise Unauthorized("missing client key: send Authorization: Bearer <key>")
        found = self.identify(token)
        if found is None:
            raise Unauthorized("unknown client key")
        name, key = found
        identity = ex.identity = Identity(
            name=name,
            team=key.team,
            allowed_routes=frozenset(key.routes) or None,
            allowed_models=frozenset(key.models) or None,
        )
        await enforce(ex, identity)

    def drop_account_headers(self, ex: Exchange, key: str | None) -> None:
        """SECURITY: a client must not choose the server's account, nor send its key upstream.

        A foreign ``OpenAI-Organization`` makes OpenAI refuse the credential (401), and a
        refused credential is set aside: forwarded, it would let one client empty the pool.
        """
        headers = ex.upstream_headers
        if not self.config.forward_account_headers:
            # (The upstream's own configured headers are the operator's: they stay.)
            configured = {n.lower() for n in ex.upstream.headers} if ex.upstream else set()
            for name in ACCOUNT_HEADERS:
                if name.lower() not in configured:
                    headers.popall(name, None)
        if key:
            for name in {name for name, value in headers.items() if key in value}:
                headers.popall(name)


async def enforce(ex: Exchange, identity: Identity) -> None:
    """Refuse (403) a route or model the identity is not allowed."""
    name = identity.name
    if identity.allowed_routes is not None and ex.route_name not in identity.allowed_routes:
        raise Forbidden(f"client {name!r} may not use route {ex.route_name!r}")
    allowed = identity.allowed_models
    if allowed is not None:
        model = await requested_model(ex)
        if model is None and ex.method in _MODEL_METHODS:
            # SECURITY: no model (or ``null``) lets the upstream choose one (a default,
            # an assistant's): a restricted identity must name one of its own.
            raise Forbidden(
                f"client {name!r} may only use the models {', '.join(sorted(allowed))}: "
                "name one in the body's model"
            )
        if model is not None and model not in allowed:
            raise Forbidden(f"client {name!r} may not use model {model!r}")


async def requested_model(ex: Exchange) -> str | None:
    """The ``model`` a request body asks for (``None`` when it names none).

    SECURITY: a body that cannot be read as JSON cannot be checked, so a key
    restricted to some models may not send one (its JSON error answers 400).
    """
    if not ex.request.body_exists:
        return None
    body = await ex.json()
    model = body.get("model") if isinstance(body, dict) else None
    if model is not None and not isinstance(model, str):
        raise Forbidden("the body's model must be a string")
    return model
