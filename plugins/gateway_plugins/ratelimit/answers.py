"""What the ``ratelimit`` plugin tells clients: ``X-RateLimit-*`` headers and the 429.

With several rules on one request, the headers of an admitted request describe
the first of them in the config's order, always the same one for the same
route: a client that watches ``X-RateLimit-Remaining`` must not see it jump
between rules from one request to the next (so list the rule clients should
watch first).  A 429 describes, and names, the rule that refused (the one that
would wait longest), whose ``Retry-After`` it carries.
"""

from __future__ import annotations

import math

from gateway.api import TooManyRequests
from gateway_plugins.ratelimit.store import Decision, Outcome

__all__ = ["limit_headers", "rejection", "whole_seconds"]


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
