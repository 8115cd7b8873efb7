"""The ledger's reports: what `gateway usage` prints and the admin page shows.

Each report is one SQL statement built for a `Dialect`, with its parameters, and a
small attrs class for its result rows.  Only the grouping column is interpolated into
the SQL, and only from `GROUPINGS`, never from user input.
"""

from __future__ import annotations

from typing import Any

import attrs

from .schema import TABLE, Dialect

#: What totals may be grouped by, and the SQL expression of each (``day`` is dialect's).
GROUPINGS = ("key", "team", "model", "route", "day", "credential", "upstream")
_GROUP_COLUMNS = {
    "key": "key_name",
    "team": "team",
    "model": "model",
    "route": "route",
    "credential": "credential",
    "upstream": "upstream",
}


@attrs.frozen
class Totals:
    """Sums over the rows of one group (a key, a team, a day, ...)."""

    group: str | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    #: Requests whose tokens the gateway estimated (the upstream reported none).
    estimated: int
    bytes_in: int
    bytes_out: int
    avg_duration_ms: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        """The totals as a JSON-able mapping, ``total_tokens`` included."""
        return {**attrs.asdict(self), "total_tokens": self.total_tokens}


@attrs.frozen
class HourlyPoint:
    """Requests and tokens of one team in one hour (``hour`` in epoch seconds)."""

    hour: int
    team: str | None
    requests: int
    tokens: int


@attrs.frozen
class Overview:
    """Requests, errors and latency over a period."""

    requests: int
    errors: int
    avg_duration_ms: float
    p95_duration_ms: float
    avg_ttfb_ms: float


def group_expression(dialect: Dialect, by: str) -> str:
    """The SQL expression rows are grouped by for ``by`` (one of `GROUPINGS`)."""
    if by == "day":
        return dialect.day_of_ts
    try:
        return _GROUP_COLUMNS[by]
    except KeyError:
        raise ValueError(f"cannot group by {by!r}: choose one of {', '.join(GROUPINGS)}") from None


def totals_query(dialect: Dialect, by: str, since: float, until: float) -> tuple[str, list[Any]]:
    """Totals per group of ``by`` for ``since <= ts < until``, the busiest group first."""
    group = group_expression(dialect, by)
    p1, p2 = dialect.placeholder(1), dialect.placeholder(2)
    order = "grp" if by == "day" else "requests DESC, grp"
    sql = f"""
        SELECT {group} AS grp,
               COUNT(*) AS requests,
               SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,
               SUM(prompt_tokens) AS prompt_tokens,
               SUM(completion_tokens) AS completion_tokens,
               SUM(CASE WHEN tokens_estimated THEN 1 ELSE 0 END) AS estimated,
               SUM(bytes_in) AS bytes_in,
               SUM(bytes_out) AS bytes_out,
               AVG(duration_ms) AS avg_duration_ms
        FROM {TABLE}
        WHERE ts >= {p1} AND ts < {p2}
        GROUP BY grp
        ORDER BY {order}
    """
    return sql, [since, until]


def totals_from(record: Any) -> Totals:
    """A `Totals` from one record of `totals_query`."""
    return Totals(
        group=None if record["grp"] is None else str(record["grp"]),
        requests=int(record["requests"]),
        errors=int(record["errors"] or 0),
        prompt_tokens=int(record["prompt_tokens"] or 0),
        completion_tokens=int(record["completion_tokens"] or 0),
        estimated=int(record["estimated"] or 0),
        bytes_in=int(record["bytes_in"] or 0),
        bytes_out=int(record["bytes_out"] or 0),
        avg_duration_ms=round(float(record["avg_duration_ms"] or 0.0), 1),
    )


def key_teams_query(dialect: Dialect, since: float, until: float) -> tuple[str, list[Any]]:
    """Each key's team (the latest one, should it have changed) for ``since <= ts < until``."""
    p1, p2 = dialect.placeholder(1), dialect.placeholder(2)
    sql = f"""
        SELECT r.key_name AS key_name, MAX(r.team) AS team
        FROM {TABLE} AS r
        JOIN (SELECT key_name, MAX(ts) AS last FROM {TABLE}
              WHERE ts >= {p1} AND ts < {p2} AND key_name IS NOT NULL
              GROUP BY key_name) AS latest
          ON r.key_name = latest.key_name AND r.ts = latest.last
        GROUP BY r.key_name
    """
    return sql, [since, until]


def hourly_query(dialect: Dialect, since: float, until: float) -> tuple[str, list[Any]]:
    """Requests and tokens per hour and team for ``since <= ts < until``."""
    hour = dialect.hour_of_ts
    p1, p2 = dialect.placeholder(1), dialect.placeholder(2)
    sql = f"""
        SELECT {hour} AS hour, team, COUNT(*) AS requests,
               SUM(prompt_tokens + completion_tokens) AS tokens
        FROM {TABLE}
        WHERE ts >= {p1} AND ts < {p2}
        GROUP BY hour, team
        ORDER BY hour, team
    """
    return sql, [since, until]


def hourly_from(record: Any) -> HourlyPoint:
    """An `HourlyPoint` from one record of `hourly_query`."""
    return HourlyPoint(
        hour=int(record["hour"]),
        team=record["team"],
        requests=int(record["requests"]),
        tokens=int(record["tokens"] or 0),
    )


def overview_query(dialect: Dialect, since: float, until: float) -> tuple[str, list[Any]]:
    """Counts and mean latencies for ``since <= ts < until``."""
    p1, p2 = dialect.placeholder(1), dialect.placeholder(2)
    sql = f"""
        SELECT COUNT(*) AS requests,
               SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors,
               AVG(duration_ms) AS avg_duration_ms,
               AVG(ttfb_ms) AS avg_ttfb_ms
        FROM {TABLE}
        WHERE ts >= {p1} AND ts < {p2}
    """
    return sql, [since, until]


def percentile_query(
    dialect: Dialect, since: float, until: float, rank: int
) -> tuple[str, list[Any]]:
    """The ``rank``-th longest duration (from 0) for ``since <= ts < until``.

    Portable across both databases, unlike ``percentile_cont``: the caller turns a
    percentile into a rank from the count.
    """
    p1, p2, p3 = (dialect.placeholder(i) for i in (1, 2, 3))
    sql = f"""
        SELECT duration_ms FROM {TABLE}
        WHERE ts >= {p1} AND ts < {p2}
        ORDER BY duration_ms DESC
        LIMIT 1 OFFSET {p3}
    """
    return sql, [since, until, rank]


def latest_errors_query(dialect: Dialect, limit: int) -> tuple[str, list[Any]]:
    """The ``limit`` most recent rows that answered an error status."""
    p1 = dialect.placeholder(1)
    sql = f"SELECT * FROM {TABLE} WHERE status >= 400 ORDER BY ts DESC, id DESC LIMIT {p1}"
    return sql, [limit]


def rows_query(dialect: Dialect, since: float, until: float) -> tuple[str, list[Any]]:
    """Every row for ``since <= ts < until``, oldest first."""
    p1, p2 = dialect.placeholder(1), dialect.placeholder(2)
    sql = f"SELECT * FROM {TABLE} WHERE ts >= {p1} AND ts < {p2} ORDER BY ts, id"
    return sql, [since, until]


def retention_query(dialect: Dialect, before: float) -> tuple[str, list[Any]]:
    """The statement that deletes the rows older than ``before``."""
    return f"DELETE FROM {TABLE} WHERE ts < {dialect.placeholder(1)}", [before]
