"""Upstream credential pools: rotation, set-aside on refusal, cool-down on 429.

A pool belongs to one upstream.  Credentials are used in rotation; one the
upstream refused (401/403) is set aside for ``disable_for``; one answered 429
cools down for the upstream's ``Retry-After``.  Only names are ever logged.
"""

from __future__ import annotations

import email.utils
import itertools
import time
from collections.abc import Callable, Mapping, Sequence

import attrs


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
    #: Sent as ``OpenAI-Organization`` and ``OpenAI-Project`` with this credential.
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
        if self.organization is not None:
            headers["OpenAI-Organization"] = self.organization
        if self.project is not None:
            headers["OpenAI-Project"] = self.project
        headers.update(self.headers)
        return headers


class NoCredential(Exception):
    """Every credential of the pool is set aside or cooling down."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("no usable credential")
        self.retry_after = retry_after


class CredentialPool:
    """The credentials of one upstream and when each may be used again."""

    def __init__(
        self,
        credentials: Sequence[Credential],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = tuple(credentials)
        self._usable_at = {c.name: 0.0 for c in self.credentials}
        self._turn = itertools.count()
        self._clock = clock

    def choose(self, exclude: frozenset[str] = frozenset()) -> Credential:
        """The next usable credential in rotation, skipping ``exclude`` (already tried)."""
        now = self._clock()
        start = next(self._turn)
        count = len(self.credentials)
        for offset in range(count):
            credential = self.credentials[(start + offset) % count]
            if credential.name not in exclude and self._usable_at[credential.name] <= now:
                return credential
        waits = [t - now for n, t in self._usable_at.items() if n not in exclude and t > now]
        raise NoCredential(min(waits) if waits else None)

    def set_aside(self, credential: Credential, seconds: float) -> None:
        """Do not use ``credential`` for ``seconds`` (refused, or rate-limited)."""
        until = self._clock() + seconds
        self._usable_at[credential.name] = max(self._usable_at[credential.name], until)

    def usable(self) -> int:
        """How many credentials may be used now."""
        now = self._clock()
        return sum(1 for t in self._usable_at.values() if t <= now)


def retry_after_seconds(value: str | None, default: float, now: float | None = None) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    wall = time.time() if now is None else now
    return max(0.0, moment.timestamp() - wall)
