"""Upstream credential pools: rotation, and rests on the upstream's word.

A pool belongs to one upstream, and works as Envoy's outlier detection does for
hosts: credentials are used in rotation, and one the upstream speaks against
rests for a while.  Two kinds of rest:

- *set aside*: the upstream said the credential itself is unusable (an invalid
  key, a deactivated account, no quota left): no request uses it;
- *cooling*: the upstream rate-limited the credential for one model: only the
  requests for that model skip it.

Each rest keeps the upstream's refusal (its status and error), which is what a
client gets while no credential is usable.  Only names are ever logged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from gateway.api import json_loads

# The longest upstream error message a refusal keeps.
_MESSAGE_SIZE = 1000
# Cooling entries are per credential and model, and models are the clients' words:
# past this many, expired entries are dropped, then those that end soonest.
MAX_COOLING = 1024


@attrs.frozen
class Credential:
    """One upstream credential: a name to log and a secret never logged.

    It may carry the account it acts for (OpenAI's organisation and project) and
    other headers of its own: they go upstream with it, and only with it.
    """

    name: str
    token: str = attrs.field(repr=False)
    #: The header that carries it, and the scheme put before the token ("" for none).
    header: str = "Authorization"
    scheme: str = "Bearer"
    #: Sent as ``OpenAI-Organization`` and ``OpenAI-Project`` with this credential
    #: (empty: not sent, so that ``"${OPENAI_ORG_ID:-}"`` may be unset).
    organization: str | None = None
    project: str | None = None
    #: Further headers sent with this credential.
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        for name, value in self.upstream_headers().items():
            if any(c in name + value for c in "\r\n\0"):
                raise ValueError(f"credential {self.name!r}: line breaks are not allowed")

    def header_value(self) -> str:
        return f"{self.scheme} {self.token}" if self.scheme else self.token

    def upstream_headers(self) -> dict[str, str]:
        """Every header this credential puts on a request."""
        headers = {self.header: self.header_value()}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        headers.update(self.headers)
        return headers


@attrs.frozen
class Refusal:
    """What the upstream said when it refused a credential: its status and its error."""

    status: int
    message: str
    type: str = "upstream_error"
    code: str = ""


def read_refusal(status: int, body: bytes | None) -> Refusal:
    """The refusal in an upstream's error body: OpenAI's ``{"error": {...}}`` or
    ChatGPT's ``{"detail": {...}}`` (or ``{"detail": "..."}``); else the status alone."""
    try:
        parsed: Any = json_loads(body) if body else None
    except ValueError:
        parsed = None
    error = parsed.get("error", parsed.get("detail")) if isinstance(parsed, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return Refusal(status, f"the upstream answered {status}")
    message, kind, code = (error.get(k) for k in ("message", "type", "code"))
    return Refusal(
        status,
        message[:_MESSAGE_SIZE] if isinstance(message, str) else f"the upstream answered {status}",
        kind if isinstance(kind, str) and kind else "upstream_error",
        code if isinstance(code, str) else "",
    )


@attrs.frozen
class Rest:
    """A credential may not be used until ``until`` (the pool's clock), for ``refusal``."""

    until: float
    refusal: Refusal | None = None


class NoCredential(Exception):
    """No credential of the pool may be used now.

    ``retry_after``: seconds until one may (``None``: every one was tried);
    ``refusal``: what the upstream said about the one that rests the shortest.
    """

    def __init__(self, retry_after: float | None, refusal: Refusal | None = None) -> None:
        super().__init__("no usable credential")
        self.retry_after = retry_after
        self.refusal = refusal


_READY = Rest(0.0)


class CredentialPool:
    """The credentials of one upstream, and the rests the upstream gave them."""

    def __init__(
        self,
        credentials: Sequence[Credential],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = tuple(credentials)
        self._by_name = {c.name: c for c in self.credentials}
        self._aside: dict[str, Rest] = {}
        self._cooling: dict[tuple[str, str | None], Rest] = {}
        self._turn = itertools.count()
        self._clock = clock

    def named(self, name: str) -> Credential:
        """The credential called ``name``."""
        return self._by_name[name]

    def rest(self, credential: Credential, model: str | None) -> Rest:
        """The longer of ``credential``'s rests that hold for ``model``."""
        aside = self._aside.get(credential.name, _READY)
        cooling = self._cooling.get((credential.name, model), _READY)
        return aside if aside.until >= cooling.until else cooling

    def choose(self, model: str | None = None, exclude: frozenset[str] = frozenset()) -> Credential:
        """The next credential in rotation usable for ``model``, skipping ``exclude`` (tried)."""
        now = self._clock()
        start = next(self._turn)
        count = len(self.credentials)
        for offset in range(count):
            credential = self.credentials[(start + offset) % count]
            if credential.name not in exclude and self.rest(credential, model).until <= now:
                return credential
        raise self.unavailable(model, exclude)

    def unavailable(self, model: str | None, exclude: frozenset[str] = frozenset()) -> NoCredential:
        """Why no credential is usable for ``model``: the shortest rest of those not excluded."""
        now = self._clock()
        rests = [self.rest(c, model) for c in self.credentials if c.name not in exclude]
        resting = [r for r in rests if r.until > now]
        if not resting:
            return NoCredential(None)
        first = min(resting, key=lambda r: r.until)
        return NoCredential(first.until - now, first.refusal)

    def set_aside(
        self, credential: Credential, seconds: float, refusal: Refusal | None = None
    ) -> None:
        """Use ``credential`` for nothing for ``seconds`` (the upstream refused it)."""
        until = self._clock() + seconds
        if until > self._aside.get(credential.name, _READY).until:
            self._aside[credential.name] = Rest(until, refusal)

    def cool(
        self,
        credential: Credential,
        model: str | None,
        seconds: float,
        refusal: Refusal | None = None,
    ) -> None:
        """Use ``credential`` for no request for ``model`` for ``seconds`` (rate-limited)."""
        now = self._clock()
        key = (credential.name, model)
        if now + seconds > self._cooling.get(key, _READY).until:
            self._cooling[key] = Rest(now + seconds, refusal)
        if len(self._cooling) > MAX_COOLING:
            self._forget_cooling(now)

    def _forget_cooling(self, now: float) -> None:
        """Keep the cooling table bounded: drop what has ended, then what ends soonest."""
        self._cooling = {k: r for k, r in self._cooling.items() if r.until > now}
        while len(self._cooling) > MAX_COOLING:
            del self._cooling[min(self._cooling, key=lambda k: self._cooling[k].until)]

    def usable(self, model: str | None = None) -> int:
        """How many credentials may be used now for ``model``."""
        now = self._clock()
        return sum(1 for c in self.credentials if self.rest(c, model).until <= now)

    def status(self) -> dict[str, dict[str, Any]]:
        """Each credential's state, by name: ``usable``, ``cooling`` (for some models) or
        ``set aside``; until when (UTC, ISO 8601) and why (the upstream's status and code).

        Names, times and error codes only: never a token, nor the upstream's message
        (it may quote part of a key).
        """
        now, wall = self._clock(), time.time()
        report: dict[str, dict[str, Any]] = {}
        for credential in self.credentials:
            entry: dict[str, Any] = {"state": "usable"}
            aside = self._aside.get(credential.name)
            cooling = {
                model: rest
                for (name, model), rest in self._cooling.items()
                if name == credential.name and rest.until > now
            }
            if aside is not None and aside.until > now:
                entry = {"state": "set aside", **_rest_report(aside, now, wall)}
            elif cooling:
                entry["state"] = "cooling"
            if cooling:
                entry["cooling"] = {
                    str(model): _rest_report(rest, now, wall) for model, rest in cooling.items()
                }
            report[credential.name] = entry
        return report


def _rest_report(rest: Rest, now: float, wall: float) -> dict[str, Any]:
    """When a rest ends (UTC) and why, as an admin page shows it."""
    until = datetime.fromtimestamp(wall + rest.until - now, UTC).isoformat(timespec="seconds")
    refusal = rest.refusal
    why = (
        None
        if refusal is None
        else {"status": refusal.status, "code": refusal.code or refusal.type}
    )
    return {"until": until, "why": why}
