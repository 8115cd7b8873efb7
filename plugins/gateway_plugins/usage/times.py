"""Times as the ledger's reports take them: epoch seconds, days and months in UTC."""

from __future__ import annotations

import datetime as dt
import re
import time

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
