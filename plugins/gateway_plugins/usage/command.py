"""`gateway usage`: the ledger's totals by key, team, model, route or day; table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from typing import Any

from .reports import Totals
from .stores import open_store
from .times import iso, parse_time, start_of_month

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
