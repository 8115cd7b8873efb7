"""The ``cors`` plugin as a plain object against an `Exchange`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from yarl import URL

from gateway.config import RouteConfig, structure
from gateway.errors import Unauthorized
from gateway.plugin import Exchange
from gateway_plugins.cors import Cors

APP = "https://app.example"
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "POST"}


def make_cors(**table: Any) -> Cors:
    """A plugin from a table shaped as TOML gives it, structured as the loader does."""
    config, problems = structure(table, Cors.Config, "$.plugins.cors")
    assert problems == []
    return Cors(config)


def make_exchange(method: str = "GET", headers: dict[str, str] | None = None) -> Exchange:
    request = make_mocked_request(method, "/x", headers=headers or {})
    return Exchange(
        request=request,
        route_name="r",
        route=RouteConfig(path="/x"),
        upstream=None,
        path_params={},
        path="/x",
        upstream_url=URL("http://up/x?a=1"),
        upstream_headers=CIMultiDict(headers or {}),
        client_ip="127.0.0.1",
        request_id="rid",
    )


async def preflight(plugin: Cors, **headers: str) -> web.Response:
    response = await plugin.on_request(make_exchange("OPTIONS", {**PREFLIGHT, **headers}))
    assert isinstance(response, web.Response)
    return response


async def answered(
    plugin: Cors, request_headers: dict[str, str], **upstream: str
) -> CIMultiDict[str]:
    """The response headers after ``on_response``, from upstream headers ``upstream``."""
    ex = make_exchange("GET", request_headers)
    ex.status = 200
    ex.response_headers = CIMultiDict({k.replace("_", "-"): v for k, v in upstream.items()})
    await plugin.on_response(ex)
    return ex.response_headers


# --- preflight --------------------------------------------------------------------


async def test_preflight_with_the_defaults() -> None:
    response = await preflight(
        make_cors(), **{"Access-Control-Request-Headers": "authorization, content-type"}
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == (
        "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    )
    assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]


async def test_preflight_from_a_listed_origin_reflects_it() -> None:
    plugin = make_cors(allow_origins=["https://other.example", APP], max_age=60)
    response = await preflight(plugin)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Max-Age"] == "60"


async def test_preflight_from_an_origin_not_allowed_is_403_in_the_envelope() -> None:
    plugin = make_cors(allow_origins=["https://other.example"])
    response = await preflight(plugin)
    assert response.status == 403
    assert response.content_type == "application/json"
    assert response.body is not None
    error = json.loads(bytes(response.body))["error"]
    assert error["code"] == "forbidden" and APP in error["message"]
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_preflight_with_credentials_never_answers_a_star() -> None:
    plugin = make_cors(allow_credentials=True)
    response = await preflight(plugin)
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


async def test_preflight_with_listed_headers_and_reflected_methods() -> None:
    plugin = make_cors(allow_headers=["Authorization", "Content-Type"], allow_methods=["*"])
    response = await preflight(
        plugin,
        **{"Access-Control-Request-Method": "PATCH", "Access-Control-Request-Headers": "x-evil"},
    )
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert response.headers["Access-Control-Allow-Methods"] == "PATCH"


async def test_preflight_without_requested_headers_allows_none() -> None:
    response = await preflight(make_cors())
    assert "Access-Control-Allow-Headers" not in response.headers


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("OPTIONS", {"Origin": APP}),
        ("OPTIONS", {"Access-Control-Request-Method": "POST"}),
        ("GET", PREFLIGHT),
    ],
)
async def test_other_requests_are_not_preflights(method: str, headers: dict[str, str]) -> None:
    assert await make_cors().on_request(make_exchange(method, headers)) is None


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),
        ("https://a.example.com.evil.net", False),
        ("http://a.example.com", False),
        ("https://APP.example", True),
    ],
)
async def test_origin_patterns(origin: str, allowed: bool) -> None:
    plugin = make_cors(allow_origins=["https://*.example.com", "https://app.example/"])
    response = await preflight(plugin, Origin=origin)
    assert (response.status == 204) is allowed
    assert plugin.allows(origin) is allowed


# --- headers on answers -----------------------------------------------------------


async def test_response_to_an_allowed_origin_gets_the_cors_headers() -> None:
    headers = await answered(
        make_cors(allow_origins=[APP]), {"Origin": APP}, Vary="Accept-Encoding"
    )
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Vary"] == "Accept-Encoding, Origin"
    assert headers["Access-Control-Expose-Headers"] == (
        "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"
    )
    assert "Access-Control-Allow-Credentials" not in headers


async def test_response_with_a_star_origin_needs_no_vary() -> None:
    headers = await answered(make_cors(), {"Origin": APP})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in headers


async def test_response_with_credentials_reflects_the_origin() -> None:
    headers = await answered(make_cors(allow_credentials=True), {"Origin": APP})
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Vary"] == "Origin"


async def test_response_to_an_origin_not_allowed_drops_the_upstreams_cors_headers() -> None:
    plugin = make_cors(allow_origins=["https://other.example"])
    headers = await answered(
        plugin,
        {"Origin": APP},
        Access_Control_Allow_Origin="*",
        Access_Control_Allow_Credentials="true",
        Content_Type="application/json",
    )
    assert "Access-Control-Allow-Origin" not in headers
    assert "Access-Control-Allow-Credentials" not in headers
    assert headers["Content-Type"] == "application/json"
    assert headers["Vary"] == "Origin"


async def test_the_gateways_policy_replaces_the_upstreams() -> None:
    headers = await answered(
        make_cors(allow_origins=[APP], expose_headers=[]),
        {"Origin": APP},
        Access_Control_Allow_Credentials="true",
        Access_Control_Expose_Headers="X-Secret",
    )
    assert headers.getall("Access-Control-Allow-Origin") == [APP]
    assert "Access-Control-Allow-Credentials" not in headers
    assert "Access-Control-Expose-Headers" not in headers


async def test_response_without_an_origin_is_left_alone() -> None:
    headers = await answered(make_cors(allow_origins=[APP]), {}, Access_Control_Allow_Origin="*")
    assert dict(headers) == {"Access-Control-Allow-Origin": "*"}


async def test_a_gateway_answer_gets_the_headers_too() -> None:
    response = Unauthorized("missing credential").response()
    ex = make_exchange("POST", {"Origin": APP})
    ex.status, ex.response_headers = response.status, response.headers
    await make_cors(allow_origins=[APP]).on_response(ex)
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]


async def test_no_response_headers_means_nothing_to_do() -> None:
    ex = make_exchange("GET", {"Origin": APP})
    await make_cors().on_response(ex)
    assert ex.response_headers is None


async def test_vary_is_not_repeated() -> None:
    headers = await answered(make_cors(allow_origins=[APP]), {"Origin": APP}, Vary="origin")
    assert headers.getall("Vary") == ["origin"]


# --- config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"allow_origins": ["app.example"]}, r"allow_origins\[0\]"),
        ({"allow_origins": ["https://app.example/path"]}, r"allow_origins\[0\]"),
        ({"allow_methods": ["GET POST"]}, r"allow_methods\[0\]"),
        ({"expose_headers": ["X-A", "bad:header"]}, r"expose_headers\[1\]"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(table: dict[str, Any], message: str) -> None:
    config, problems = structure(table, Cors.Config, "$")
    assert problems == []
    with pytest.raises(ValueError, match=message):
        Cors(config)


def test_the_defaults() -> None:
    config = Cors.Config()
    assert config.allow_origins == ("*",)
    assert config.allow_headers == ("*",)
    assert config.allow_credentials is False
    assert config.max_age == 600
    assert "Retry-After" in config.expose_headers
    assert (Cors.name, Cors.overrides("on_request"), Cors.overrides("on_response")) == (
        "cors",
        True,
        True,
    )
