"""The admin page's document: everything it shows, as JSON, built from the ledger and live state.

The page is this document rendered on the server (`page`), and the JSON API serves the
same document: the numbers a person reads and the ones a script reads are one.  Only
names are in it (keys, teams, credentials, routes), never a secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .charts import HourlySeries
from .reports import HourlyPoint, Totals
from .store import UsageStore
from .times import iso, start_of_day, start_of_month

HOUR, DAY = 3600, 86400
#: What an absent key or team is shown as.
NO_KEY, NO_TEAM = "(no key)", "(no team)"


@attrs.frozen
class LiveState:
    """What the gateway knows now, beside the ledger: handed in by the plugin.

    ``quotas`` are the rate-limit plugin's quota counters, each a mapping with at least
    ``rule``, ``key`` (``identity`` or ``team``), ``subject``, ``limit``, ``used`` and
    ``remaining``; ``statuses`` the running plugins' `status()`, by plugin name;
    ``routes`` each route with its pipeline, as ``gateway check`` prints them.
    """

    quotas: Sequence[Mapping[str, Any]] = ()
    statuses: Mapping[str, Mapping[str, Any]] = attrs.Factory(dict)
    routes: Sequence[Mapping[str, Any]] = ()


async def build_dashboard(
    store: UsageStore, live: LiveState, now: float, *, errors: int = 20
) -> dict[str, Any]:
    """The whole document, for the page and ``<path>/api/dashboard``."""
    today, month = start_of_day(now), start_of_month(now)
    end = now + 1
    keys_today = await store.totals("key", today, end)
    keys_month = await store.totals("key", month, end)
    teams_today = await store.totals("team", today, end)
    teams_month = await store.totals("team", month, end)
    key_teams = await store.key_teams(month, end)
    # Whole hours: the current hour is the last bar, and grows as the page refreshes.
    this_hour = int(now // HOUR) * HOUR
    day_points = await store.hourly(this_hour - 23 * HOUR, end)
    week_points = await store.hourly(this_hour - (7 * 24 - 1) * HOUR, end)
    return {
        "generated_at": iso(now),
        "overview": {
            "last_hour": attrs.asdict(await store.overview(now - HOUR, end)),
            "last_day": attrs.asdict(await store.overview(now - DAY, end)),
        },
        "keys": _usage_table(
            keys_today, keys_month, live.quotas, "identity", NO_KEY, extra=key_teams
        ),
        "teams": _usage_table(teams_today, teams_month, live.quotas, "team", NO_TEAM),
        "credentials": _named_states(live.statuses, "credentials"),
        "proxies": _named_states(live.statuses, "proxies"),
        "routes": [dict(route) for route in live.routes],
        "errors": [
            row.to_json() | {"time": iso(row.ts)} for row in await store.latest_errors(errors)
        ],
        "charts": {
            "day": _chart_data(day_points, this_hour, 24),
            "week": _chart_data(week_points, this_hour, 7 * 24),
        },
    }


def _usage_table(
    today: Sequence[Totals],
    month: Sequence[Totals],
    quotas: Sequence[Mapping[str, Any]],
    quota_key: str,
    absent: str,
    extra: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    by_today = {t.group: t for t in today}
    subjects: dict[str | None, None] = dict.fromkeys(t.group for t in month)
    for quota in quotas:
        if quota.get("key") == quota_key:
            subjects.setdefault(quota.get("subject"))
    table = []
    for subject in subjects:
        month_totals = next((t for t in month if t.group == subject), None)
        entry: dict[str, Any] = {
            "name": subject if subject is not None else absent,
            "today": _counts(by_today.get(subject)),
            "month": _counts(month_totals),
            "quotas": [
                dict(q) for q in quotas if q.get("key") == quota_key and q.get("subject") == subject
            ],
        }
        if extra is not None:
            team = extra.get(subject) if subject is not None else None
            entry["team"] = team if team is not None else NO_TEAM
        table.append(entry)
    return table


def _counts(totals: Totals | None) -> dict[str, int]:
    if totals is None:
        return {"requests": 0, "errors": 0, "tokens": 0}
    return {"requests": totals.requests, "errors": totals.errors, "tokens": totals.total_tokens}


def _named_states(statuses: Mapping[str, Mapping[str, Any]], section: str) -> list[dict[str, Any]]:
    """Every plugin's ``section`` (``credentials``, ``proxies``) as rows: plugin, upstream,
    name, state, until, reason.

    A section is ``{upstream: {name: entry}}`` (auth's pools), ``{name: entry}`` (the
    proxies) or a list of entries; an entry has a ``state`` and may have ``until``, ``why``
    (``{"status", "code"}``) and ``cooling`` (``{model: {"until", "why"}}``).
    """
    rows = []
    for plugin, status in statuses.items():
        found = status.get(section)
        if isinstance(found, Mapping):
            for key, value in found.items():
                if isinstance(value, Mapping) and "state" in value:
                    rows.append(_state_row(plugin, None, key, value))
                elif isinstance(value, Mapping):
                    rows.extend(_state_row(plugin, key, n, e) for n, e in value.items())
        elif isinstance(found, list | tuple):
            rows.extend(_state_row(plugin, e.get("upstream"), e.get("name"), e) for e in found)
    return rows


def _state_row(
    plugin: str, upstream: str | None, name: str | None, entry: Mapping[str, Any]
) -> dict[str, Any]:
    reasons = []
    if entry.get("why") or entry.get("reason"):
        reasons.append(_why(entry.get("why") or entry.get("reason")))
    for model, rest in (entry.get("cooling") or {}).items():
        reasons.append(f"{model}: cooling until {rest.get('until')} ({_why(rest.get('why'))})")
    return {
        "plugin": plugin,
        "upstream": upstream,
        "name": name,
        "state": entry.get("state"),
        "until": entry.get("until"),
        "reason": "; ".join(reasons) or None,
    }


def _why(why: Any) -> str:
    if isinstance(why, Mapping):
        return " ".join(str(why[k]) for k in ("status", "code") if why.get(k) is not None)
    return "" if why is None else str(why)


def _chart_data(points: Sequence[HourlyPoint], last_hour: int, hours: int) -> dict[str, Any]:
    first = last_hour - (hours - 1) * HOUR
    teams = sorted({p.team or NO_TEAM for p in points})
    requests = {team: [0] * hours for team in teams}
    tokens = {team: [0] * hours for team in teams}
    for point in points:
        slot = (point.hour - first) // HOUR
        if 0 <= slot < hours:
            team = point.team or NO_TEAM
            requests[team][slot] += point.requests
            tokens[team][slot] += point.tokens
    return {
        "hours": [first + i * HOUR for i in range(hours)],
        "requests": requests,
        "tokens": tokens,
    }


def chart_series(chart: Mapping[str, Any], measure: str) -> HourlySeries:
    """The `HourlySeries` of ``measure`` (``requests`` or ``tokens``) of one chart's data."""
    return HourlySeries(hours=chart["hours"], values=chart[measure])
