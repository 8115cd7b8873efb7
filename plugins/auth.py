"""``auth``: who the client is, and which credential goes upstream.

- ``passthrough`` (the default, as go-chatgpt-api): the client's own token goes
  upstream as ``Authorization: Bearer <token>`` (a bare token gets the prefix;
  ``X-Authorization`` is accepted too).  An expired ChatGPT access token (a JWT)
  is answered 401 here, without calling the upstream.
- ``keys``: the client presents a gateway key (made by ``gateway keygen``; the
  config stores only its SHA-256).  The key maps to an identity (name, team,
  allowed routes and models); the client's credential is removed and one from
  the upstream's credential pool is injected.  A pool credential the upstream
  refuses (401/403) is set aside for ``disable_for``; one answered 429 cools
  down for its ``Retry-After``; the request is retried on the next credential
  while no byte has reached the client.  With none usable the answer is 503.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import structlog

from gateway.config import Seconds
from gateway.errors import Forbidden, ServiceUnavailable, Unauthorized
from gateway.keys import digests_match, key_digest
from gateway.plugin import Exchange, Identity, Plugin
from plugins.credentials import Credential, CredentialPool, NoCredential, retry_after_seconds
from plugins.jwt import jwt_expiry

logger = structlog.get_logger("gateway")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REFUSED = frozenset({401, 403})
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
        leeway: int = 0
        #: Keys mode: the client keys, by name.
        keys: Mapping[str, ClientKey] = attrs.field(factory=dict)
        #: Keys mode: each upstream's credential pool, by upstream name.
        credentials: Mapping[str, tuple[Credential, ...]] = attrs.field(factory=dict)
        #: How long a credential the upstream refused (401/403) is set aside.
        disable_for: Seconds = Seconds(3600.0)
        #: How long a credential answered 429 cools down when there is no ``Retry-After``.
        cooldown: Seconds = Seconds(30.0)
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
            if len(set(names)) != len(names):
                raise ValueError(f"credentials.{upstream}: credential names must be unique")
        if config.mode == "keys" and not config.keys:
            raise ValueError("mode is 'keys' but no keys are configured")
        self.pools = {name: CredentialPool(creds) for name, creds in config.credentials.items()}

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
            self.inject(ex)
        else:
            self.pass_through(ex, token)

    def pass_through(self, ex: Exchange, token: str | None) -> None:
        if token is None:
            ex.upstream_headers.popall("Authorization", None)
            if self.config.require_credential:
                raise Unauthorized("missing credential: send Authorization: Bearer <token>")
            return
        expiry = jwt_expiry(token)
        if expiry is not None and expiry + self.config.leeway < time.time():
            raise Unauthorized("the access token has expired: log in again")
        ex.upstream_headers["Authorization"] = f"Bearer {token}"

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
        ex.identity = Identity(
            name=name,
            team=key.team,
            allowed_routes=frozenset(key.routes) or None,
            allowed_models=frozenset(key.models) or None,
        )
        if key.routes and ex.route_name not in key.routes:
            raise Forbidden(f"client {name!r} may not use route {ex.route_name!r}")
        if key.models:
            model = await requested_model(ex)
            if model is not None and model not in key.models:
                raise Forbidden(f"client {name!r} may not use model {model!r}")

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

    def inject(self, ex: Exchange) -> None:
        """Put a credential from the upstream's pool on the request."""
        pool = self.pools.get(ex.upstream.name) if ex.upstream is not None else None
        if pool is None:
            return
        try:
            credential = pool.choose()
        except NoCredential as exc:
            raise unavailable(ex, exc) from None
        ex.state["auth"] = {
            "credential": credential.name,
            "failovers": 0,
            "tried": {credential.name},
        }
        set_credential(ex, credential)

    async def on_response(self, ex: Exchange) -> None:
        state: dict[str, Any] | None = ex.state.get("auth")
        if state is None or ex.upstream is None or ex.upstream_status not in (*_REFUSED, 429):
            return
        pool = self.pools[ex.upstream.name]
        credential = next(c for c in pool.credentials if c.name == state["credential"])
        if ex.upstream_status == 429:
            given = ex.response_headers.get("Retry-After") if ex.response_headers else None
            seconds, reason = retry_after_seconds(given, self.config.cooldown), "rate-limited"
        else:
            seconds, reason = self.config.disable_for, "refused"
        pool.set_aside(credential, seconds)
        logger.warning(
            "upstream credential set aside",
            upstream=ex.upstream.name,
            credential=credential.name,
            status=ex.upstream_status,
            reason=reason,
            seconds=round(seconds, 1),
        )
        try:
            following = pool.choose(exclude=frozenset(state["tried"]))
        except NoCredential as exc:
            raise unavailable(ex, exc) from None
        if not ex.retry():
            raise ServiceUnavailable(
                f"upstream {ex.upstream.name!r} {reason} a credential and the request "
                "cannot be replayed: send it again",
                headers={"Retry-After": "1"},
            )
        state["tried"].add(following.name)
        state["credential"] = following.name
        state["failovers"] += 1
        set_credential(ex, following, credential)


def set_credential(
    ex: Exchange, credential: Credential, previous: Credential | None = None
) -> None:
    """Put ``credential``'s headers on the request, in place of ``previous``'s."""
    if previous is not None:
        for name in previous.upstream_headers():
            ex.upstream_headers.popall(name, None)
    ex.upstream_headers.update(credential.upstream_headers())


def unavailable(ex: Exchange, exc: NoCredential) -> ServiceUnavailable:
    name = ex.upstream.name if ex.upstream is not None else "?"
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else {}
    return ServiceUnavailable(
        f"no usable credential for upstream {name!r}: all are set aside or cooling down",
        headers=headers,
    )


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
