"""Upstreams that break HTTP: invalid status lines, garbage heads, bad chunk sizes,
bodies shorter than their ``Content-Length``, extra bytes after a body.

A raw asyncio server plays the upstream, byte for byte.  When the client has seen
nothing yet the gateway must answer 502 in the envelope; once the head has gone out
it must abort the client connection, never end the body cleanly.  Bytes an upstream
sends beyond its message must never reach another client.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.adversarial.rawhttp import RawConnection, ScriptedUpstream
from tests.adversarial.support import (
    BASE_CONFIG,
    SSE_ROUTE,
    assert_clean,
    assert_envelope,
    request,
)

BOUND = 5.0


def answer(*parts: bytes, then: str = "close"):
    """A script: write ``parts`` 50 ms apart, then close (or fall silent for a while)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        if then == "hang":
            await asyncio.sleep(BOUND + 1)

    return script


@pytest.fixture
async def behind(start_gateway):
    """``await behind(script)``: a gateway whose one upstream is a `ScriptedUpstream`."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(script, extra: str = ""):
            upstream = await stack.enter_async_context(ScriptedUpstream(script))
            text = (BASE_CONFIG + extra).replace("@URL@", upstream.url).replace("@IDLE@", "2s")
            gateway = await start_gateway(text)
            return gateway.service, upstream

        yield start


async def fetch(service, path: str = "/public/x"):
    async with await RawConnection.open(service.port) as connection:
        await connection.send(request("GET", path))
        response = await connection.read_response(BOUND)
        assert_clean(bytes(connection.received))
    return response, bytes(connection.received)


OK = b"HTTP/1.1 200 OK\r\n"

BROKEN_HEADS = {
    "invalid-status-line": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nhi",
    "not-http": b"hello world\r\n\r\n",
    "nothing": b"",
    "partial-head": OK + b"Content-Le",
    "header-without-colon": OK + b"Broken\r\nContent-Length: 2\r\n\r\nhi",
    "nul-in-header": OK + b"X-A: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
    "huge-header": OK + b"X-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 2\r\n\r\nhi",
    "two-content-lengths": OK + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "negative-content-length": OK + b"Content-Length: -1\r\n\r\nhello",
    "length-and-chunked": OK
    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bad-first-chunk-size": OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
    "http2-settings-frame": b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    "tls-alert": b"\x15\x03\x01\x00\x02\x02\x28",
    # RFC 9112 section 5.2 lets a gateway answer 502 to obsolete line folding.
    "folded-header": OK + b"X-A: a\r\n b\r\nContent-Length: 2\r\n\r\nhi",
}


@pytest.mark.parametrize("data", BROKEN_HEADS.values(), ids=BROKEN_HEADS.keys())
async def test_a_broken_head_is_502_in_the_envelope(behind, data):
    service, upstream = await behind(answer(data))
    response, _ = await fetch(service)
    error = assert_envelope(response, 502, "bad_gateway")
    assert error["type"] == "upstream_error"
    # An idempotent request may be sent once more when a kept-alive connection
    # closed before any answer; never more than that.
    assert upstream.connections in (1, 2)


@pytest.mark.parametrize("data", [b"", OK + b"Content-Le"], ids=["nothing", "partial-head"])
async def test_a_non_idempotent_request_is_never_sent_twice(behind, data):
    service, upstream = await behind(answer(data))
    async with await RawConnection.open(service.port) as connection:
        await connection.send(request("POST", "/public/x", body=b"pay once"))
        response = await connection.read_response(BOUND)
        assert_clean(bytes(connection.received))
    assert_envelope(response, 502, "bad_gateway")
    assert upstream.connections == 1


BROKEN_BODIES = {
    # Past 64 KiB a known-length answer streams (smaller ones go out in one write).
    "length-longer-than-body": (OK + b"Content-Length: 100000\r\n\r\n", b"hello"),
    "chunked-without-last-chunk": (OK + b"Transfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n"),
    "head-only": (OK + b"Transfer-Encoding: chunked\r\n\r\n", b""),
    "sse-without-last-chunk": (
        OK + b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"f\r\ndata: partial\n\n\r\n",
    ),
}


@pytest.mark.parametrize(("head", "body"), BROKEN_BODIES.values(), ids=BROKEN_BODIES.keys())
async def test_a_body_broken_off_aborts_the_client(behind, head, body):
    service, _ = await behind(answer(head, body))
    response, raw = await fetch(service)
    assert response.status == 200
    assert response.aborted and not response.complete
    assert not raw.endswith(b"0\r\n\r\n")


async def test_an_upstream_going_idle_mid_body_aborts_the_client(behind):
    # idle_timeout is 1 s in BASE_CONFIG.
    head = OK + b"Content-Length: 100000\r\n\r\n"
    service, _ = await behind(answer(head, b"hello", then="hang"))
    response, _ = await fetch(service)
    assert response.status == 200 and response.body == b"hello"
    assert response.aborted


@pytest.mark.parametrize(("then", "status"), [("close", 502), ("hang", 504)])
async def test_a_small_answer_broken_off_is_a_clean_error(behind, then, status):
    # A small answer of known length is sent in one write: nothing went out yet.
    service, _ = await behind(answer(OK + b"Content-Length: 100\r\n\r\n", b"hello", then=then))
    response, raw = await fetch(service)
    assert response.status == status and response.complete
    assert b'"type": "upstream_error"' in raw


@pytest.mark.parametrize("then", ["close", "hang"])
async def test_a_bad_chunk_size_mid_body_aborts_the_client(behind, then):
    service, _ = await behind(
        answer(OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"zz\r\nhi\r\n", then=then)
    )
    async with await RawConnection.open(service.port) as connection:
        await connection.send(request("GET", "/public/x"))
        # idle_timeout is 1 s: a gateway that works aborts well within 2.5 s.
        response = await connection.read_response(2.5)
    assert response.status == 200 and response.body == b"hello"
    assert response.aborted


@pytest.mark.parametrize("status", [b"099", b"600", b"999"])
async def test_an_invalid_upstream_status_is_502(behind, status):
    service, _ = await behind(
        answer(b"HTTP/1.1 " + status + b" Odd\r\nContent-Length: 2\r\n\r\nhi")
    )
    async with await RawConnection.open(service.port) as connection:
        await connection.send(request("GET", "/public/x", "Connection: close"))
        await connection.server_closed(BOUND)
        raw = bytes(connection.received)
    assert_clean(raw)
    assert raw.startswith(b"HTTP/1.1 502 "), raw[:40]


TOLERATED = {
    "close-delimited": (OK + b"Content-Type: text/plain\r\n\r\nhello ", b"world", b"hello world"),
    "http10-close-delimited": (b"HTTP/1.0 200 OK\r\n\r\n", b"hello", b"hello"),
    "continue-then-ok": (
        b"HTTP/1.1 100 Continue\r\n\r\n",
        OK + b"Content-Length: 2\r\n\r\nhi",
        b"hi",
    ),
}


@pytest.mark.parametrize(("head", "rest", "body"), TOLERATED.values(), ids=TOLERATED.keys())
async def test_tolerated_upstream_answers_end_cleanly(behind, head, rest, body):
    service, _ = await behind(answer(head, rest))
    response, _ = await fetch(service)
    assert response.status == 200
    assert response.complete and response.body == body


async def test_bytes_after_a_body_never_reach_another_client(behind):
    # The upstream appends a second answer to its first: if the gateway put the
    # connection back in its pool, the next client would be served "smuggled".
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        smuggled = OK + b"Content-Length: 8\r\n\r\nsmuggled"
        writer.write(OK + b"Content-Length: 5\r\n\r\nhello" + smuggled)
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            while await asyncio.wait_for(reader.read(65536), 1):
                writer.write(OK + b"Content-Length: 6\r\n\r\nhonest")

    service, upstream = await behind(script)
    bodies = [(await fetch(service, f"/public/{i}"))[0].body for i in range(3)]
    assert b"smuggled" not in b"".join(bodies)
    assert set(bodies) <= {b"hello", b"honest"}
    assert upstream.connections >= 1


SSE_HEAD = OK + b"Content-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"


@pytest.mark.parametrize(
    "events",
    [
        b"data: \xff\xfe\n\n",
        b"data: " + b"x" * 100_000 + b"\n\n",
        b"retry: 99999999999999999999999999\ndata: x\n\n",
        b"\r\r\n\n\r\n",
        b":" * 1000 + b"\n\n",
        b"event: ping\ndata: {}\n\ndata: torn",
    ],
    ids=["invalid-utf8", "huge-event", "huge-retry", "blank-lines", "comment", "torn-last"],
)
async def test_odd_events_pass_the_event_hooks(behind, events):
    service, _ = await behind(answer(SSE_HEAD % len(events) + events), SSE_ROUTE)
    response, _ = await fetch(service, "/events/x")
    assert response.status == 200 and response.complete
    assert response.body == events.replace(b"event: ping\ndata: {}\n\n", b"")


@pytest.mark.parametrize("retry", ["\u00b2", "9" * 5000], ids=["superscript-two", "5000-digits"])
async def test_a_retry_int_cannot_parse_passes_the_event_hooks(behind, retry):
    events = f"retry: {retry}\ndata: x\n\n".encode()
    service, _ = await behind(answer(SSE_HEAD % len(events) + events), SSE_ROUTE)
    response, _ = await fetch(service, "/events/x")
    assert response.status == 200
    assert response.body == events


# --- Transfer-Encoding the gateway and llhttp must read alike ------------------------


@pytest.mark.parametrize(
    "coding",
    [
        b"xchunked",
        b"gzip;chunked",
        b"chunked\t",
        b"gzip, chunked",
        b"chunked, chunked",
        b"identity",
    ],
)
async def test_a_transfer_encoding_other_than_chunked_is_502(behind, coding):
    # The gateway took "ends with chunked" for chunked while llhttp did not: the two
    # parsers disagreed on where the answer ends.  Only "chunked" itself is framing.
    body = b"5\r\nhello\r\n0\r\n\r\n"
    head = OK + b"Transfer-Encoding: " + coding + b"\r\nConnection: close\r\n\r\n"
    service, _ = await behind(answer(head + body))
    response, _ = await fetch(service)
    assert_envelope(response, 502, "bad_gateway")


@pytest.mark.parametrize("coding", [b"chunked", b"Chunked", b"CHUNKED", b" chunked"])
async def test_chunked_in_any_case_is_read_as_chunked(behind, coding):
    head = OK + b"Transfer-Encoding: " + coding + b"\r\n\r\n"
    service, _ = await behind(answer(head + b"5\r\nhello\r\n0\r\n\r\n"))
    response, _ = await fetch(service)
    assert response.status == 200 and response.complete and response.body == b"hello"


# --- interim answers ------------------------------------------------------------------


async def test_an_upstream_dripping_100_continue_forever_is_cut_off(behind):
    # Each interim head used to reset both the idle timer and the head-size count.
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2000):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    service, _ = await behind(drip)
    async with await RawConnection.open(service.port) as connection:
        await connection.send(request("GET", "/public/x"))
        response = await connection.read_response(BOUND)
        assert_clean(bytes(connection.received))
    assert_envelope(response, 502, "bad_gateway")


async def test_a_few_interim_answers_are_fine(behind):
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    service, _ = await behind(answer(interim * 2, OK + b"Content-Length: 2\r\n\r\nhi"))
    response, _ = await fetch(service)
    assert response.status == 200 and response.body == b"hi"


# --- heads passed on as they came ------------------------------------------------------


@pytest.mark.parametrize("length", [1000, 200_000])
async def test_a_head_answer_keeps_the_upstreams_content_length(behind, length):
    head = OK + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
    service, _ = await behind(answer(head))
    async with await RawConnection.open(service.port) as connection:
        await connection.send(request("HEAD", "/public/x"))
        response = await connection.read_response(BOUND, head=True)
        assert not await connection.server_closed(0.1)  # no body follows, the connection lives
    assert response.status == 200
    assert response.header("Content-Length") == str(length)


@pytest.mark.parametrize("length", [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"])
async def test_an_answer_without_content_type_gets_none_invented(behind, length):
    body = b"hello" if length.startswith(b"Content") else b"5\r\nhello\r\n0\r\n\r\n"
    service, _ = await behind(answer(OK + length + b"\r\n" + body))
    response, _ = await fetch(service)
    assert response.status == 200 and response.body == b"hello"
    assert response.header("Content-Type") is None
