"""The ``rewrite`` plugin as a plain object against an `Exchange`."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import streams
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from yarl import URL

from gateway.api import Exchange, SSEEvent
from gateway.config import RouteConfig, structure
from gateway.errors import BadRequest
from gateway.pipeline import Pipeline
from gateway_plugins.rewrite.plugin import Rewrite

CONFIG_TOML = Path(__file__).resolve().parents[2] / "gateway" / "config.toml"


def make_rewrite(**table: Any) -> Rewrite:
    """A plugin from a table shaped as TOML gives it, structured as the loader does."""
    config, problems = structure(table, Rewrite.Config, "$.plugins.rewrite")
    assert problems == []
    return Rewrite(config)


def shipped_rewrite(route: str) -> Rewrite:
    """The plugin as the default config.toml configures it for ``route``."""
    routes = tomllib.loads(CONFIG_TOML.read_text())["routes"]
    return make_rewrite(**routes[route]["plugins"]["rewrite"])


def make_exchange(
    url: str = "http://up/x?a=1",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: Any = None,
    payload: streams.StreamReader | None = None,
) -> Exchange:
    extra = {} if payload is None else {"payload": payload}
    request = make_mocked_request(method, "/x", headers=headers or {}, **extra)
    ex = Exchange(
        request=request,
        route_name="r",
        route=RouteConfig(path="/x"),
        upstream=None,
        path_params={},
        path="/x",
        upstream_url=URL(url),
        upstream_headers=CIMultiDict(headers or {}),
        client_ip="127.0.0.1",
        request_id="rid",
    )
    if body is not None:
        ex.body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ex


async def sent_json(plugin: Rewrite, body: Any) -> Any:
    ex = make_exchange(method="POST", body=body)
    await plugin.on_request(ex)
    assert ex.body is not None
    return json.loads(ex.body)


# --- path -------------------------------------------------------------------------


async def test_path_prefix_strips_and_adds_keeping_the_query() -> None:
    plugin = make_rewrite(path_prefix={"strip": "/api", "add": "/backend-api"})
    ex = make_exchange("http://up/api/v1/models?a=1&b=%20x")
    await plugin.on_request(ex)
    assert str(ex.upstream_url) == "http://up/backend-api/v1/models?a=1&b=%20x"


async def test_path_prefix_strips_only_whole_segments() -> None:
    plugin = make_rewrite(path_prefix={"strip": "/api"})
    ex = make_exchange("http://up/apix/y")
    await plugin.on_request(ex)
    assert ex.upstream_url == URL("http://up/apix/y")
    ex = make_exchange("http://up/api")
    await plugin.on_request(ex)
    assert ex.upstream_url is not None and ex.upstream_url.raw_path == "/"


async def test_path_regex_substitutes_in_order_and_keeps_query() -> None:
    plugin = make_rewrite(
        path_regex=[
            {"pattern": r"^/v1/engines/([^/]+)/", "replace": r"/v1/models/\1/"},
            {"pattern": "completions$", "replace": "chat/completions"},
        ]
    )
    ex = make_exchange("http://up/v1/engines/gpt-4/completions?stream=true")
    await plugin.on_request(ex)
    assert str(ex.upstream_url) == "http://up/v1/models/gpt-4/chat/completions?stream=true"


async def test_path_rewrite_encodes_what_a_path_cannot_carry() -> None:
    plugin = make_rewrite(path_regex=[{"pattern": "^/old", "replace": "/new dir/100%"}])
    ex = make_exchange("http://up/old/a%2Fb")
    await plugin.on_request(ex)
    assert ex.upstream_url is not None
    assert ex.upstream_url.raw_path == "/new%20dir/100%25/a%2Fb"


async def test_path_rewrite_keeps_the_path_absolute_and_query_out_of_it() -> None:
    plugin = make_rewrite(
        path_regex=[{"pattern": "^/v1/", "replace": ""}, {"pattern": "$", "replace": "?x#y"}]
    )
    ex = make_exchange("http://up/v1/models?a=1")
    await plugin.on_request(ex)
    assert str(ex.upstream_url) == "http://up/models%3Fx%23y?a=1"


async def test_path_rewrite_never_changes_the_host() -> None:
    plugin = make_rewrite(path_prefix={"strip": "/a"})
    ex = make_exchange("http://up/a//evil.example/x")
    await plugin.on_request(ex)
    assert ex.upstream_url is not None
    assert ex.upstream_url.host == "up"
    assert ex.upstream_url.raw_path == "//evil.example/x"


# --- query ------------------------------------------------------------------------


async def test_query_defaults_fill_only_missing_parameters() -> None:
    plugin = make_rewrite(query_defaults={"a": "5", "limit": "20", "q": "x y"})
    ex = make_exchange("http://up/x?a=1&s=%2B%20")
    await plugin.on_request(ex)
    assert ex.upstream_url is not None
    # What the client sent keeps its exact bytes; the defaults are appended.
    assert ex.upstream_url.raw_query_string == "a=1&s=%2B%20&limit=20&q=x+y"
    assert ex.upstream_url.query["q"] == "x y"


@pytest.mark.parametrize(
    ("query", "expected"),
    [("limit=500", "limit=100"), ("limit=0", "limit=1"), ("limit=-3", "limit=1")],
)
async def test_query_bounds_clamp(query: str, expected: str) -> None:
    plugin = make_rewrite(query_bounds={"limit": {"min": 1, "max": 100}})
    ex = make_exchange(f"http://up/x?{query}&other=%20")
    await plugin.on_request(ex)
    assert ex.upstream_url is not None
    assert ex.upstream_url.raw_query_string == f"{expected}&other=%20"


async def test_query_bounds_leave_a_value_inside_untouched() -> None:
    plugin = make_rewrite(query_bounds={"limit": {"max": 100}})
    url = URL("http://up/x?limit=050")
    ex = make_exchange(str(url))
    before = ex.upstream_url
    await plugin.on_request(ex)
    assert ex.upstream_url is before


@pytest.mark.parametrize("value", ["abc", "", "1.5", "10e3", "²"])
async def test_query_bounds_reject_a_non_integer(value: str) -> None:
    plugin = make_rewrite(query_bounds={"limit": {"max": 100}})
    ex = make_exchange(str(URL("http://up/x").with_query({"limit": value})))
    with pytest.raises(BadRequest) as caught:
        await plugin.on_request(ex)
    assert "'limit'" in caught.value.message
    assert caught.value.response().status == 400


async def test_shipped_conversations_defaults_limit_to_20() -> None:
    plugin = shipped_rewrite("conversations")
    ex = make_exchange("http://up/backend-api/conversations")
    await plugin.on_request(ex)
    assert ex.upstream_url is not None
    assert dict(ex.upstream_url.query) == {"offset": "0", "limit": "20"}


async def test_shipped_conversations_caps_limit_at_100() -> None:
    plugin = shipped_rewrite("conversations")
    ex = make_exchange("http://up/backend-api/conversations?offset=40&limit=1000")
    await plugin.on_request(ex)
    assert ex.upstream_url is not None
    assert dict(ex.upstream_url.query) == {"offset": "40", "limit": "100"}


async def test_shipped_conversations_refuses_a_non_integer_limit() -> None:
    plugin = shipped_rewrite("conversations")
    with pytest.raises(BadRequest, match="limit"):
        await plugin.on_request(make_exchange("http://up/conversations?limit=ten"))


# --- headers ----------------------------------------------------------------------


async def test_request_headers_remove_then_set_then_add() -> None:
    plugin = make_rewrite(
        request_headers={
            "remove": ["X-Debug", "Cookie"],
            "set": {"User-Agent": "gateway", "X-Debug": "off"},
            "add": {"X-Tag": "b"},
        }
    )
    ex = make_exchange(
        headers={"X-Debug": "on", "Cookie": "c=1", "User-Agent": "curl", "X-Tag": "a"}
    )
    await plugin.on_request(ex)
    assert "Cookie" not in ex.upstream_headers
    assert ex.upstream_headers["User-Agent"] == "gateway"
    assert ex.upstream_headers.getall("X-Debug") == ["off"]
    assert ex.upstream_headers.getall("X-Tag") == ["a", "b"]


async def test_response_headers_are_changed_in_on_response() -> None:
    plugin = make_rewrite(
        response_headers={
            "remove": ["Server"],
            "set": {"Cache-Control": "no-store"},
            "add": {"X-A": "1"},
        }
    )
    ex = make_exchange()
    ex.response_headers = CIMultiDict({"Server": "cloudflare", "Cache-Control": "max-age=60"})
    await plugin.on_response(ex)
    assert dict(ex.response_headers) == {"Cache-Control": "no-store", "X-A": "1"}
    # And the request side is left alone.
    assert not plugin.uses("on_request")


async def test_response_headers_without_a_response_do_nothing() -> None:
    plugin = make_rewrite(response_headers={"set": {"X-A": "1"}})
    ex = make_exchange()
    await plugin.on_response(ex)
    assert ex.response_headers is None


# --- JSON body --------------------------------------------------------------------


async def test_json_defaults_create_objects_only_under_existing_elements() -> None:
    plugin = make_rewrite(json_defaults={"messages[*].author.role": "user", "options.n": 1})
    body = {"messages": [{"id": "1"}, {"id": "2", "author": {"name": "x"}}]}
    assert await sent_json(plugin, body) == {
        "messages": [
            {"id": "1", "author": {"role": "user"}},
            {"id": "2", "author": {"name": "x", "role": "user"}},
        ],
        "options": {"n": 1},
    }


async def test_json_defaults_skip_values_of_the_wrong_type() -> None:
    plugin = make_rewrite(json_defaults={"messages[*].author.role": "user"})
    body = {"messages": [{"author": "me"}, 3, None, {"author": {"role": "system"}}]}
    ex = make_exchange(method="POST", body=body)
    raw = ex.body
    await plugin.on_request(ex)
    # Nothing fitted: the client's bytes go upstream untouched.
    assert ex.body is raw
    assert "Content-Type" not in ex.upstream_headers


async def test_json_defaults_give_each_element_its_own_copy() -> None:
    plugin = make_rewrite(json_defaults={"messages[*].metadata": {}})
    ex = make_exchange(method="POST", body={"messages": [{}, {}]})
    await plugin.on_request(ex)
    messages = (await ex.json())["messages"]
    assert messages == [{"metadata": {}}, {"metadata": {}}]
    assert messages[0]["metadata"] is not messages[1]["metadata"]


async def test_json_force_always_sets() -> None:
    plugin = make_rewrite(json_force={"stream": True, "messages[0].author.role": "system"})
    body = {"stream": False, "messages": [{"author": {"role": "user"}}, {}]}
    assert await sent_json(plugin, body) == {
        "stream": True,
        "messages": [{"author": {"role": "system"}}, {}],
    }


async def test_json_force_treats_true_and_one_as_different() -> None:
    plugin = make_rewrite(json_force={"n": True})
    assert await sent_json(plugin, {"n": 1}) == {"n": True}


async def test_json_remove_keys_and_elements() -> None:
    plugin = make_rewrite(json_remove=["user", "messages[*].metadata", "tools[-1]", "absent.path"])
    body = {
        "user": "u",
        "messages": [{"content": "a", "metadata": {}}, {"content": "b"}],
        "tools": [1, 2, 3],
    }
    assert await sent_json(plugin, body) == {
        "messages": [{"content": "a"}, {"content": "b"}],
        "tools": [1, 2],
    }


async def test_json_empty_to_null() -> None:
    plugin = make_rewrite(json_empty_to_null=["conversation_id", "parent_message_id", "ids[*]"])
    body = {"conversation_id": "", "parent_message_id": "p", "ids": ["", "x"]}
    assert await sent_json(plugin, body) == {
        "conversation_id": None,
        "parent_message_id": "p",
        "ids": [None, "x"],
    }


async def test_model_aliases() -> None:
    plugin = make_rewrite(model_aliases={"gpt-4": "gpt-4o", "fast": "gpt-4o-mini"})
    assert (await sent_json(plugin, {"model": "fast", "x": 1}))["model"] == "gpt-4o-mini"
    ex = make_exchange(method="POST", body={"model": "other"})
    raw = ex.body
    await plugin.on_request(ex)
    assert ex.body is raw


async def test_json_rules_set_the_content_type_when_they_rewrite() -> None:
    plugin = make_rewrite(json_force={"a": 1})
    ex = make_exchange(method="POST", body={"a": 2}, headers={"Content-Length": "8"})
    await plugin.on_request(ex)
    assert ex.upstream_headers["Content-Type"] == "application/json"
    assert "Content-Length" not in ex.upstream_headers


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b""])
async def test_a_body_that_is_not_an_object_is_left_alone(body: bytes) -> None:
    plugin = make_rewrite(json_force={"a": 1})
    ex = make_exchange(method="POST", body=body)
    await plugin.on_request(ex)
    assert ex.body is body


async def test_a_body_that_is_not_json_by_its_content_type_is_not_read() -> None:
    plugin = make_rewrite(json_force={"a": 1})
    ex = make_exchange(
        method="POST",
        body=b"--b\r\nnot json",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    await plugin.on_request(ex)
    assert ex.body == b"--b\r\nnot json"


async def test_invalid_json_answers_400() -> None:
    plugin = make_rewrite(json_force={"a": 1})
    ex = make_exchange(method="POST", body=b"{oops", headers={"Content-Type": "application/json"})
    with pytest.raises(BadRequest):
        await plugin.on_request(ex)


async def test_the_body_is_read_from_the_request_when_not_read_yet() -> None:
    protocol = mock.Mock(_reading_paused=False)
    payload = streams.StreamReader(protocol, 2**16)
    payload.feed_data(b'{"model": "fast"}')
    payload.feed_eof()
    ex = make_exchange(method="POST", headers={"Content-Type": "application/json"}, payload=payload)
    await make_rewrite(model_aliases={"fast": "gpt-4o-mini"}).on_request(ex)
    assert ex.body == b'{"model": "gpt-4o-mini"}'


async def test_a_request_without_a_body_is_not_read() -> None:
    plugin = make_rewrite(json_force={"a": 1})
    ex = make_exchange()
    await plugin.on_request(ex)
    assert ex.body is None


# --- the conversation normalisation of the shipped config -------------------------


async def test_shipped_create_conversation_normalises_the_body() -> None:
    plugin = shipped_rewrite("create_conversation")
    body = {
        "action": "next",
        "conversation_id": "",
        "parent_message_id": "p1",
        "model": "text-davinci-002-render-sha",
        "unknown_top": {"kept": True},
        "messages": [
            {"id": "m1", "content": {"content_type": "text", "parts": ["hi"]}},
            {"id": "m2", "author": {"name": "n"}, "metadata": {"x": 1}, "extra": 7},
            {"id": "m3", "author": {"role": "system"}, "metadata": {}},
        ],
    }
    assert await sent_json(plugin, body) == {
        "action": "next",
        "conversation_id": None,
        "parent_message_id": "p1",
        "model": "text-davinci-002-render-sha",
        "unknown_top": {"kept": True},
        "messages": [
            {
                "id": "m1",
                "content": {"content_type": "text", "parts": ["hi"]},
                "author": {"role": "user"},
                "metadata": {},
            },
            {"id": "m2", "author": {"name": "n", "role": "user"}, "metadata": {"x": 1}, "extra": 7},
            {"id": "m3", "author": {"role": "system"}, "metadata": {}},
        ],
    }


async def test_shipped_create_conversation_keeps_a_given_conversation_id() -> None:
    plugin = shipped_rewrite("create_conversation")
    body = {"conversation_id": "c-1", "messages": [{"author": {"role": "user"}, "metadata": {}}]}
    ex = make_exchange(method="POST", body=body)
    raw = ex.body
    await plugin.on_request(ex)
    assert ex.body is raw


# --- events -----------------------------------------------------------------------


async def test_drop_events_by_name_and_by_json_type() -> None:
    plugin = make_rewrite(drop_events=["ping", "moderation"])
    ex = make_exchange()
    assert await plugin.on_event(ex, SSEEvent(event="ping", data="")) is None
    moderation = SSEEvent(data='{"type": "moderation", "moderation_response": {"flagged": false}}')
    assert await plugin.on_event(ex, moderation) is None


@pytest.mark.parametrize(
    "event",
    [
        SSEEvent(data='{"message": {"content": {"content_type": "text"}}}'),
        SSEEvent(data='{"type": "title_generation", "title": "ping"}'),
        SSEEvent(data='{"type": ["moderation"]}'),
        SSEEvent(data='{"type": "moder'),
        SSEEvent(data="[DONE]"),
        SSEEvent(event="message", data='"moderation"'),
    ],
)
async def test_other_events_are_passed_as_the_same_object(event: SSEEvent) -> None:
    plugin = make_rewrite(drop_events=["ping", "moderation"])
    assert await plugin.on_event(make_exchange(), event) is event


async def test_dropped_events_vanish_and_others_keep_their_bytes_in_a_pipeline() -> None:
    plugin = make_rewrite(drop_events=["ping", "moderation"])
    ex = make_exchange()
    body_filter = Pipeline([plugin]).body_filter(ex, sse=True)
    assert body_filter is not None
    kept_1 = b'data:{"message":  "a"}\r\n\r\n'
    kept_2 = b"id: 7\ndata: [DONE]\n\n"
    stream = kept_1 + b"event: ping\ndata:\n\n" + b'data: {"type":"moderation"}\n\n' + kept_2
    out = b"".join([await body_filter.feed(stream[:9]), await body_filter.feed(stream[9:])])
    assert out + await body_filter.finish() == kept_1 + kept_2


# --- which hooks run --------------------------------------------------------------


def test_only_the_hooks_a_config_uses_are_overridden() -> None:
    hooks = ("on_request", "on_response", "on_event")

    def used(plugin: Rewrite) -> list[str]:
        return [hook for hook in hooks if plugin.uses(hook)]

    assert used(shipped_rewrite("create_conversation")) == ["on_request"]
    assert used(make_rewrite(drop_events=["ping"])) == ["on_event"]
    assert used(make_rewrite(response_headers={"remove": ["Server"]})) == ["on_response"]
    assert used(make_rewrite()) == []
    # A route whose plugins do not touch events gets no event parsing at all.
    ex = make_exchange()
    assert Pipeline([shipped_rewrite("create_conversation")]).body_filter(ex, sse=True) is None


def test_the_class_keeps_its_description() -> None:
    plugin = make_rewrite(drop_events=["ping"])
    assert isinstance(plugin, Rewrite)
    assert type(plugin).__doc__ == Rewrite.__doc__
    assert Rewrite.name == "rewrite"


# --- config errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"path_regex": [{"pattern": "(", "replace": ""}]}, "path_regex[0].pattern"),
        ({"path_prefix": {"strip": "api"}}, "path_prefix.strip"),
        ({"query_bounds": {"limit": {"min": 10, "max": 5}}}, "query_bounds.limit"),
        ({"query_defaults": {"limit": "x"}, "query_bounds": {"limit": {}}}, "query_defaults.limit"),
        ({"json_remove": ["a..b"]}, "json_remove[0]"),
        ({"json_defaults": {"[0]": 1}}, "json_defaults.[0]"),
        ({"json_force": {"a": float("nan")}}, "json_force.a"),
        ({"request_headers": {"set": {"Bad Name": "x"}}}, "request_headers.set"),
        ({"response_headers": {"add": {"X-A": "a\r\nb"}}}, "response_headers.add.X-A"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(table: dict[str, Any], message: str) -> None:
    config, problems = structure(table, Rewrite.Config, "$")
    assert problems == []
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        Rewrite(config)


def test_a_toml_date_is_not_a_json_value() -> None:
    table = tomllib.loads("json_force = { since = 1979-05-27 }")
    config, _ = structure(table, Rewrite.Config, "$")
    with pytest.raises(ValueError, match="not a JSON value"):
        Rewrite(config)


def test_unknown_and_mistyped_keys_are_reported_with_their_path() -> None:
    _, problems = structure(
        {"query_bound": {}, "query_bounds": {"limit": {"max": "lots"}}}, Rewrite.Config, "$.r"
    )
    assert any("query_bound" in p and p.startswith("$.r") for p in problems)
    # cattrs writes a table key as ['limit']; either spelling names the key.
    where = re.compile(r"\$\.r\.query_bounds(\.limit|\['limit'\])\.max: not a whole number")
    assert any(where.match(p) for p in problems)
