"""`QuotaBoard`: what each quota counter has left, for `RateLimit.status` and the admin page.

Every decision already says, for each quota it checked, how much is left after it
(`Outcome.remaining`); the board keeps the latest of these per counter, and corrects a
token quota when its reservation is settled.  It costs no store call, and reads the same
for both stores: exact for the in-process store, and for Redis as of the last request
this process decided for that counter (other replicas' requests show at its next one).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

import attrs

from gateway_plugins.ratelimit.rules import Rule, calendar_window
from gateway_plugins.ratelimit.store import Check, Decision, TokenCharge

#: Counters kept at most (the least recently decided go first): bounded by the number of
#: keys and teams in keys mode, but client addresses in passthrough mode are many.
MAX_COUNTERS = 10_000
_KEY_KINDS = {"identity": "identity", "team": "team", "ip": "client_ip"}


@attrs.define
class _Counter:
    rule: Rule
    subject: str
    window: str
    #: Requests or tokens used in the window, reservations of running requests included.
    used: int


class QuotaBoard:
    """The latest known use of every ``requests`` and ``tokens`` quota counter."""

    def __init__(self, max_counters: int = MAX_COUNTERS) -> None:
        self.max_counters = max_counters
        self._counters: dict[str, _Counter] = {}

    def note(self, checks: Sequence[Check], decision: Decision) -> None:
        """Learn from one decision what each quota it checked has left."""
        for check, outcome in zip(checks, decision.outcomes, strict=True):
            rule = check.rule
            if rule.period is None:
                continue
            # remaining = limit - (used after the decision, reservations included).
            used = max(rule.limit - outcome.remaining, 0)
            _, _, subject = check.key.partition(":")
            self._counters.pop(check.key, None)  # re-inserted last: the most recent
            self._counters[check.key] = _Counter(rule, subject, outcome.window, used)
        while len(self._counters) > self.max_counters:
            del self._counters[next(iter(self._counters))]

    def settle(self, charges: Sequence[TokenCharge]) -> None:
        """Replace settled reservations by the tokens used, as the store did."""
        for charge in charges:
            counter = self._counters.get(charge.check.key)
            if counter is not None and counter.window == charge.window:
                counter.used = max(counter.used - charge.check.cost + charge.used, 0)

    def entries(self, now: float | None = None) -> list[dict[str, Any]]:
        """Each counter as JSON: rule, key kind, subject, limit, used, remaining, reset."""
        now = time.time() if now is None else now
        found = []
        for counter in self._counters.values():
            rule = counter.rule
            assert rule.period is not None
            window, ends = calendar_window(rule.period, now)
            used = counter.used if counter.window == window else 0  # a new day or month
            kind, _, name = counter.subject.partition(":")
            found.append(
                {
                    "rule": rule.name,
                    "key": _KEY_KINDS.get(kind, kind),
                    "subject": name,
                    "unit": rule.kind,
                    "period": rule.period,
                    "limit": rule.limit,
                    "used": min(used, rule.limit),
                    "remaining": max(rule.limit - used, 0),
                    "resets_at": dt.datetime.fromtimestamp(ends, dt.UTC).isoformat(),
                }
            )
        return sorted(found, key=lambda e: (e["key"], e["subject"], e["rule"]))


class SharedBoards:
    """One board per key prefix (the counters' namespace), shared by the plugin's instances
    and dropped with the last of them, as the in-process stores are."""

    def __init__(self) -> None:
        self._boards: dict[str, tuple[QuotaBoard, int]] = {}

    def open(self, prefix: str) -> QuotaBoard:
        """The board of ``prefix`` (made on first use); pair each call with `close`."""
        board, users = self._boards.get(prefix, (QuotaBoard(), 0))
        self._boards[prefix] = (board, users + 1)
        return board

    def close(self, prefix: str) -> None:
        """One user fewer; the board is dropped with its last user."""
        board, users = self._boards[prefix]
        if users <= 1:
            del self._boards[prefix]
        else:
            self._boards[prefix] = (board, users - 1)


#: The boards of this process.
BOARDS = SharedBoards()
