"""The SSE parser: whole events whatever the chunking, raw bytes kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.api import SSEEvent
from gateway.sse import SSEParser, parse_event

STREAM = (
    b"event: ping\ndata: {}\n\n"
    b": a comment\n\n"
    b'data: {"message": {"content": {"parts": ["Hel"]}}}\r\n\r\n'
    b"id: 7\nretry: 1500\ndata: line one\ndata: line two\n\n"
    b"data:no-space\r\rdata: [DONE]\n\n"
)


def parse_all(chunks: list[bytes]) -> list[tuple[SSEEvent | None, bytes]]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return events


def test_fields_are_parsed():
    events = [e for e, _ in parse_all([STREAM])]
    assert events[0] == SSEEvent(data="{}", event="ping")
    assert events[1] is None  # the comment block
    assert events[2].json() == {"message": {"content": {"parts": ["Hel"]}}}
    assert events[3] == SSEEvent(data="line one\nline two", id="7", retry=1500)
    assert events[4] == SSEEvent(data="no-space")
    assert events[5].data == "[DONE]"


def test_raw_bytes_rebuild_the_stream():
    assert b"".join(raw for _, raw in parse_all([STREAM])) == STREAM


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_chunking_gives_the_same_events(cuts):
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert parse_all(chunks) == parse_all([STREAM])


def test_a_torn_last_event_is_passed_on_as_bytes():
    parser = SSEParser()
    assert parser.feed(b"data: whole\n\ndata: torn") == [
        (SSEEvent(data="whole"), b"data: whole\n\n")
    ]
    assert parser.flush() == [(None, b"data: torn")]


def test_a_cr_at_the_chunk_end_waits_for_its_lf():
    parser = SSEParser()
    assert parser.feed(b"data: a\r\n\r") == []
    assert parser.feed(b"\ndata: b\r\n\r\n") == [
        (SSEEvent(data="a"), b"data: a\r\n\r\n"),
        (SSEEvent(data="b"), b"data: b\r\n\r\n"),
    ]


def test_encode_round_trips():
    event = SSEEvent(data="x\ny", event="message", id="3", retry=10)
    assert parse_event(event.encode().decode().rstrip("\n")) == event


def test_invalid_utf8_does_not_break_parsing():
    events = parse_all([b"data: \xff\xfe\n\n"])
    assert events[0][0] is not None and events[0][1] == b"data: \xff\xfe\n\n"
