"""No secret reaches a log line, an error body or a metric: a canary for each kind.

A client key, an upstream token, a login password and a proxy password, each a
unique canary string, go through right and wrong uses; then every captured log
entry (all levels), every answer (head and body) and the /metrics output are
searched for them.
"""

from __future__ import annotations

from aiohttp import web
from structlog.testing import capture_logs

from gateway.keys import key_digest
from gateway.testing import start_simulator
from tests.upstreams import Upstream

CLIENT_KEY = "gw-canary-client-key-4f1d"
UPSTREAM_TOKEN = "canary-upstream-token-9a7e"
REFUSED_TOKEN = "canary-refused-token-3c2b"
LOGIN_PASSWORD = "canary-login-password-77aa"
PROXY_PASSWORD = "canary-proxy-password-5e0f"
CANARIES = (CLIENT_KEY, UPSTREAM_TOKEN, REFUSED_TOKEN, LOGIN_PASSWORD, PROXY_PASSWORD)


def config(upstream: str, sim, proxy_url: str, prefix: str) -> str:
    return f"""
pipeline = ["access_log", "metrics", "auth", "ratelimit", "upstream_proxy"]
[server]
log_level = "debug"
[plugins.auth]
mode = "keys"
keys.alice = {{ sha256 = "{key_digest(CLIENT_KEY)}", team = "t" }}
credentials.up = [
  {{ name = "refused-one", token = "{REFUSED_TOKEN}" }},
  {{ name = "good-one", token = "{UPSTREAM_TOKEN}" }},
]
[plugins.ratelimit]
key_prefix = "{prefix}"
[[plugins.ratelimit.rules]]
name = "tiny"
key = "identity"
rate = "3/h"
burst = 3
routes = ["up"]
[plugins.chatgpt_login]
web_url = "{sim.web_url}"
auth0_url = "{sim.auth0_url}"
[upstreams.up]
url = "{upstream}"
[upstreams.proxied]
url = "{upstream}"
proxy = "{proxy_url}"
[upstreams.chatgpt]
url = "{sim.chatgpt_url}"
[routes.login]
methods = ["POST"]
path = "/auth/login"
upstream = "chatgpt"
skip = ["auth"]
pipeline = ["chatgpt_login"]
[routes.metrics]
path = "/metrics"
skip = ["auth", "ratelimit", "upstream_proxy"]
[routes.proxied]
path = "/proxied/{{rest*}}"
upstream = "proxied"
skip = ["auth"]
[routes.up]
path = "/{{rest*}}"
upstream = "up"
"""


class RefusingUpstream(Upstream):
    """Answers 401 to the refused credential, a plain 200 otherwise (it echoes nothing)."""

    async def echo(self, request):  # type: ignore[override]
        await self.record(request)
        if request.headers.get("Authorization") == f"Bearer {REFUSED_TOKEN}":
            # As OpenAI says it: the code is what sets a pooled credential aside.
            error = {"message": "Incorrect API key provided", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        return web.json_response({"ok": True})


async def test_no_canary_in_logs_answers_or_metrics(serve_app, start_gateway, start_proxy):
    upstream = RefusingUpstream()
    url = await serve_app(upstream.app)
    proxy = await start_proxy("socks5", "proxyuser", PROXY_PASSWORD)
    wrong_proxy = proxy.url.replace(PROXY_PASSWORD, PROXY_PASSWORD + "-wrong")
    sim = await start_simulator()
    sim.login.accounts[0].password = LOGIN_PASSWORD
    answers: list[str] = []

    async def call(gateway, method, path, **kwargs):
        async with gateway.request(method, path, **kwargs) as response:
            answers.append(f"{response.status} {dict(response.headers)} {await response.text()}")
            return response.status

    try:
        with capture_logs() as logs:
            for proxy_url in (proxy.url, wrong_proxy):
                prefix = f"canary-{len(answers)}:"  # each gateway its own counters
                gateway = await start_gateway(config(url, sim, proxy_url, prefix))
                key = {"Authorization": f"Bearer {CLIENT_KEY}"}
                statuses = [await call(gateway, "GET", "/a", headers=key) for _ in range(4)]
                assert statuses == [200, 200, 200, 429]  # failover on the first, then the limit
                assert (
                    await call(gateway, "GET", "/a", headers={"X-Authorization": CLIENT_KEY + "x"})
                    == 401
                )
                assert await call(gateway, "GET", f"/a?key={CLIENT_KEY}") == 401
                expected = 200 if proxy_url == proxy.url else 502
                assert await call(gateway, "GET", "/proxied/x") == expected
                for password in (LOGIN_PASSWORD, LOGIN_PASSWORD + "-wrong"):
                    body = {"username": sim.login.accounts[0].email, "password": password}
                    assert await call(gateway, "POST", "/auth/login", json=body) in (200, 401)
                assert await call(gateway, "POST", "/auth/login", data=LOGIN_PASSWORD) == 400
                assert await call(gateway, "GET", "/metrics") == 200
    finally:
        await sim.close()

    assert any("refused-one" in repr(entry) for entry in logs)  # credentials logged by name
    # The good credential really went upstream: the canary was live, not absent.
    assert any(
        ("Authorization", f"Bearer {UPSTREAM_TOKEN}") in r["headers"] for r in upstream.requests
    )
    assert any(entry.get("event") == "request" for entry in logs)
    haystacks = {"logs": repr(logs), "answers": "\n".join(answers)}
    for where, text in haystacks.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} leaked into {where}"
