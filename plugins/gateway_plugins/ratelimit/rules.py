"""The ``ratelimit`` plugin's rules: checked once, then asked whose counter a request charges.

A rule is one ``[[plugins.ratelimit.rules]]`` table (`RuleConfig`) holding
exactly one kind of limit (``rate``, ``concurrency``, ``requests`` or
``tokens``); `Rule.of` checks it once at load time and `Rule.subject` says, per
request, whose counter it is.

The calendar windows of quotas (UTC days and months) are computed here too; the
Redis store computes the same windows in Lua from the server's clock.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Literal

import attrs

from gateway.api import Exchange, parse_duration
from gateway_plugins.ratelimit.config import KeyKind, Period, RuleConfig

__all__ = ["Rule", "calendar_window"]

RuleKind = Literal["rate", "concurrency", "requests", "tokens"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+?)\s*$")
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_KINDS: tuple[RuleKind, ...] = ("rate", "concurrency", "requests", "tokens")


@attrs.frozen
class Rule:
    """A checked rule, ready to apply."""

    name: str
    kind: RuleKind
    key: KeyKind
    #: The bucket size of a rate, the slots of a concurrency rule, or a quota.
    limit: int
    #: ``rate`` only: the seconds between two requests at the sustained rate.
    interval: float = 0.0
    period: Period | None = None
    routes: frozenset[str] | None = None
    #: What the limit is, in words, for the 429 message.
    description: str = ""

    @classmethod
    def of(cls, config: RuleConfig, index: int) -> Rule:
        """Check one rule table; a `ValueError` names the rule and the problem."""
        where = f"rules[{index}] ({config.name!r})"
        if not _NAME.fullmatch(config.name):
            raise ValueError(f"{where}: name must be 1-64 letters, digits, '_', '.' or '-'")
        kinds = [k for k in _KINDS if getattr(config, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise ValueError(
                f"{where}: set exactly one of rate, concurrency, requests, tokens (found: {found})"
            )
        kind = kinds[0]
        if config.burst is not None and kind != "rate":
            raise ValueError(f"{where}: burst goes with rate only")
        if (config.period is not None) != (kind in ("requests", "tokens")):
            raise ValueError(f"{where}: period (day or month) goes with requests and tokens only")
        if config.routes is not None and not config.routes:
            raise ValueError(f"{where}: routes is empty; leave it out to apply to every route")
        routes = frozenset(config.routes) if config.routes is not None else None
        if kind == "rate":
            assert config.rate is not None
            count, seconds, words = _parse_rate(config.rate, where)
            burst = 1 if config.burst is None else config.burst
            return cls(
                name=config.name,
                kind=kind,
                key=config.key,
                limit=burst,
                interval=seconds / count,
                routes=routes,
                description=f"{count} requests per {words}, burst {burst}",
            )
        limit: int = getattr(config, kind)
        if kind == "concurrency":
            description = f"{limit} open requests at once"
        else:
            description = f"{limit} {kind} per {config.period} (UTC)"
        return cls(
            name=config.name,
            kind=kind,
            key=config.key,
            limit=limit,
            period=config.period,
            routes=routes,
            description=description,
        )

    def applies_to(self, ex: Exchange) -> bool:
        """Whether the rule covers this request's route."""
        return self.routes is None or ex.route_name in self.routes

    def subject(self, ex: Exchange) -> str:
        """Whose counter the request charges: ``identity:<name>``, ``team:<t>`` or ``ip:<a>``.

        With no identity (``auth`` in passthrough mode) identity and team rules
        fall back to the client's address; a team rule on an identity with no team
        counts that identity alone.
        """
        identity = ex.identity
        if self.key == "client_ip" or identity is None:
            return f"ip:{ex.client_ip}"
        if self.key == "team" and identity.team:
            return f"team:{identity.team}"
        return f"identity:{identity.name}"


def _parse_rate(text: str, where: str) -> tuple[int, float, str]:
    """``"60/m"`` → (60, 60.0, "minute"); ``"100/30s"`` → (100, 30.0, "30s")."""
    match = _RATE.match(text)
    problem = f'{where}: rate {text!r} is not "<count>/<unit>", e.g. "60/m" or "10/s"'
    if match is None:
        raise ValueError(problem)
    count = int(match.group(1))
    unit = match.group(2)
    if unit in _RATE_UNITS:
        seconds, words = _RATE_UNITS[unit], _UNIT_WORDS[unit]
    else:
        try:
            seconds, words = parse_duration(unit), unit
        except ValueError:
            raise ValueError(problem) from None
    if count <= 0 or seconds <= 0:
        raise ValueError(f"{where}: rate {text!r} must be positive")
    return count, seconds, words


def calendar_window(period: Period, now: float) -> tuple[str, float]:
    """The UTC calendar window holding ``now``: its name and when it ends (epoch seconds).

    Names are ``d20240131`` for a day and ``m202401`` for a month, the same as
    the Redis store's Lua computes.
    """
    day = dt.datetime.fromtimestamp(math.floor(now), dt.UTC).date()
    if period == "day":
        end = day + dt.timedelta(days=1)
        name = f"d{day.year:04d}{day.month:02d}{day.day:02d}"
    else:
        end = dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
        name = f"m{day.year:04d}{day.month:02d}"
    midnight = dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)
    return name, midnight.timestamp()
