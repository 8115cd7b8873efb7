"""``auth`` in passthrough mode: Bearer prefix, X-Authorization, expired JWTs."""

from __future__ import annotations

import base64
import json
import time

import pytest

from gateway_plugins.jwt import jwt_expiry
from tests.upstreams import Upstream, seen_headers


def make_jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def config(url: str, auth: str = "") -> str:
    return f"""
pipeline = ["access_log", "auth"]
[plugins.auth]
mode = "passthrough"
{auth}
[upstreams.up]
url = "{url}"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


@pytest.fixture
async def setup(serve_app, start_gateway):
    upstream = Upstream()
    gateway = await start_gateway(config(await serve_app(upstream.app)))
    return gateway, upstream


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ({"Authorization": "abc"}, "Bearer abc"),
        ({"Authorization": "Bearer abc"}, "Bearer abc"),
        ({"Authorization": "bearer abc"}, "Bearer abc"),
        ({"X-Authorization": "abc"}, "Bearer abc"),
        ({"X-Authorization": "Bearer xyz"}, "Bearer xyz"),
    ],
)
async def test_credential_is_passed_with_bearer(setup, sent, forwarded):
    gateway, upstream = setup
    async with gateway.request("GET", "/x", headers=sent) as response:
        assert response.status == 200
    seen = seen_headers(upstream.requests[-1])
    assert seen["authorization"] == forwarded
    assert "x-authorization" not in seen


async def test_expired_jwt_is_401_before_the_upstream(setup):
    gateway, upstream = setup
    token = make_jwt(
        {"exp": int(time.time()) - 60, "https://api.openai.com/auth": {"user_id": "u"}}
    )
    async with gateway.request(
        "GET", "/x", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 401
        error = (await response.json())["error"]
    assert "expired" in error["message"]
    assert token not in json.dumps(error)
    assert upstream.requests == []


async def test_valid_jwt_passes(setup):
    gateway, upstream = setup
    token = make_jwt({"exp": int(time.time()) + 3600})
    async with gateway.request("GET", "/x", headers={"Authorization": token}) as response:
        assert response.status == 200
    assert seen_headers(upstream.requests[-1])["authorization"] == f"Bearer {token}"


@pytest.mark.parametrize("empty", [{}, {"Authorization": "Bearer "}, {"Authorization": "  "}])
async def test_no_credential_passes_unless_required(setup, serve_app, start_gateway, empty):
    gateway, upstream = setup
    async with gateway.request("GET", "/x", headers=empty) as response:
        assert response.status == 200
    assert "authorization" not in seen_headers(upstream.requests[-1])
    strict = await start_gateway(
        config(await serve_app(Upstream().app), "require_credential = true")
    )
    async with strict.request("GET", "/x") as response:
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "authentication_error"


def test_jwt_payload_is_url_safe_base64():
    # A payload whose standard base64 would contain '+' or '/' must still decode.
    claims = {"exp": 2000000000, "name": "\u00ff\u00fe>>>???"}
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    assert "-" in raw or "_" in raw
    assert jwt_expiry(f"h.{raw.rstrip('=')}.s") == 2000000000


@pytest.mark.parametrize("token", ["sk-plainkey", "a.b", "a.!!!.c", "a.bm90IGpzb24.c", "a.W10.c"])
def test_non_jwts_have_no_expiry(token):
    assert jwt_expiry(token) is None
