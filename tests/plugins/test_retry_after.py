"""Reading ``Retry-After`` and ``x-ratelimit-reset-*``: strictly, and never past the maximum."""

from __future__ import annotations

import pytest

from gateway_plugins.imitate.errors import upstream_error
from gateway_plugins.retry_after import duration_seconds, rate_limit_reset, retry_after_seconds

HOUR = 3600.0
NOW = 1445412470.0  # 2015-10-21 07:27:50 UTC


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("17", 17.0),
        (" 0 ", 0.0),
        ("3599", 3599.0),
        ("3601", HOUR),
        ("99999999999", HOUR),
        ("9" * 400, HOUR),
        ("9" * 10_000, HOUR),  # longer than int() will even read
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # a date in the past: now
        ("Fri, 31 Dec 9999 23:59:59 GMT", HOUR),
        (None, None),
        ("", None),
        ("soon", None),
        ("²", None),  # str.isdigit() says yes; it is no number
        ("١٢", None),  # Arabic-Indic digits
        ("-5", None),
        ("1.5", None),
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
        ("Wed, 21 Oct 99999999999 07:28:00 GMT", None),
    ],
)
def test_retry_after_is_strict_and_clamped(value, seconds):
    assert retry_after_seconds(value, HOUR, now=NOW) == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("2m3.5s", 123.5),
        ("1h2m", HOUR),
        ("2m", 120.0),
        ("42", 42.0),
        ("999999h", HOUR),
        ("", None),
        ("1x", None),
        ("²s", None),
        ("1 s", None),
        ("-1s", None),
    ],
)
def test_reset_durations(value, seconds):
    assert duration_seconds(value, HOUR) == seconds


def test_the_spent_limit_says_when_requests_resume():
    spent_requests = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-tokens": "1s",
    }
    assert rate_limit_reset(spent_requests, HOUR) == 360
    neither_says = {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "2s"}
    assert rate_limit_reset(neither_says, HOUR) == 2
    assert rate_limit_reset({"Retry-After": "7", **spent_requests}, HOUR) == 7
    assert rate_limit_reset({"Retry-After": "²", **neither_says}, HOUR) == 2
    assert rate_limit_reset({}, HOUR) is None


@pytest.mark.parametrize(
    ("given", "passed_on"),
    [("7", "7"), ("²", None), ("9" * 400, "3600"), ("99999999999", "3600"), ("soon", None)],
)
def test_imitate_passes_on_only_a_sane_retry_after(given, passed_on):
    error = upstream_error(429, b'{"detail": "slow down"}', {"Retry-After": given})
    assert error.status == 429 and error.headers.get("Retry-After") == passed_on
