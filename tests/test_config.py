"""Config: interpolation, units, strict structure, every problem at once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import default_config_text, find_config, parse_config
from gateway.errors import ConfigError
from gateway.interpolate import InterpolationError, escape, interpolate
from gateway.runtime import load_runtime
from gateway.units import parse_duration, parse_size

ENV = {"HOME_URL": "http://up.example", "EMPTY": ""}


def test_interpolation_forms():
    assert interpolate("${HOME_URL}/x", ENV) == "http://up.example/x"
    assert interpolate("${MISSING:-fallback}", ENV) == "fallback"
    assert interpolate("${EMPTY:-fallback}", ENV) == "fallback"
    assert interpolate("${EMPTY-fallback}", ENV) == ""
    assert interpolate("${MISSING:-${ALSO_MISSING:-${HOME_URL}}}", ENV) == "http://up.example"
    assert interpolate("cost: $$5", ENV) == "cost: $5"
    assert interpolate("${HOME_URL:+on}", ENV) == "on"
    assert interpolate("${EMPTY:+on}|${MISSING:+on}", ENV) == "|"
    assert interpolate("${EMPTY+on}|${MISSING+on}", ENV) == "on|"
    assert interpolate("${HOME_URL:+${MISSING:-x}}", ENV) == "x"
    with pytest.raises(InterpolationError, match="MISSING is not set"):
        interpolate("${MISSING}", ENV)


@given(st.text())
def test_escaped_text_round_trips(text):
    assert interpolate(escape(text), {}) == text


@given(
    st.text(alphabet=st.characters(blacklist_characters="$}")),
    st.text(alphabet=st.characters(blacklist_characters="$}")),
)
def test_defaults_round_trip(default, value):
    assert interpolate("${V:-" + default + "}", {}) == default
    assert interpolate("${V:-" + default + "}", {"V": value}) == (value or default)


def test_units():
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5m") == 300
    assert parse_duration(3) == 3.0
    assert parse_size("8MiB") == 8 * 1024 * 1024
    assert parse_size("1KB") == 1000
    for bad in ("5 parsecs", "-1s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_default_config_is_valid_and_reads_the_seed_variables():
    env = {
        "PORT": "9000",
        "CHATGPT_BASE_URL": "http://chat.example/backend-api",
        "GO_CHATGPT_API_PROXY": "socks5://127.0.0.1:1080",
    }
    config = load_runtime(default_config_text(), "default", env).config
    assert config.server.port == 9000
    assert config.upstreams["chatgpt"].url == "http://chat.example/backend-api"
    assert config.upstreams["chatgpt"].proxy == ("socks5://127.0.0.1:1080",)
    assert config.upstreams["openai"].proxy == ("socks5://127.0.0.1:1080",)
    assert not config.upstreams["chatgpt"].forward_client_address
    bare = load_runtime(default_config_text(), "default", {}).config
    assert bare.server.port == 8080 and bare.upstreams["chatgpt"].proxy == ()
    assert bare.upstreams["chatgpt"].url == "https://chatgpt.com/backend-api"


@pytest.mark.parametrize("variable", ["PROXY", "GATEWAY_PROXY"])
def test_proxy_variable_aliases(variable):
    config = load_runtime(default_config_text(), "default", {variable: "http://p:3128"}).config
    assert config.upstreams["openai"].proxy == ("http://p:3128",)


BAD = """
pipeline = ["access_log", "no_such_plugin"]
[server]
port = "eighty"
typo = 1
[upstreams.chatgpt]
url = "htp:/x"
idle_timeout = "soon"
proxy = "ftp://user:hunter2@proxy"
[routes.a]
path = "no-slash"
[routes.b]
path = "/b/{x}"
upstream = "nowhere"
[routes.c]
path = "/c"
[routes.c.plugins.access_log]
level = "loud"
"""


def test_every_problem_is_reported_at_once_with_its_key_path():
    with pytest.raises(ConfigError) as caught:
        load_runtime(BAD, "config.toml", {})
    problems = caught.value.problems
    expected = [
        "$.server.port: not a whole number ('eighty')",
        "$.server.typo: unknown key (known: host, port, ",
        '$.upstreams.chatgpt.url: not a URL ("htp:/x")',
        "$.upstreams.chatgpt.idle_timeout: not a duration",
        "$.upstreams.chatgpt.proxy: not a URL",
        "$.routes.a.path: a path must start with '/'",
        "$.routes.b.upstream: unknown upstream 'nowhere'",
        "$.pipeline[1]: unknown plugin 'no_such_plugin' (installed: ",
        "$.routes.c.plugins.access_log.level: must be one of 'debug', 'info', 'warning'",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).splitlines()[0].startswith("config.toml: $.")


def test_unset_variable_is_a_problem_with_its_path():
    with pytest.raises(ConfigError) as caught:
        parse_config('[upstreams.x]\nurl = "${NOT_SET_ANYWHERE}"', "c.toml", {})
    problems = caught.value.problems
    assert problems[0] == "$.upstreams.x.url: environment variable NOT_SET_ANYWHERE is not set"


def test_route_plugin_config_needs_the_plugin_in_the_route():
    text = '[routes.c]\npath = "/c"\n[routes.c.plugins.access_log]\nlevel = "info"'
    with pytest.raises(ConfigError) as caught:
        load_runtime(text, "c.toml", {})
    assert caught.value.problems == [
        "$.routes.c.plugins.access_log: configured, but not in this route's pipeline"
    ]


def test_invalid_toml():
    with pytest.raises(ConfigError) as caught:
        parse_config("[server\nport = 1", "c.toml", {})
    assert caught.value.problems[0].startswith("not valid TOML")


def test_find_config_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(None, {})[0] == "<default config.toml>"
    (tmp_path / "config.toml").write_text("# local")
    assert find_config(None, {}) == ("config.toml", "# local")
    (tmp_path / "env.toml").write_text("# env")
    assert find_config(None, {"GATEWAY_CONFIG": "env.toml"}) == ("env.toml", "# env")
    assert find_config("config.toml", {"GATEWAY_CONFIG": "env.toml"})[0] == "config.toml"
    with pytest.raises(ConfigError, match="cannot read"):
        find_config("missing.toml", {})


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_runtime(text, "c.toml", env or {})
    return caught.value.problems


def test_a_mistyped_key_is_named_by_its_path_with_a_did_you_mean():
    problems = problems_of(
        """
