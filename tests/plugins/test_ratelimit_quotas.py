"""``RateLimit.status()``: what each quota has left, from the in-process store and from Redis."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_plugins.ratelimit.config import RuleConfig
from gateway_plugins.ratelimit.plugin import RateLimit
from gateway_plugins.ratelimit.quotas import QuotaBoard
from gateway_plugins.ratelimit.rules import Rule, calendar_window
from gateway_plugins.ratelimit.store import Check, Decision, Outcome, TokenCharge
from tests.plugins.test_ratelimit import config, get
from tests.plugins.test_ratelimit import upstream as upstream  # a fixture

DAILY = {"name": "daily", "key": "client_ip", "requests": 5, "period": "day"}
RATE = {"name": "rate", "key": "client_ip", "rate": "100/s", "burst": 100}


def ratelimit_of(gateway: Any) -> RateLimit:
    plugins = gateway.service.runtime.plugins
    return next(p for p in plugins if isinstance(p, RateLimit))


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_status_says_what_each_quota_has_left(
    store: str, start_gateway: Any, upstream: Any, start_redis: Any
) -> None:
    _, url = upstream
    text = config(url, RATE, DAILY)
    if store == "redis":
        redis = await start_redis()
        text = text.replace('store = "memory"', f'redis_url = "{redis.url}"\nkey_prefix = "q:"')
    gateway = await start_gateway(text)
    for _ in range(3):
        assert (await get(gateway, "/x"))[0] == 200
    status = ratelimit_of(gateway).status()
    assert status["store"]["kind"] == store
    (quota,) = status["quotas"]  # the rate rule is not a quota
    assert quota["rule"] == "daily" and quota["key"] == "client_ip"
    assert quota["subject"] == "127.0.0.1"
    assert (quota["limit"], quota["used"], quota["remaining"]) == (5, 3, 2)
    assert quota["unit"] == "requests" and quota["period"] == "day"
    for _ in range(3):
        await get(gateway, "/x")  # the sixth is refused, and consumes nothing
    (quota,) = ratelimit_of(gateway).status()["quotas"]
    assert (quota["used"], quota["remaining"]) == (5, 0)


def token_rule() -> Rule:
    return Rule.of(RuleConfig(name="tok", key="team", tokens=1000, period="day"), 0)


def decided(rule: Rule, key: str, cost: int, remaining: int, now: float) -> tuple[Check, Decision]:
    window, ends = calendar_window("day", now)
    check = Check(rule, key, cost)
    return check, Decision(True, (Outcome(rule, True, remaining, ends - now, 0.0, window),))


def test_a_settled_reservation_is_replaced_by_the_tokens_used() -> None:
    board, rule, now = QuotaBoard(), token_rule(), 1796207400.0
    # 100 tokens used before, 300 reserved by this request: 600 left.
    check, decision = decided(rule, "tok:team:research", 300, 600, now)
    board.note([check], decision)
    (entry,) = board.entries(now)
    assert (entry["key"], entry["subject"], entry["used"]) == ("team", "research", 400)
    window = decision.outcomes[0].window
    board.settle([TokenCharge(check, window, 42)])
    assert board.entries(now)[0]["used"] == 142
    assert board.entries(now)[0]["remaining"] == 858


def test_a_new_day_starts_from_zero_and_the_board_is_bounded() -> None:
    board, rule, now = QuotaBoard(max_counters=2), token_rule(), 1796207400.0
    for team in ("a", "b", "c"):
        check, decision = decided(rule, f"tok:team:{team}", 0, 500, now)
        board.note([check], decision)
    assert [e["subject"] for e in board.entries(now)] == ["b", "c"]
    tomorrow = board.entries(now + 86400)
    assert {e["used"] for e in tomorrow} == {0}
    assert {e["remaining"] for e in tomorrow} == {1000}
