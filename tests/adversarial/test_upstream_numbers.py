"""Numbers an upstream chooses: ``Retry-After`` and ``x-ratelimit-reset-*`` on a 429.

A raw upstream rate-limits one pooled credential with hostile values (400 digits,
``²``, eleven digits, a date in the year 9999, a reset of a million hours).  The
gateway must read them strictly and clamp them to ``max_retry_after``: the pool
keeps working, no answer is a 500, and every ``Retry-After`` a client gets is a
whole number of seconds within the maximum.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from structlog.testing import capture_logs

from gateway.keys import key_digest
from tests.adversarial.rawhttp import RawConnection, ScriptedUpstream
from tests.adversarial.support import assert_clean, request

KEY = "gw-adversarial-test-key"
MAX = 600  # max_retry_after, in seconds

HOSTILE = {
    "400-digits": b"Retry-After: " + b"9" * 400,
    "10000-digits": b"Retry-After: " + b"9" * 10_000,
    "superscript-two": "Retry-After: ²".encode(),
    "eleven-digits": b"Retry-After: 99999999999",
    "year-9999": b"Retry-After: Fri, 31 Dec 9999 23:59:59 GMT",
    "reset-hours": b"x-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 999999h",
    "reset-superscript": "x-ratelimit-reset-tokens: ²s".encode(),
}
LIMITED = json.dumps(
    {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
).encode()


def config(url: str, tokens: list[str]) -> str:
    credentials = ", ".join(f'{{ name = "{t}", token = "{t}" }}' for t in tokens)
    return f"""
pipeline = ["access_log", "auth"]
[plugins.auth]
mode = "keys"
keys.tester = {{ sha256 = "{key_digest(KEY)}" }}
credentials.up = [{credentials}]
max_retry_after = "{MAX}s"
[upstreams.up]
url = "{url}"
connect_timeout = "1s"
idle_timeout = "2s"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


def hostile_upstream(header: bytes) -> ScriptedUpstream:
    """Rate-limits the credential ``limited`` with ``header``; answers anything else 200."""

    async def script(reader, writer):
        if b"Bearer limited" in upstream.heads[-1]:
            head, body = b"429 Too Many Requests\r\n" + header, LIMITED
        else:
            head, body = b"200 OK", b'{"ok": true}'
        writer.write(
            b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%b" % (head, len(body), body)
        )
        await writer.drain()

    upstream = ScriptedUpstream(script)
    return upstream


async def fetch(port: int):
    async with await RawConnection.open(port) as connection:
        await connection.send(request("GET", "/x", f"Authorization: Bearer {KEY}"))
        response = await connection.read_response(5)
        assert_clean(bytes(connection.received))
    return response


def assert_sane_retry_after(response) -> None:
    value = response.header("Retry-After")
    assert value is not None and value.isascii() and value.isdigit(), value
    assert 1 <= int(value) <= MAX


@pytest.mark.parametrize("header", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_reset_times_are_clamped_and_the_pool_keeps_working(start_gateway, header):
    async with contextlib.AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(hostile_upstream(header))
        pooled = await start_gateway(config(upstream.url, ["limited", "spare"]))
        alone = await start_gateway(config(upstream.url, ["limited"]))
        with capture_logs() as logs:
            # Two credentials: the limited one cools, the request and the next ones pass.
            for _ in range(3):
                assert (await fetch(pooled.service.port)).status == 200
            # One credential: the client gets the 429, then the gateway repeats it.
            for _ in range(2):
                response = await fetch(alone.service.port)
                assert response.status == 429
                assert response.json()["error"]["code"] == "rate_limit_exceeded"
                assert_sane_retry_after(response)
    cooling = [e for e in logs if e["event"] == "upstream credential cooling"]
    assert len(cooling) == 2  # once per gateway: later requests spared the upstream
    assert all(0 < e["seconds"] <= MAX for e in cooling)