piepline = []
[server]
prot = 80
[routes.r]
path = "/r"
methds = ["GET"]
[plugins.cors]
allow_origin = ["*"]
"""
    )
    assert problems == [
        "$.piepline: unknown key (did you mean 'pipeline'?)",
        "$.server.prot: unknown key (did you mean 'port'?)",
        "$.routes.r.methds: unknown key (did you mean 'methods'?)",
        "$.plugins.cors.allow_origin: unknown key (did you mean 'allow_origins'?)",
    ]


def test_every_problem_of_a_route_is_reported_at_once():
    problems = problems_of(
        """
pipeline = ["access_log", "ratelimit"]
[upstreams.up]
url = "http://up.example"
[routes.r]
path = "/r/{x}"
upstream = "up"
methds = ["GET"]
connect_timeout = "soon"
upstream_path = "/{y}"
skip = ["cors"]
pipeline = ["rewrit"]
[routes.s]
path = "/s"
upstream = "nowhere"
pipeline = ["rewrit"]
[[plugins.ratelimit.rules]]
name = "per-route"
key = "client_ip"
rate = "1/s"
routes = ["r", "s"]
"""
    )
    for expected in [
        "$.routes.r.connect_timeout: not a duration",
        "$.routes.r.methds: unknown key (did you mean 'methods'?)",
        "$.routes.r.upstream_path: parameter(s) y are not in the path '/r/{x}'",
        "$.routes.r.skip[0]: 'cors' is not in the global pipeline",
        "$.routes.r.pipeline[0]: unknown plugin 'rewrit'",
        "$.routes.s.upstream: unknown upstream 'nowhere' (known: up)",
        "$.routes.s.pipeline[0]: unknown plugin 'rewrit'",
    ]:
        assert any(p.startswith(expected) for p in problems), (expected, problems)
    assert not any("unknown route" in p for p in problems), problems  # r and s exist
    assert len(problems) == 7, problems


def test_a_plugin_problem_has_the_same_key_path_style():
    problems = problems_of(
        '[plugins.auth]\nkeys.alice = { sha256 = "abc" }\n[routes.r]\npath = "/r"\n'
    )
    assert problems == [
        "$.plugins.auth.keys.alice.sha256: not a hex SHA-256 digest (use `gateway keygen`)"
    ]


def test_an_unset_variable_is_reported_once():
    problems = problems_of(
        """
[upstreams.up]
url = "${UP_URL}"
idle_timeout = "${IDLE}"
[plugins.auth]
keys.alice = { sha256 = "${ALICE_SHA256}" }
[routes.r]
path = "/r"
"""
    )
    assert problems == [
        "$.upstreams.up.url: environment variable UP_URL is not set",
        "$.upstreams.up.idle_timeout: environment variable IDLE is not set",
        "$.plugins.auth.keys.alice.sha256: environment variable ALICE_SHA256 is not set",
    ]
