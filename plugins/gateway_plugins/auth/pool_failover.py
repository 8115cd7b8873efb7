"""Keys mode's credential pools at work: inject one, judge refusals, fail over.

A pool credential rests only on the upstream's word about the credential
itself, as Envoy's outlier detection ejects a host only for its own failures:

- an error code saying it is unusable (``invalid_api_key``, ``account_deactivated``,
  ChatGPT's ``token_expired``) sets it aside for ``disable_for``;
- ``insufficient_quota`` sets it aside for ``quota_rest``;
- any other 429 is a rate limit: the credential cools *for that model only*, for
  the upstream's ``Retry-After`` or ``x-ratelimit-reset-*`` (at most
  ``max_retry_after``; ``cooldown`` when it gives none).

The request is then sent again with the next usable credential, while no byte
has reached the client.  Any other 401/403/404 is about the request, not the
credential (a model the account may not use, a foreign organisation): it goes to
the client unchanged and the pool is left alone.  When nothing is usable, the
client gets the upstream's own status and error, always with ``Retry-After``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
from aiohttp import web

from gateway.api import (
    BadRequest,
    Exchange,
    GatewayError,
    ServiceUnavailable,
    UnsupportedMediaType,
    error_response,
    get_logger,
)
from gateway_plugins.auth.credentials import (
    Credential,
    CredentialPool,
    NoCredential,
    Refusal,
    read_refusal,
)
from gateway_plugins.retry_after import rate_limit_reset

logger = get_logger("gateway")

# The statuses that may speak about a credential, and how much of their body is read.
_JUDGED = frozenset({401, 403, 429})
_ERROR_BODY_LIMIT = 16 * 1024
# Bodies read to learn the model a request is for (larger ones are not held whole).
_MODEL_BODY_LIMIT = 256 * 1024


@attrs.frozen
class RestRules:
    """How long a credential rests for what the upstream said (from ``[plugins.auth]``)."""

    refusal_codes: tuple[str, ...]
    disable_for: float
    quota_codes: tuple[str, ...]
    quota_rest: float
    cooldown: float
    max_retry_after: float

    def judge(self, refusal: Refusal, headers: Mapping[str, str]) -> tuple[str, float, bool] | None:
        """Why the credential rests, for how many seconds, and whether for every model;
        ``None`` when the refusal says nothing about the credential."""
        codes = {refusal.code, refusal.type}
        if codes.intersection(self.refusal_codes):
            return "refused", self.disable_for, True
        if codes.intersection(self.quota_codes):
            return "out of quota", self.quota_rest, True
        if refusal.status == 429:
            reset = rate_limit_reset(headers, self.max_retry_after)
            return "rate-limited", self.cooldown if reset is None else reset, False
        return None


class PoolFailover:
    """Puts pooled credentials on requests and moves past those the upstream refuses."""

    def __init__(self, pools: Mapping[str, CredentialPool], rules: RestRules) -> None:
        self.pools = pools
        self.rules = rules

    async def inject(self, ex: Exchange) -> None:
        """Put a usable credential of the upstream's pool on the request (if it has a pool)."""
        pool = self.pools.get(ex.upstream.name) if ex.upstream is not None else None
        if pool is None:
            return
        model = await body_model(ex)
        try:
            credential = pool.choose(model)
        except NoCredential as exc:
            raise still_refused(ex, exc) from None
        ex.state["auth"] = {"model": model, "tried": {credential.name}}
        ex.credential = credential.name
        set_credential(ex, credential)

    async def on_response(self, ex: Exchange) -> None:
        """Judge a refusal; rest the credential and retry with the next when it was its fault."""
        state: dict[str, Any] | None = ex.state.get("auth")
        headers = ex.response_headers
        if state is None or ex.upstream is None or headers is None or ex.credential is None:
            return
        if ex.upstream_status not in _JUDGED:
            return
        pool = self.pools[ex.upstream.name]
        credential, model = pool.named(ex.credential), state["model"]
        refusal = read_refusal(ex.upstream_status, await ex.read_upstream_body(_ERROR_BODY_LIMIT))
        ex.error_code = refusal.code or refusal.type
        verdict = self.rules.judge(refusal, headers)
        if verdict is None:
            return  # about the request, not the credential: the client's own answer
        reason, seconds, every_model = verdict
        if every_model:
            pool.set_aside(credential, seconds, refusal)
        else:
            pool.cool(credential, model, seconds, refusal)
        logger.warning(
            "upstream credential set aside" if every_model else "upstream credential cooling",
            upstream=ex.upstream.name,
            credential=credential.name,
            model=None if every_model else model,
            status=ex.upstream_status,
            code=refusal.code or refusal.type,
            reason=reason,
            seconds=round(seconds, 1),
        )
        try:
            following = pool.choose(model, exclude=frozenset(state["tried"]))
        except NoCredential:
            # Nothing else to try: the upstream's own answer goes to the client, saying
            # when a credential will be usable again.
            wait = pool.unavailable(model).retry_after
            headers["Retry-After"] = retry_after_header(seconds if wait is None else wait)
            return
        if not ex.retry():
            raise ServiceUnavailable(
                f"upstream {ex.upstream.name!r} {reason} a credential and the request "
                "cannot be replayed: send it again",
                headers={"Retry-After": "1"},
            )
        state["tried"].add(following.name)
        ex.credential = following.name
        ex.credential_failovers += 1
        ex.error_code = None  # the next answer speaks for itself
        set_credential(ex, following, credential)


def set_credential(
    ex: Exchange, credential: Credential, previous: Credential | None = None
) -> None:
    """Put ``credential``'s headers on the request, in place of ``previous``'s."""
    if previous is not None:
        for name in previous.upstream_headers():
            ex.upstream_headers.popall(name, None)
    ex.upstream_headers.update(credential.upstream_headers())


def retry_after_header(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class StillRefused(GatewayError):
    """Every credential rests: the upstream's own refusal (status and error), repeated."""

    status = 503

    def __init__(self, refusal: Refusal, headers: dict[str, str]) -> None:
        super().__init__(refusal.message, headers=headers)
        self.refusal = refusal

    def response(self) -> web.Response:
        refusal = self.refusal
        code = refusal.code or "upstream_refused"
        return error_response(refusal.status, self.message, refusal.type, code, self.headers)


def still_refused(ex: Exchange, exc: NoCredential) -> GatewayError:
    """The answer while no credential is usable: the upstream's last word, and when to retry."""
    headers = {"Retry-After": retry_after_header(exc.retry_after or 1)}
    if exc.refusal is not None:
        ex.error_code = exc.refusal.code or "upstream_refused"
        return StillRefused(exc.refusal, headers)
    name = ex.upstream.name if ex.upstream is not None else "?"
    return ServiceUnavailable(
        f"no usable credential for upstream {name!r}: all are set aside or cooling down",
        headers=headers,
    )


async def body_model(ex: Exchange) -> str | None:
    """The ``model`` a small JSON body names, if any (credentials cool per model)."""
    request = ex.request
    if ex.body is None:
        length = request.content_length
        if not request.body_exists or length is None or length > _MODEL_BODY_LIMIT:
            return None
        if "json" not in request.headers.get("Content-Type", "application/json"):
            return None
    try:
        body = await ex.json()
    except (BadRequest, UnsupportedMediaType):
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None
