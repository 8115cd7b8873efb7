"""When an upstream says to come back: ``Retry-After`` and ``x-ratelimit-reset-*``.

SECURITY: these are numbers an upstream chooses, so they are read strictly (ASCII
digits only: ``"²".isdigit()`` is true in Python) and always clamped to a
maximum: 400 digits, or a date in the year 9999, must not rest a credential for
ever, nor overflow into an error.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping

# Ten digits are already over 300 years: anything longer is clamped without reading it.
_SECONDS = re.compile(r"[0-9]{1,10}")
# OpenAI writes its reset times as Go durations: "1s", "6m0s", "20ms", "1h2m3.5s".
_DURATION = re.compile(
    r"(?:(?P<h>[0-9]{1,6})h)?(?:(?P<m>[0-9]{1,6})m(?!s))?"
    r"(?:(?P<s>[0-9]{1,6}(?:\.[0-9]{1,9})?)s)?(?:(?P<ms>[0-9]{1,9})ms)?"
)
_LIMITS = ("requests", "tokens")
#: The longest wait an upstream may ask for where no setting says otherwise.
MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(
    value: str | None, maximum: float, now: float | None = None
) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP date), at most ``maximum``.

    ``None`` when there is no value or it cannot be read.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if _SECONDS.fullmatch(value) and int(value) < maximum else maximum
    try:
        moment = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    wall = time.time() if now is None else now
    return min(max(0.0, moment - wall), maximum)


def duration_seconds(value: str | None, maximum: float) -> float | None:
    """Seconds from a reset time written ``6m0s`` (or plain seconds), at most ``maximum``."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return retry_after_seconds(value, maximum)
    found = _DURATION.fullmatch(value) if value.isascii() else None
    if not value or found is None:
        return None
    hours, minutes, seconds, millis = (float(found[k] or 0) for k in ("h", "m", "s", "ms"))
    return min(hours * 3600 + minutes * 60 + seconds + millis / 1000, maximum)


def rate_limit_reset(headers: Mapping[str, str], maximum: float) -> float | None:
    """When a rate-limited upstream will take requests again, from its answer's headers.

    ``Retry-After`` first; else OpenAI's ``x-ratelimit-reset-requests`` and
    ``-tokens``: the later of the limits that are spent (``x-ratelimit-remaining-*``
    is 0), or the sooner of the two when neither says so.
    """
    given = retry_after_seconds(headers.get("Retry-After"), maximum)
    if given is not None:
        return given
    resets = {}
    for limit in _LIMITS:
        seconds = duration_seconds(headers.get(f"x-ratelimit-reset-{limit}"), maximum)
        if seconds is not None:
            resets[limit] = seconds
    spent = [
        s for limit, s in resets.items() if headers.get(f"x-ratelimit-remaining-{limit}") == "0"
    ]
    if spent:
        return max(spent)
    return min(resets.values()) if resets else None
