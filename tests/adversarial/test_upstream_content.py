"""Upstream content that the body hooks parse, built to break them.

``imitate`` reads ChatGPT's events, error bodies and model list; the token meter
(``ratelimit`` token quotas) reads JSON answers and events.  An upstream is a third
party: JSON nested thousands deep, fields of the wrong type, bytes that are not
JSON must give a 502 (or the upstream's answer, or an error event), never a 500,
and no traceback logged at error level.  The last test is the property behind all
of them: hostile tokens, headers and upstream answers through the real pipeline
(keys mode with a token quota, ``imitate``, ``rewrite``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.keys import key_digest, new_key
from tests.adversarial.rawhttp import RawConnection, ScriptedUpstream
from tests.adversarial.support import assert_clean

CLIENT_KEY, _ = new_key()
CONFIG = f"""
pipeline = ["access_log", "auth", "ratelimit"]
[server]
max_header_size = "64KiB"
client_idle_timeout = "2s"
[plugins.auth]
mode = "keys"
disable_for = "1ms"
cooldown = "1ms"
credentials.up = [{{ name = "main", token = "upstream-secret" }}]
keys.alice = {{ sha256 = "{key_digest(CLIENT_KEY)}" }}
[[plugins.ratelimit.rules]]
name = "tokens"
key = "identity"
tokens = 1000000000
period = "day"
[upstreams.up]
url = "@URL@"
connect_timeout = "1s"
idle_timeout = "1s"
[routes.imitate]
path = "/imitate/v1/{{rest*}}"
upstream = "up"
pipeline = ["imitate"]
[routes.openai]
path = "/v1/{{rest*}}"
upstream = "up"
pipeline = ["rewrite"]
[routes.openai.plugins.rewrite]
drop_events = ["ping"]
json_defaults = {{ "user" = "gateway" }}
"""
DEEP = b"[" * 50_000 + b"]" * 50_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


class Upstream:
    """A raw upstream that answers every request with ``self.answer`` and closes."""

    def __init__(self) -> None:
        self.answer = b""

    async def script(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.answer)
        await writer.drain()


def answer(status: int, content_type: str | None, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + body


def events(*data: bytes) -> bytes:
    return b"".join(b"data: " + d + b"\n\n" for d in data)


@pytest.fixture
async def hostile(start_gateway):
    """``(upstream, port)``: the pipeline in front of an upstream a test scripts."""
    upstream = Upstream()
    async with ScriptedUpstream(upstream.script) as server:
        gateway = await start_gateway(CONFIG.replace("@URL@", server.url))
        yield upstream, gateway.service.port


CHAT = json.dumps({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]})
STREAM = json.dumps({**json.loads(CHAT), "stream": True})


def call(method: str, path: str, body: str = "", *headers: bytes) -> bytes:
    data = body.encode()
    lines = [
        f"{method} {path} HTTP/1.1".encode(),
        b"Host: gateway.test",
        b"Authorization: Bearer " + CLIENT_KEY.encode(),
        *headers,
    ]
    if data:
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(data)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + data


async def exchange(port: int, data: bytes) -> tuple[int, bytes]:
    """Send one request; the status and everything the gateway sent (checked clean)."""
    async with await RawConnection.open(port) as connection:
        await connection.send(data)
        try:
            status = 100
            while 100 <= status < 200:  # (past a 100 Continue)
                status = (await connection.read_response(5)).status
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            status = 0  # no answer at all, or a stream aborted mid-head
        raw = bytes(connection.received)
    assert_clean(raw)
    return status, raw


def quiet(logs: list[dict]) -> None:
    """Nothing logged at error level, and no traceback anywhere."""
    loud = [e for e in logs if e.get("log_level") in ("error", "critical") or "exc_info" in e]
    assert not loud, loud[:2]


def message(metadata: object, parts: object = ("hi",)) -> bytes:
    return json.dumps(
        {
            "message": {
                "id": "m1",
                "author": {"role": "assistant"},
                "content": {"content_type": "text", "parts": list(parts)},  # type: ignore[call-overload]
                "metadata": metadata,
            },
            "error": None,
        }
    ).encode()


HOSTILE = {
    "metadata-a-list": (
        "/imitate/v1/chat/completions",
        STREAM,
        answer(200, "text/event-stream", events(message([1]), b"[DONE]")),
    ),
    "metadata-a-string": (
        "/imitate/v1/chat/completions",
        CHAT,
        answer(200, "text/event-stream", events(message("x"), b"[DONE]")),
    ),
    "event-nested-deep": (
        "/imitate/v1/chat/completions",
        STREAM,
        answer(200, "text/event-stream", events(DEEP, b"[DONE]")),
    ),
    "error-body-nested-deep": (
        "/imitate/v1/chat/completions",
        CHAT,
        answer(400, "application/json", b'{"detail": ' + DEEP + b"}"),
    ),
    "error-detail-list-nested": (
        "/imitate/v1/chat/completions",
        CHAT,
        answer(422, "application/json", b'{"detail": [{"msg": ' + b"[" * 900 + b"]" * 900 + b"}]}"),
    ),
    "model-list-nested-deep": ("/imitate/v1/models", "", answer(200, "application/json", DEEP)),
    "model-list-object-deep": (
        "/imitate/v1/models",
        "",
        answer(200, "application/json", DEEP_OBJECT),
    ),
    "meter-json-nested-deep": ("/v1/chat/completions", CHAT, answer(200, "application/json", DEEP)),
    "meter-event-nested-deep": (
        "/v1/chat/completions",
        STREAM,
        answer(200, "text/event-stream", events(b'{"a":' * 50_000 + b"1" + b"}" * 50_000)),
    ),
}


@pytest.mark.parametrize(("path", "body", "reply"), HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_upstream_content_is_never_a_500(hostile, path, body, reply):
    upstream, port = hostile
    upstream.answer = reply
    with capture_logs() as logs:
        status, _ = await exchange(port, call("POST" if body else "GET", path, body))
    assert status in (200, 400, 422, 502), status
    quiet(logs)


# --- the property ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
# What ChatGPT's and OpenAI's answers are made of, with any value in any place.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "message": st.fixed_dictionaries(
            {},
            optional={
                "id": json_values,
                "author": st.fixed_dictionaries(
                    {}, optional={"role": st.sampled_from(["assistant", "user"]) | json_values}
                ),
                "content": st.fixed_dictionaries(
                    {},
                    optional={
                        "content_type": st.just("text") | json_values,
                        "parts": st.lists(st.text(max_size=10) | json_values, max_size=3)
                        | json_values,
                    },
                ),
                "metadata": st.fixed_dictionaries({}, optional={"finish_details": json_values})
                | json_values,
                "recipient": json_values,
            },
        ),
        "error": json_values,
        "detail": json_values,
        "models": st.lists(
            st.fixed_dictionaries({}, optional={"slug": json_values}) | json_values, max_size=3
        )
        | json_values,
        "choices": st.lists(
            st.fixed_dictionaries(
                {}, optional={"delta": json_values, "message": json_values, "text": json_values}
            )
            | json_values,
            max_size=3,
        )
        | json_values,
        "usage": st.fixed_dictionaries(
            {}, optional={"total_tokens": json_values, "prompt_tokens": json_values}
        )
        | json_values,
        "type": st.sampled_from(["moderation", "x"]) | json_values,
        "moderation_response": json_values,
    },
)
payloads = st.one_of(
    shaped.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([2, 900, 5000, 30_000]).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([2, 900, 5000, 30_000]).map(lambda n: b'{"detail":' * n + b"1" + b"}" * n),
    st.binary(max_size=40),
    st.just(b"[DONE]"),
)
bodies = st.one_of(
    payloads,
    st.lists(payloads, min_size=1, max_size=4).map(lambda ps: events(*ps)),
    st.lists(payloads, max_size=3).map(lambda ps: events(*ps, b"[DONE]")),
)
replies = st.builds(
    answer,
    st.sampled_from([200, 200, 200, 201, 400, 401, 403, 404, 422, 429, 502, 503]),
    st.sampled_from(["text/event-stream", "application/json", "text/plain", None]),
    bodies,
)
# Mostly the right key, so that most examples reach the upstream; else hostile tokens.
tokens = st.integers(0, 5).flatmap(
    lambda i: (
        st.just(CLIENT_KEY.encode())
        if i < 4
        else st.binary(min_size=1, max_size=30).filter(lambda b: not set(b) & set(b"\r\n\x00"))
        if i == 4
        else st.builds(lambda n: b"e30." + b"W" * n + b".c2ln", st.integers(0, 200))
    )
)
header_values = st.sampled_from([b"1.2.3.4", b"gzip", b"close", b"100-continue", b""]) | st.binary(
    max_size=20
).filter(lambda b: not set(b) & set(b"\r\n\x00"))
header_lines = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"X-Forwarded-For",
                b"traceparent",
                b"Accept-Encoding",
                b"X-A",
                b"Expect",
                b"Connection",
            ]
        ),
        header_values,
    ).map(lambda nv: nv[0] + b": " + nv[1]),
    max_size=2,
)
requests = st.tuples(
    st.sampled_from(
        [
            ("POST", "/imitate/v1/chat/completions", CHAT),
            ("POST", "/imitate/v1/chat/completions", STREAM),
            ("GET", "/imitate/v1/models", ""),
            ("GET", "/imitate/v1/models/gpt-4", ""),
            ("POST", "/v1/chat/completions", STREAM),
            ("POST", "/v1/chat/completions", CHAT),
            ("GET", "/v1/models", ""),
        ]
    ),
    tokens,
    header_lines,
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests, reply=replies)
async def test_no_client_input_and_no_upstream_content_makes_a_500(hostile, request, reply):
    upstream, port = hostile
    (method, path, body), token, headers = request
    upstream.answer = reply
    data = call(method, path, body, *headers).replace(CLIENT_KEY.encode(), token, 1)
    with capture_logs() as logs:
        status, _ = await exchange(port, data)
    assert status == 0 or 200 <= status < 500 or status in (502, 503, 504), status
    quiet(logs)


def test_the_deep_payloads_really_are_too_deep():
    with pytest.raises(RecursionError), contextlib.suppress(ValueError):
        json.loads(DEEP)


@pytest.mark.parametrize(
    ("given", "passed_on"),
    [
        ("30", "30"),
        ("\u00b2", None),
        ("99999", "3600"),
        ("1" + "0" * 400, "3600"),
        ("-5", None),
        ("Fri, 31 Dec", None),
    ],
    ids=["digits", "superscript-two", "clamped", "400-digits", "negative", "a-date"],
)
async def test_imitate_passes_on_only_a_retry_after_it_can_read(start_gateway, given, passed_on):
    # (No credential pool here: how auth's pool reads Retry-After is another matter.)
    upstream = Upstream()
    head = f"HTTP/1.1 429 X\r\nConnection: close\r\nRetry-After: {given}\r\n".encode()
    upstream.answer = head + b"Content-Length: 2\r\n\r\n{}"
    config = CONFIG.replace('pipeline = ["access_log", "auth", "ratelimit"]', "pipeline = []")
    async with ScriptedUpstream(upstream.script) as server:
        gateway = await start_gateway(config.replace("@URL@", server.url))
        async with await RawConnection.open(gateway.service.port) as connection:
            await connection.send(call("POST", "/imitate/v1/chat/completions", CHAT))
            response = await connection.read_response(5)
    assert response.status == 429
    assert response.header("Retry-After") == passed_on
