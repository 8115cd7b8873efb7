"""Upstream event streams built to exhaust the SSE parser: events with no end.

The parser must be linear in its input (an event that never ends used to be
rescanned whole on every chunk: 64 MiB took 24 s of CPU) and bound one event's
size with ``server.max_event_size``: an over-long event ends the stream with an
error event (or a 502 when the client has seen nothing yet) and a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from structlog.testing import capture_logs

from gateway.sse import EventTooLarge, SSEParser
from tests.adversarial.rawhttp import RawConnection, RawResponse, ScriptedUpstream
from tests.adversarial.support import BASE_CONFIG, SSE_ROUTE, assert_clean, assert_envelope, request

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_an_event_that_never_ends_is_parsed_in_linear_time():
    # 32 MiB in 512-byte chunks: a parser that rescans its buffer on every chunk
    # would scan about 1 TB and never finish; a linear one takes well under a second.
    # (A bound on "it ends", far from the figure: bench/README has the figures.)
    parser = SSEParser(max_event_size=64 * 1024 * 1024)
    piece = b"data: " + b"x" * 506
    deadline = time.process_time() + 20
    for _ in range(64 * 1024):
        assert parser.feed(piece) == []
        assert time.process_time() < deadline, "the parser rescans what it has seen"
    (event, raw), *rest = parser.feed(b"\n\n")
    assert rest == [] and len(raw) == 32 * 1024 * 1024 + 2
    assert event is not None and len(event.data) == 32 * 1024 * 1024 - 6


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_an_event_over_the_bound_raises_however_it_arrives(split):
    parser = SSEParser(max_event_size=10_000)
    stream = b"data: ok\n\n" + b"data: " + b"y" * 20_000 + b"\n\n"
    events = []
    with pytest.raises(EventTooLarge):
        for start in range(0, len(stream), split):
            events += parser.feed(stream[start : start + split])
    assert [raw for _, raw in events] == [b"data: ok\n\n"]


def test_an_event_at_the_bound_passes():
    parser = SSEParser(max_event_size=1000)
    event = b"data: " + b"z" * 992 + b"\n\n"
    assert len(event) == 1000
    assert [raw for _, raw in parser.feed(event)] == [event]


@pytest.fixture
async def events_behind(start_gateway):
    """``await events_behind(script)``: a gateway with an event hook route, 64 KiB events."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(script):
            upstream = await stack.enter_async_context(ScriptedUpstream(script))
            config = BASE_CONFIG + SSE_ROUTE + ""
            config = config.replace("[server]", '[server]\nmax_event_size = "64KiB"')
            text = config.replace("@URL@", upstream.url).replace("@IDLE@", "2s")
            return (await start_gateway(text)).service

        yield start


def endless(first: bytes):
    """A script: ``first``, then an event that never ends, 8 KiB at a time, until cut off."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + (chunk(first) if first else b"") + chunk(b"data: "))
        for _ in range(1000):  # 8 MiB at most
            writer.write(chunk(b"x" * 8192))
            await writer.drain()
            await asyncio.sleep(0)

    return script


async def fetch_logged(service) -> tuple[RawResponse, list[dict]]:
    """GET /events/x: the answer, checked clean, and what was logged meanwhile."""
    with capture_logs() as logs:
        async with await RawConnection.open(service.port) as connection:
            await connection.send(request("GET", "/events/x"))
            answer = await connection.read_response(5)
            assert_clean(bytes(connection.received))
    return answer, logs


async def test_an_over_long_event_ends_a_started_stream_with_an_error_event(events_behind):
    service = await events_behind(endless(b"data: one\n\n"))
    answer, logs = await fetch_logged(service)
    assert answer.status == 200 and answer.complete
    first, error, tail = answer.body.split(b"\n\n")
    assert first == b"data: one" and tail == b""
    assert error.startswith(b"data: ")
    assert json.loads(error[6:])["error"]["code"] == "bad_gateway"
    assert any(entry["event"] == "upstream event too large" for entry in logs), logs
    assert await service.runtime.wait_idle(5)


async def test_an_over_long_first_event_is_a_502(events_behind):
    service = await events_behind(endless(b""))
    answer, logs = await fetch_logged(service)
    assert_envelope(answer, 502, "bad_gateway")
    assert any(entry["event"] == "upstream event too large" for entry in logs), logs
