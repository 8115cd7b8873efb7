"""`gateway usage`: the ledger's totals by key, team, model, route or day; table, CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from .reports import Totals
from .store import open_store

#: The columns of a report after the group's own, in order.
FIELDS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated",
    "avg_duration_ms",
    "bytes_in",
    "bytes_out",
)
_RELATIVE = re.compile(r"(\d+)([dh])")


def parse_time(text: str, now: float | None = None) -> float:
    """A point in time from the command line, in epoch seconds.

    Accepts a date (``2026-11-01``, midnight UTC), a date and time in ISO 8601 (UTC
    unless it names an offset), ``today``, or a span back from now (``7d``, ``12h``).
    """
    now = time.time() if now is None else now
    text = text.strip()
    if text == "today":
        return start_of_day(now)
    relative = _RELATIVE.fullmatch(text)
    if relative:
        count, unit = int(relative[1]), relative[2]
        return now - count * (86400 if unit == "d" else 3600)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use 2026-11-01, 2026-11-01T12:00, today, 7d or 12h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def start_of_day(now: float) -> float:
    """Midnight UTC of the day of ``now``."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def start_of_month(now: float) -> float:
    """Midnight UTC of the first day of the month of ``now``."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    return dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC).timestamp()


def iso(moment: float) -> str:
    """``moment`` as an ISO 8601 UTC time, to the second."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="seconds")


async def usage_report(
    location: str,
    *,
    by: str,
    since: str | None,
    until: str | None,
    output: str,
    now: float | None = None,
) -> str:
    """The text `gateway usage` prints: totals of the ledger at ``location``.

    ``since`` defaults to the start of this month (UTC), ``until`` (exclusive) to now.
    """
    now = time.time() if now is None else now
    start = parse_time(since, now) if since else start_of_month(now)
    end = parse_time(until, now) if until else now + 1
    async with open_store(location) as store:
        totals = await store.totals(by, start, end)
    return render(totals, by=by, since=start, until=end, output=output)


def render(totals: Sequence[Totals], *, by: str, since: float, until: float, output: str) -> str:
    """Totals as ``table``, ``csv`` or ``json``."""
    if output == "json":
        document = {
            "since": iso(since),
            "until": iso(until),
            "by": by,
            "rows": [{by: t.group, **_numbers(t)} for t in totals],
        }
        return json.dumps(document, indent=2)
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([by, *FIELDS])
        for t in totals:
            writer.writerow([t.group or "", *_numbers(t).values()])
        return buffer.getvalue().rstrip("\n")
    if output == "table":
        return _table(totals, by=by, since=since, until=until)
    raise ValueError(f"unknown format {output!r}: choose table, csv or json")


def _numbers(totals: Totals) -> dict[str, Any]:
    values = totals.to_json()
    return {field: values[field] for field in FIELDS}


def _table(totals: Sequence[Totals], *, by: str, since: float, until: float) -> str:
    header = [by, *FIELDS]
    lines = [[t.group or "-", *(str(v) for v in _numbers(t).values())] for t in totals]
    if totals:
        sums = [sum(_numbers(t)[f] for t in totals) for f in FIELDS]
        requests = sums[0]
        # The mean latency of all requests, weighted by each group's requests.
        mean = sum(t.avg_duration_ms * t.requests for t in totals) / requests if requests else 0
        sums[FIELDS.index("avg_duration_ms")] = round(mean, 1)
        lines.append(["total", *(str(s) for s in sums)])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    out = [f"usage from {iso(since)} to {iso(until)} (UTC), by {by}", "", line(header)]
    out.append("  ".join("-" * width for width in widths))
    out.extend(line(row) for row in lines[:-1] if totals)
    if totals:
        out.append("  ".join("-" * width for width in widths))
        out.append(line(lines[-1]))
    else:
        out.append("(no requests)")
    return "\n".join(out)
