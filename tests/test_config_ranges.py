"""Every numeric setting has a range, checked with its key path before anything starts."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import attrs
import pytest

from gateway.config import structure
from gateway.config_types import Range, Seconds
from gateway.errors import ConfigError
from gateway.runtime import load_runtime


def config(upstream: str = "", route: str = "", rest: str = "") -> str:
    """A valid config, with extra lines in its upstream table, its route table and after."""
    return (
        f'[upstreams.up]\nurl = "http://127.0.0.1:9"\n{upstream}\n'
        f'[routes.all]\npath = "/{{rest*}}"\nupstream = "up"\n{route}\n{rest}\n'
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_runtime(text, "c.toml", {})
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (config(rest="[server]\nport = 0"), "$.server.port: must be between 1 and 65535 (0)"),
        (config(rest="[server]\nport = 65536"), "$.server.port: must be between 1 and 65535"),
        (config(rest="[server]\ntrusted_hops = -1"), "$.server.trusted_hops: must be at least 0"),
        (
            config(rest="[server]\nmax_header_size = 10"),
            "$.server.max_header_size: must be at least 1024 (10)",
        ),
        (
            config(rest='[server]\nclient_idle_timeout = "0s"'),
            "$.server.client_idle_timeout: must be above 0",
        ),
        (config(route="idle_timeout = 0"), "$.routes.all.idle_timeout: must be above 0"),
        (
            config(upstream="max_connections = 0"),
            "$.upstreams.up.max_connections: must be at least 1 (0)",
        ),
        (
            config(upstream="max_connections = -5"),
            "$.upstreams.up.max_connections: must be at least 1 (-5)",
        ),
        (
            config(upstream='connect_timeout = "0ms"'),
            "$.upstreams.up.connect_timeout: must be above 0",
        ),
        (
            config(rest="[plugins.cors]\nmax_age = -1"),
            "$.plugins.cors.max_age: must be at least 0 (-1)",
        ),
        (
            config(rest="[plugins.rewrite.query_bounds.limit]\nmax = 9999999999999999999"),
            "$.plugins.rewrite.query_bounds.limit.max: must be between",
        ),
        (
            config(rest='[plugins.ratelimit]\nredis_timeout = "0s"'),
            "$.plugins.ratelimit.redis_timeout: must be above 0",
        ),
        (
            config(rest="[plugins.ratelimit]\nredis_pool_size = 0"),
            "$.plugins.ratelimit.redis_pool_size: must be between 1 and 1000 (0)",
        ),
        (
            config(rest='[plugins.ratelimit]\nredis_backoff = "1s"\nredis_max_backoff = "10ms"'),
            "$.plugins.ratelimit.redis_max_backoff: must not be below redis_backoff",
        ),
        (
            config(rest="[plugins.ratelimit]\ndefault_max_tokens = -1"),
            "$.plugins.ratelimit.default_max_tokens: must be at least 0 (-1)",
        ),
        (config(rest="[plugins.auth]\nleeway = -1"), "$.plugins.auth.leeway: must be at least 0"),
        (
            config(rest='[plugins.auth]\ndisable_for = "0s"'),
            "$.plugins.auth.disable_for: must be above 0",
        ),
        (
            config(rest='[plugins.auth]\nmax_retry_after = "0s"'),
            "$.plugins.auth.max_retry_after: must be above 0",
        ),
        (
            config(rest='[plugins.upstream_proxy]\ncooldown = "0s"'),
            "$.plugins.upstream_proxy.cooldown: must be above 0",
        ),
        (
            config(rest='[plugins.chatgpt_login]\ntimeout = "0s"'),
            "$.plugins.chatgpt_login.timeout: must be above 0",
        ),
        (
            config(rest='[[plugins.ratelimit.rules]]\nname = "r"\nconcurrency = 0'),
            "$.plugins.ratelimit.rules[0].concurrency: must be at least 1 (0)",
        ),
        (
            config(rest='[[plugins.ratelimit.rules]]\nname = "r"\nrate = "1/s"\nburst = -2'),
            "$.plugins.ratelimit.rules[0].burst: must be at least 1 (-2)",
        ),
    ],
)
def test_a_value_out_of_range_is_refused_with_its_key_path(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_of_ranges_is_reported_at_once() -> None:
    found = problems(config(rest="[server]\nport = 0\ntrusted_hops = -3"))
    assert [p.split(":")[0] for p in found] == ["$.server.port", "$.server.trusted_hops"]


def test_values_in_range_pass() -> None:
    text = config(rest='[server]\nport = 65535\ntrusted_hops = 0\nclient_idle_timeout = "1ms"')
    assert load_runtime(text, "c.toml", {}).config.server.port == 65535


@attrs.frozen
class _Example:
    count: Annotated[int, Range(1, 10)] = 1
    maybe: Annotated[int, Range(0)] | None = None
    wait: Annotated[Seconds, Range(0, above=True)] = Seconds(1.0)


def test_a_range_is_declared_on_the_field_type() -> None:
    value, found = structure({"count": 11, "maybe": -1, "wait": "0s"}, _Example, "$")
    assert value is None
    assert found == [
        "$.count: must be between 1 and 10 (11)",
        "$.maybe: must be at least 0 (-1)",
        "$.wait: must be above 0 (0.0)",
    ]
    assert structure({"count": "3", "wait": "2s"}, _Example, "$") == (
        _Example(3, None, Seconds(2.0)),
        [],
    )


def test_gateway_check_reports_ranges(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config(upstream="max_connections = 0"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{path}: $.upstreams.up.max_connections: must be at least 1 (0)" in result.stderr
