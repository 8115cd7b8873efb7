"""The token meter's shortcut to a JSON answer's top-level ``usage`` (gateway/usage_scan.py).

Whenever the shortcut cannot prove the key top-level it answers ``None`` and the
meter parses the whole answer; the meter tests (tests/plugins/test_ratelimit_tokens.py)
check that both ways give the same count.
"""

from __future__ import annotations

import json

import pytest

from gateway.usage import TokenMeter
from gateway.usage_scan import top_level_usage

USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


@pytest.mark.parametrize(
    "body",
    [
        # The bench's compact answer, usage last.
        json.dumps({"id": "c", "choices": [], "usage": USAGE}, separators=(",", ":")),
        # OpenAI's own layout: indented, members after usage.
        json.dumps(
            {"id": "c", "usage": USAGE, "service_tier": "default", "system_fingerprint": "fp"},
            indent=2,
        )
        + "\n",
        '{"choices": [{"message": {"content": "a \\"usage\\": {}"}}], "usage" : '
        + json.dumps(USAGE)
        + " }",
    ],
)
def test_a_top_level_usage_is_found(body: str) -> None:
    assert top_level_usage(body.encode()) == USAGE


@pytest.mark.parametrize(
    "body",
    [
        b'{"choices": []}',  # no usage: the meter estimates from the text
        b'{"a": {"usage": {"total_tokens": 3}}}',  # nested
        b'{"usage": {"total_tokens": 3}, "x": {"usage": 1}}',  # the last one is nested
        b'{"a": 1, "say \\"usage": {"total_tokens": 99}}',  # another key that ends in usage
        b'{"usage": {"total_tokens": 3}, "x": [1, 2}',  # broken after it
        b'{"usage": {"total_tokens": 3}} trailing',
        b'{"usage": {"total_tokens": 3}',  # torn
        b'[{"usage": {"total_tokens": 3}}]',  # in an array
        b'{"usage": 5}',
        b'{"usage": {"total_tokens": 3}, "b": "\xff"}',  # not UTF-8
    ],
)
def test_anything_else_is_left_to_the_full_parse(body: bytes) -> None:
    assert top_level_usage(body) is None


def test_a_nested_usage_after_the_real_one_still_counts_the_real_one() -> None:
    meter = TokenMeter("application/json")
    meter.feed(json.dumps({"usage": USAGE, "x": {"usage": {"total_tokens": 1}}}).encode())
    meter.finish()
    assert meter.tokens == 12
    assert meter.usage().prompt_tokens == 9 and not meter.usage().estimated


def test_a_usage_without_counts_leaves_the_estimate() -> None:
    meter = TokenMeter("application/json")
    body = {"choices": [{"message": {"content": "y" * 41}}], "usage": {"total_tokens": None}}
    meter.feed(json.dumps(body).encode())
    meter.finish()
    assert meter.tokens == 11 and meter.usage().estimated
