"""Attacks through request bodies: size limits, encodings and hostile JSON.

Bodies over ``max_body_size`` (declared or chunked) are refused with 413 before the
upstream is called.  A route whose pipeline parses JSON (``rewrite`` with
``json_defaults``) must answer 400 in the envelope for anything that is not JSON:
truncated, not JSON at all, nested beyond what the parser can take, invalid UTF-8,
lone surrogates, non-standard numbers, duplicate keys.  A compressed body must
reach the upstream as the bytes its headers describe, and ``Expect: 100-continue``
must get its interim answer (or the final one at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import zlib

import pytest

from gateway import jsonbody
from gateway.keys import key_digest, new_key
from tests.adversarial.rawhttp import RawConnection
from tests.adversarial.support import (
    BASE_CONFIG,
    JSON_ROUTE,
    assert_envelope,
    keys_config,
    request,
)


@pytest.fixture
async def json_target(make_target):
    """A JSON route with room for big bodies (100k nested arrays are 200 kB)."""
    config = BASE_CONFIG.replace('max_body_size = "64KiB"', 'max_body_size = "1MiB"')
    return await make_target(config, JSON_ROUTE)


def post_json(body: bytes, path: str = "/json", *headers: str) -> bytes:
    return request("POST", path, "Content-Type: application/json", *headers, body=body)


def chunked(body: bytes, size: int = 4096) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# --- size limits (max_body_size = 64 KiB) ------------------------------------------


async def test_declared_length_over_the_limit_is_413_before_the_upstream(target):
    head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n"
    (answer,), closed = await target.converse(head + b"x" * 65537)
    assert_envelope(answer, 413, "payload_too_large")
    assert answer.header("Connection") == "close" and closed
    assert target.nothing_reached_upstream()


async def test_declared_length_over_the_limit_is_413_without_sending_the_body(target):
    head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
    (answer,), _ = await target.converse(head)
    assert_envelope(answer, 413, "payload_too_large")
    assert target.nothing_reached_upstream()


async def test_chunked_body_over_the_limit_is_413_before_the_upstream(target):
    head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    (answer,), closed = await target.converse(head + chunked(b"y" * (64 * 1024 + 1)))
    assert_envelope(answer, 413, "payload_too_large")
    assert closed
    assert target.nothing_reached_upstream()


async def test_chunked_body_over_the_limit_in_one_huge_chunk_is_413(target):
    head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    (answer,), _ = await target.converse(head + chunked(b"z" * 70000, 70000))
    assert_envelope(answer, 413, "payload_too_large")
    assert target.nothing_reached_upstream()


async def test_chunked_body_at_the_limit_is_forwarded_whole(target):
    body = os.urandom(64 * 1024)
    head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    (answer,), _ = await target.converse(head + chunked(body, 1000))
    assert answer.status == 200
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", body)]


# --- JSON that is not JSON ---------------------------------------------------------

NOT_JSON = {
    "truncated": b'{"model": "m", "messages": [1, 2',
    "not-json": b"hello, world",
    "trailing-garbage": b'{"a": 1} {"b": 2}',
    "single-quotes": b"{'a': 1}",
    "trailing-comma": b'{"a": 1,}',
    "comment": b'{"a": 1 /* no */}',
    "invalid-utf8": b'{"a": "\xff\xfe"}',
    "overlong-utf8": b'{"a": "\xc0\xaf"}',
    "truncated-utf8": b'{"a": "\xe2\x82"}',
    "raw-control-char": b'{"a": "\x01"}',
    "huge-integer": b'{"a": ' + b"9" * 5000 + b"}",
    "huge-negative-integer": b'{"a": -' + b"9" * 5000 + b"}",
    "bad-escape": b'{"a": "\\x41"}',
}


@pytest.mark.parametrize("body", NOT_JSON.values(), ids=NOT_JSON.keys())
async def test_bodies_that_are_not_json_are_400(json_target, body):
    (answer,), _ = await json_target.converse(post_json(body))
    error = assert_envelope(answer, 400, "bad_request")
    assert "not valid JSON" in error["message"]
    assert json_target.nothing_reached_upstream()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"messages": ' + b"[" * 1_000 + b"]" * 1_000 + b"}",
    ],
    ids=["100k-arrays", "100k-objects", "1k-arrays-in-an-object"],
)
async def test_deeply_nested_json_is_400(json_target, body):
    (answer,), _ = await json_target.converse(post_json(body))
    assert_envelope(answer, 400, "bad_request")
    assert json_target.nothing_reached_upstream()


@pytest.mark.parametrize(
    "body",
    [b'{"a": "\\ud800"}', b'{"a": "\\udfff x"}', b'{"a": "\xed\xa0\x80"}'],
    ids=["escaped-high-surrogate", "escaped-low-surrogate", "cesu-8-bytes"],
)
async def test_lone_surrogates_are_400(json_target, body):
    (answer,), _ = await json_target.converse(post_json(body))
    assert_envelope(answer, 400, "bad_request")
    assert json_target.nothing_reached_upstream()


@pytest.mark.parametrize(
    "number",
    [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"9" * 400 + b".5"],
    ids=["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "400-digit-float"],
)
async def test_numbers_json_cannot_carry_are_400(json_target, number):
    (answer,), _ = await json_target.converse(post_json(b'{"a": ' + number + b"}"))
    if answer.status == 200:  # what reached the upstream must at least be JSON
        (seen,) = json_target.recorder.requests
        json.loads(seen.body, parse_constant=lambda name: pytest.fail(f"{name} upstream"))
    assert_envelope(answer, 400, "bad_request")


LEGAL_ODDITIES = {
    "empty": (b"", b""),
    "whitespace": (b" \r\n\t", b" \r\n\t"),
    "top-level-array": (b"[1, 2]", b"[1, 2]"),
    "top-level-string": (b'"s"', b'"s"'),
    "escaped-nul": (b'{"a": "\\u0000"}', b'{"a": "\\u0000", "added": true}'),
    "big-but-legal-integer": (b'{"a": ' + b"9" * 4000 + b"}", None),
    "deep-but-fine": (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", None),
}


@pytest.mark.parametrize(("body", "forwarded"), LEGAL_ODDITIES.values(), ids=LEGAL_ODDITIES.keys())
async def test_legal_json_oddities_are_forwarded(json_target, body, forwarded):
    (answer,), _ = await json_target.converse(post_json(body))
    assert answer.status == 200
    (seen,) = json_target.recorder.requests
    if forwarded is not None:
        assert seen.body == forwarded
    else:
        assert json.loads(seen.body) == {**json.loads(body), "added": True}


async def test_duplicate_keys_cannot_smuggle_a_forbidden_model(make_target):
    key, _ = new_key()
    config = BASE_CONFIG.replace('["access_log"]', '["access_log", "auth"]') + (
        f'[plugins.auth]\nmode = "keys"\n'
        f'keys.bob = {{ sha256 = "{key_digest(key)}", models = ["small-model"] }}\n'
    )
    target = await make_target(config)
    body = b'{"model": "big-model", "model": "small-model"}'
    (answer,), _ = await target.converse(
        post_json(body, "/public/v1/chat", f"Authorization: Bearer {key}")
    )
    if answer.status == 200:
        (seen,) = target.recorder.requests
        assert b"big-model" not in seen.body
    else:
        assert_envelope(answer, 400)
        assert target.nothing_reached_upstream()


# --- compressed request bodies -----------------------------------------------------

# Padding that gzip compresses, with a request after it, to exactly the padding's
# length: were the gateway to send the inflated bytes under the compressed length,
# the upstream would read the padding as the body and the rest as a second request.
SMUGGLED = b"GET /secret HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n\r\n"
PADDING = next(
    b"x" * n for n in range(400) if len(gzip.compress(b"x" * n + SMUGGLED, mtime=0)) == n
)
ZIPPED_SMUGGLER = gzip.compress(PADDING + SMUGGLED, mtime=0)


async def test_a_request_hidden_in_a_gzip_body_never_reaches_the_upstream(target):
    (answer,), _ = await target.converse(
        request("POST", "/public/x", "Content-Encoding: gzip", body=ZIPPED_SMUGGLER), linger=0.3
    )
    assert answer.status == 200
    assert [s.raw_path for s in target.recorder.requests] == ["/public/x"]
    assert b"/secret" not in target.tap.received
    assert [line for line, _ in target.tap.requests()] == [b"POST /public/x HTTP/1.1"]


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
)
async def test_compressed_bodies_reach_the_upstream_as_sent(target, encoding, compress):
    body = compress(b'{"text": "' + b"hello " * 200 + b'"}')
    (answer,), _ = await target.converse(
        request("POST", "/public/x", f"Content-Encoding: {encoding}", body=body)
    )
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert seen.headers["Content-Encoding"] == encoding
    assert int(seen.headers["Content-Length"]) == len(body)
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", body)]


async def test_an_incompressible_gzip_body_is_not_left_hanging_upstream(target):
    body = gzip.compress(os.urandom(2000))  # longer than what it inflates to
    (answer,), _ = await target.converse(
        request("POST", "/public/x", "Content-Encoding: gzip", body=body)
    )
    assert answer.status == 200
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", body)]


async def test_a_compressed_body_cannot_inflate_past_the_limit_upstream(make_target):
    config = BASE_CONFIG.replace('max_body_size = "64KiB"', 'max_body_size = "1MiB"')
    target = await make_target(config)
    # Over 256 KiB compressed, so it is streamed; 8 MiB once inflated.
    bomb = gzip.compress(os.urandom(300 * 1024) + bytes(8 * 1024 * 1024), mtime=0)
    assert 256 * 1024 < len(bomb) < 1024 * 1024
    (answer,), _ = await target.converse(
        request("POST", "/public/x", "Content-Encoding: gzip", body=bomb), linger=0.3
    )
    assert answer.status in (200, 413)
    assert len(target.tap.received) < 1024 * 1024 + 4096


# --- Expect: 100-continue -------------------------------------------------------------


async def test_expect_100_continue_gets_an_interim_answer(target):
    async with await RawConnection.open(target.port) as connection:
        await connection.send(
            request("POST", "/public/x", "Expect: 100-continue", "Content-Length: 5")
        )
        interim = b""
        with contextlib.suppress(TimeoutError):
            interim = await connection.read_some(1.5)  # 2 s is the idle timeout here
        assert interim.startswith(b"HTTP/1.1 100 "), interim[:60]
        await connection.send(b"hello")
        answer = await connection.read_response(5)
    assert answer.status == 200
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", b"hello")]


async def test_expect_100_continue_over_the_limit_is_413_at_once(target):
    (answer,), _ = await target.converse(
        request("POST", "/public/x", "Expect: 100-continue", "Content-Length: 500000")
    )
    assert_envelope(answer, 413, "payload_too_large")
    assert target.nothing_reached_upstream()


# --- chunked bodies stream like bodies of known length ----------------------------


async def tap_holds(target, size: int) -> bool:
    """Whether the upstream has been sent ``size`` bytes within a few seconds."""
    for _ in range(250):
        if len(target.tap.received) >= size:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_a_large_body_reaches_the_upstream_before_the_client_has_sent_it_all(
    make_target, framing
):
    # The README: bodies over 256 KiB stream.  A chunked one was held whole in
    # memory up to max_body_size (8 MiB by default) before the upstream saw a byte.
    config = BASE_CONFIG.replace('max_body_size = "64KiB"', 'max_body_size = "4MiB"')
    target = await make_target(config)
    first, rest = os.urandom(600 * 1024), os.urandom(100 * 1024)
    if framing == "chunked":
        head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        start, end = chunked(first, 65536)[:-5], chunked(rest, 65536)
    else:
        head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (
            len(first) + len(rest)
        )
        start, end = first, rest
    async with await RawConnection.open(target.port) as connection:
        await connection.send(head + start)
        assert await tap_holds(target, len(first)), len(target.tap.received)
        await connection.send(end)
        answer = await connection.read_response(5)
    assert answer.status == 200
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", first + rest)]


async def test_a_streamed_chunked_body_over_the_limit_is_413_and_never_completes(make_target):
    config = BASE_CONFIG.replace('max_body_size = "64KiB"', 'max_body_size = "512KiB"')
    target = await make_target(config)
    head = b"POST /public/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with await RawConnection.open(target.port) as connection:
        await connection.send(head + chunked(os.urandom(400 * 1024), 65536)[:-5])
        assert await tap_holds(target, 256 * 1024)
        with contextlib.suppress(ConnectionError):
            await connection.send(chunked(os.urandom(200 * 1024), 65536))
        answer = await connection.read_response(5)
    assert_envelope(answer, 413, "payload_too_large")
    assert target.recorder.requests == []  # the upstream never got a whole request
    assert await target.idle()


BOB, _ = new_key()


async def test_expect_100_continue_is_met_only_after_auth_has_run(make_target):
    # A client with no key must not be invited to send its 50 kB; one with a key is.
    target = await make_target(keys_config(BOB))
    async with await RawConnection.open(target.port) as connection:
        await connection.send(
            request("POST", "/public/x", "Expect: 100-continue", "Content-Length: 50000")
        )
        answer = await connection.read_response(1.5)
    assert_envelope(answer, 401, "unauthorized")
    assert target.nothing_reached_upstream()
    async with await RawConnection.open(target.port) as connection:
        await connection.send(
            request(
                "POST",
                "/public/x",
                "Expect: 100-continue",
                "Content-Length: 5",
                f"Authorization: Bearer {BOB}",
            )
        )
        interim = await connection.read_response(1.5)
        assert interim.status == 100
        await connection.send(b"hello")
        answer = await connection.read_response(5)
    assert answer.status == 200
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", b"hello")]


# --- large JSON bodies do not stall the loop ---------------------------------------


async def test_a_large_json_body_is_parsed_while_the_loop_serves_others():
    # Ordering, not timing: a task that is ready while the body is parsed gets to
    # run before the parse returns (it cannot when the parse holds the loop).
    body = json.dumps({"messages": [{"role": "user", "n": i} for i in range(100_000)]}).encode()
    assert len(body) > 2 * 1024 * 1024
    turns = 0

    async def other_request() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(other_request())
    await asyncio.sleep(0)
    before = turns
    parsed = await jsonbody.loads_async(body)
    during = turns - before
    task.cancel()
    assert len(parsed["messages"]) == 100_000
    assert during > 0


async def test_a_small_json_body_is_parsed_at_once():
    assert await jsonbody.loads_async(b'{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError):
        await jsonbody.loads_async(b'{"a": 1, "a": 2}' + b" " * (1024 * 1024))
