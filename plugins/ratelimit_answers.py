"""What the ``ratelimit`` plugin tells clients: ``X-RateLimit-*`` headers and the 429.

With several rules on one request, the headers describe the most constraining
one: the rule with the least share of its limit left (the later reset on a
tie), so that a token quota and a request rate compare fairly.  A 429 names
the rule that refused (the one that would wait longest) and says when to retry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.errors import TooManyRequests
from plugins.ratelimit_store import Decision, Outcome

__all__ = ["limit_headers", "most_constraining", "rejection", "whole_seconds"]


def most_constraining(outcomes: Sequence[Outcome]) -> Outcome:
    """The rule with the least share of its limit left (the later reset on a tie)."""
    return min(outcomes, key=lambda o: (o.headroom, -o.reset))


def limit_headers(outcome: Outcome) -> dict[str, str]:
    """``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (whole seconds) of one rule."""
    reset = max(outcome.reset, outcome.retry_after)
    return {
        "X-RateLimit-Limit": str(outcome.rule.limit),
        "X-RateLimit-Remaining": str(outcome.remaining),
        "X-RateLimit-Reset": str(whole_seconds(reset)),
    }


def rejection(decision: Decision) -> tuple[Outcome, TooManyRequests]:
    """The refusing rule's outcome and the 429 naming it, with ``Retry-After`` (at least 1)."""
    hit = max((o for o in decision.outcomes if not o.allowed), key=lambda o: o.retry_after)
    rule = hit.rule
    retry = max(1, whole_seconds(hit.retry_after))
    headers = limit_headers(hit)
    headers["Retry-After"] = str(retry)
    error = TooManyRequests(
        f"rate limit exceeded: rule {rule.name!r} allows {rule.description}; retry in {retry} s",
        headers=headers,
    )
    return hit, error


def whole_seconds(seconds: float) -> int:
    """Seconds rounded up, forgiving float noise (``1800.0000002`` is 1800)."""
    return max(0, math.ceil(seconds - 0.001))
