"""``ratelimit`` rules: config checks, whose counter a request charges, calendar windows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.config import RouteConfig, parse_config, structure
from gateway.errors import ConfigError
from gateway.plugin import Exchange, Identity
from gateway.runtime import build_runtime
from gateway_plugins.ratelimit.config import RuleConfig
from gateway_plugins.ratelimit.plugin import RateLimit
from gateway_plugins.ratelimit.rules import Rule, calendar_window


def make_plugin(**table: Any) -> RateLimit:
    """A plugin from a table shaped as TOML gives it, structured as the loader does."""
    config, problems = structure(table, RateLimit.Config, "$.plugins.ratelimit")
    assert problems == []
    return RateLimit(config)


def rule(**table: Any) -> Rule:
    config, problems = structure({"name": "r", **table}, RuleConfig, "$")
    assert problems == []
    return Rule.of(config, 0)


def exchange(identity: Identity | None = None, route: str = "all") -> Exchange:
    return Exchange(
        request=make_mocked_request("GET", "/x"),
        route_name=route,
        route=RouteConfig(path="/x"),
        upstream=None,
        path_params={},
        path="/x",
        upstream_url=None,
        upstream_headers=CIMultiDict(),
        client_ip="203.0.113.7",
        request_id="rid",
        identity=identity,
    )


def problems_of(rules: str, plugin: str = "") -> list[str]:
    text = f"""
pipeline = ["ratelimit"]
[plugins.ratelimit]
{plugin}
{rules}
[upstreams.up]
url = "http://127.0.0.1:9"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""
    with pytest.raises(ConfigError) as caught:
        build_runtime(parse_config(text, "test.toml"))
    return caught.value.problems


# --- config checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            '[[plugins.ratelimit.rules]]\nname = "both"\nrate = "1/s"\nconcurrency = 2',
            "rules[0] ('both'): set exactly one of rate, concurrency, requests, tokens "
            "(found: rate, concurrency)",
        ),
        (
            '[[plugins.ratelimit.rules]]\nname = "none"\nkey = "team"',
            "rules[0] ('none'): set exactly one of rate, concurrency, requests, tokens "
            "(found: none)",
        ),
        (
            '[[plugins.ratelimit.rules]]\nname = "q"\nrequests = 5',
            "rules[0] ('q'): period (day or month) goes with requests and tokens only",
        ),
        (
            '[[plugins.ratelimit.rules]]\nname = "c"\nconcurrency = 2\nburst = 3',
            "rules[0] ('c'): burst goes with rate only",
        ),
        (
            '[[plugins.ratelimit.rules]]\nname = "fast"\nrate = "sixty a minute"',
            "rules[0] ('fast'): rate 'sixty a minute' is not \"<count>/<unit>\", "
            'e.g. "60/m" or "10/s"',
        ),
        (
            '[[plugins.ratelimit.rules]]\nname = "nowhere"\nconcurrency = 1\nroutes = []',
            "rules[0] ('nowhere'): routes is empty; leave it out to apply to every route",
        ),
        (
            '[[plugins.ratelimit.rules]]\nname = "a b"\nconcurrency = 1',
            "rules[0] ('a b'): name must be 1-64 letters, digits, '_', '.' or '-'",
        ),
        (
            '[[plugins.ratelimit.rules]]\nname = "x"\nconcurrency = 1\n'
            '[[plugins.ratelimit.rules]]\nname = "x"\nrate = "1/s"',
            "rules: names must be unique (x used twice)",
        ),
    ],
)
def test_a_bad_rule_is_a_config_error_naming_it(rules: str, expected: str) -> None:
    assert problems_of(rules) == [f"$.plugins.ratelimit.{expected}"]


def test_unknown_rule_keys_and_key_kinds_are_config_errors() -> None:
    problems = problems_of('[[plugins.ratelimit.rules]]\nname = "x"\nkey = "user"\nrat = "1/s"')
    assert "$.plugins.ratelimit.rules[0].rat: unknown key (did you mean 'rate'?)" in problems


def test_redis_store_needs_a_redis_url_and_hides_its_password() -> None:
    rules = '[[plugins.ratelimit.rules]]\nname = "x"\nconcurrency = 1'
    assert problems_of(rules, 'store = "redis"') == [
        '$.plugins.ratelimit: store = "redis" needs redis_url (e.g. "redis://127.0.0.1:6379/0")'
    ]
    problems = problems_of(rules, 'redis_url = "http://user:hunter2@example.com"')
    assert "not a redis://, rediss:// or unix:// URL" in problems[0]
    assert "hunter2" not in problems[0]


