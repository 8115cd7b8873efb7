"""The in-process ``ratelimit`` store, on an injected clock: exact counts, nothing consumed
by rejections, calendar windows, concurrency slots."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from gateway.config import structure
from gateway_plugins.ratelimit.config import RuleConfig
from gateway_plugins.ratelimit.memory_store import MemoryStore, SharedMemoryStores
from gateway_plugins.ratelimit.rules import Rule
from gateway_plugins.ratelimit.store import Check, Decision

# 2024-01-31 22:00:00 UTC: two hours before a day (and month) ends.
START = dt.datetime(2024, 1, 31, 22, tzinfo=dt.UTC).timestamp()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def check(name: str = "r", subject: str = "ip:1", **table: Any) -> Check:
    config, problems = structure({"name": name, **table}, RuleConfig, "$")
    assert problems == []
    return Check(Rule.of(config, 0), f"{name}:{subject}")


async def admit(store: MemoryStore, *checks: Check, slot: str = "s") -> Decision:
    return await store.acquire(checks, slot)


@pytest.mark.parametrize(
    ("rate", "burst", "span", "step"),
    [
        ("2/s", 3, 10.0, 0.25),
        ("60/m", 1, 120.0, 0.5),
        ("1/s", 10, 7.0, 0.125),
        ("4/s", 1, 2.5, 0.0625),
        ("3/h", 2, 7200.0, 60.0),
    ],
)
async def test_gcra_admits_exactly_burst_plus_rate_times_elapsed(
    rate: str, burst: int, span: float, step: float
) -> None:
    clock = Clock()
    store = MemoryStore(clock)
    rule = check(rate=rate, burst=burst)
    admitted = 0
    for tick in range(int(span / step) + 1):
        clock.now = START + tick * step
        for _ in range(3):  # more attempts than the rule can admit in one step
            admitted += (await admit(store, rule)).admitted
    per_second = 1 / rule.rule.interval
    assert admitted == burst + round(per_second * span)


async def test_rate_outcomes_say_remaining_reset_and_retry() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    rule = check(rate="1/s", burst=3)
    seen = [(await admit(store, rule)).outcomes[0] for _ in range(4)]
    assert [(o.allowed, o.remaining, o.reset) for o in seen[:3]] == [
        (True, 2, 1.0),
        (True, 1, 2.0),
        (True, 0, 3.0),
    ]
    assert (seen[3].allowed, seen[3].remaining, seen[3].retry_after) == (False, 0, 1.0)
    clock.now += 1.5
    again = (await admit(store, rule)).outcomes[0]
    assert (again.allowed, again.remaining) == (True, 0)


async def test_rejected_attempts_do_not_delay_the_next_admission() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    rule = check(rate="1/s", burst=1)
    assert (await admit(store, rule)).admitted
    clock.now += 0.5
    for _ in range(100):
        assert not (await admit(store, rule)).admitted
    clock.now += 0.5
    assert (await admit(store, rule)).admitted


async def test_a_request_rejected_by_one_rule_charges_none_of_the_others() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    rate = check("rate", rate="1/h", burst=1)
    quota = check("quota", requests=5, period="day")
    slots = check("slots", concurrency=1)
    first = await admit(store, rate, quota, slots)
    assert first.admitted
    for _ in range(10):
        rejected = await admit(store, rate, quota, slots)
        assert not rejected.admitted
        assert [o.allowed for o in rejected.outcomes] == [False, True, False]
    await store.settle([slots], [], "s")
    clock.now += 3600
    second = await admit(store, rate, quota, slots)
    assert second.admitted
    # Only the two admitted requests were counted by the quota.
    assert second.outcomes[1].remaining == 3


async def test_request_quota_ends_with_its_utc_day() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    quota = check(requests=2, period="day")
    assert [(await admit(store, quota)).admitted for _ in range(3)] == [True, True, False]
    rejected = (await admit(store, quota)).outcomes[0]
    assert rejected.retry_after == 7200.0  # until midnight UTC
    assert rejected.reset == 7200.0
    clock.now += 7200
    assert (await admit(store, quota)).outcomes[0].remaining == 1


async def test_monthly_quota_spans_days_and_ends_with_the_month() -> None:
    january = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
    clock = Clock()
    store = MemoryStore(clock)
    quota = check(requests=3, period="month")
    for day in (0, 10, 30):
        clock.now = january + day * 86400
        assert (await admit(store, quota)).admitted
    assert not (await admit(store, quota)).admitted
    clock.now = dt.datetime(2024, 2, 1, tzinfo=dt.UTC).timestamp()
    assert (await admit(store, quota)).outcomes[0].remaining == 2


async def test_concurrency_slots_are_taken_and_freed() -> None:
    store = MemoryStore(Clock())
    slots = check(concurrency=2)
    assert [(await admit(store, slots)).admitted for _ in range(3)] == [True, True, False]
    await store.settle([slots], [], "s")
    assert (await admit(store, slots)).outcomes[0].remaining == 0
    other = check(concurrency=2, subject="ip:2")
    assert (await admit(store, other)).admitted


async def test_stale_entries_are_swept() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    for i in range(50):
        await admit(store, check(subject=f"ip:{i}", rate="1/s", burst=5))
        await admit(store, check("q", subject=f"ip:{i}", requests=5, period="day"))
    clock.now += 86400
    await admit(store, check(subject="ip:last", concurrency=1))
    assert store._tat == {}
    assert store._counts == {}


def test_shared_stores_live_while_a_user_holds_them() -> None:
    shared = SharedMemoryStores()
    first = shared.open("p:")
    assert shared.open("p:") is first  # a reload's new instance keeps the counters
    assert shared.open("other:") is not first
    shared.close("p:")
    shared.close("p:")
    assert shared.open("p:") is not first