def test_auto_store_is_redis_only_with_a_url() -> None:
    assert make_plugin().store_kind == "memory"
    assert make_plugin(redis_url="").store_kind == "memory"
    assert make_plugin(redis_url="redis://127.0.0.1:6379/0").store_kind == "redis"
    assert make_plugin(store="memory", redis_url="redis://127.0.0.1/0").store_kind == "memory"


@pytest.mark.parametrize(
    ("rate", "interval", "words"),
    [
        ("60/m", 1.0, "60 requests per minute"),
        ("10/s", 0.1, "10 requests per second"),
        ("5/h", 720.0, "5 requests per hour"),
        ("2/d", 43200.0, "2 requests per day"),
        ("100/30s", 0.3, "100 requests per 30s"),
    ],
)
def test_rates_read_as_people_write_them(rate: str, interval: float, words: str) -> None:
    parsed = rule(rate=rate, burst=3)
    assert parsed.interval == pytest.approx(interval)
    assert parsed.limit == 3
    assert parsed.description == f"{words}, burst 3"


def test_burst_defaults_to_one() -> None:
    assert rule(rate="1/s").limit == 1


def test_hooks_are_taken_only_when_a_rule_needs_them() -> None:
    hooks = ("on_request", "on_response", "on_chunk", "on_event", "on_complete")

    def used(**table: Any) -> set[str]:
        plugin = make_plugin(rules=[{"name": "r", **table}])
        return {h for h in hooks if plugin.uses(h)}

    assert used(rate="1/s") == {"on_request", "on_response"}
    assert used(requests=5, period="day") == {"on_request", "on_response"}
    assert used(concurrency=2) == {"on_request", "on_response", "on_complete"}
    assert used(tokens=100, period="month") == set(hooks)
    assert not any(make_plugin().uses(h) for h in hooks)


# --- whose counter ---------------------------------------------------------------


ALICE = Identity("alice", team="research")
CAROL = Identity("carol")  # no team


@pytest.mark.parametrize(
    ("key", "identity", "subject"),
    [
        ("identity", ALICE, "identity:alice"),
        ("identity", None, "ip:203.0.113.7"),
        ("team", ALICE, "team:research"),
        ("team", CAROL, "identity:carol"),
        ("team", None, "ip:203.0.113.7"),
        ("client_ip", ALICE, "ip:203.0.113.7"),
    ],
)
def test_subject_falls_back_to_name_then_address(
    key: str, identity: Identity | None, subject: str
) -> None:
    assert rule(key=key, concurrency=1).subject(exchange(identity)) == subject


def test_routes_restrict_a_rule() -> None:
    limited = rule(concurrency=1, routes=["openai", "create_conversation"])
    assert limited.applies_to(exchange(route="openai"))
    assert not limited.applies_to(exchange(route="models"))
    assert rule(concurrency=1).applies_to(exchange(route="models"))


# --- calendar windows ------------------------------------------------------------


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a UTC date and time."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "name", "ends"),
    [
        ("day", at(2024, 1, 31, 23, 59, 59), "d20240131", at(2024, 2, 1)),
        ("day", at(2024, 2, 1), "d20240201", at(2024, 2, 2)),
        ("day", at(2024, 2, 29, 12), "d20240229", at(2024, 3, 1)),
        ("month", at(2024, 2, 29, 12), "m202402", at(2024, 3, 1)),
        ("month", at(2023, 12, 31, 23, 59, 59), "m202312", at(2024, 1, 1)),
        ("month", at(2024, 1, 1), "m202401", at(2024, 2, 1)),
    ],
)
def test_calendar_windows_are_utc_days_and_months(
    period: Any, now: float, name: str, ends: float
) -> None:
    assert calendar_window(period, now) == (name, ends)


def test_rules_naming_unknown_routes_are_config_errors():
    from gateway.errors import ConfigError
    from gateway.runtime import load_runtime

    text = """
pipeline = ["ratelimit"]
[[plugins.ratelimit.rules]]
name = "r"
rate = "1/s"
routes = ["chat", "nope"]
[routes.chat]
path = "/chat"
"""
    with pytest.raises(ConfigError) as caught:
        load_runtime(text, "t.toml", {})
    assert caught.value.problems == ["$.plugins.ratelimit.rules[0].routes: unknown route(s) nope"]
