"""Property tests (Hypothesis) of the pure parts an attacker's bytes go through.

- `gateway.sse.SSEParser`: any chunking of any byte stream gives the same events and
  gives back every byte; generated event streams (CR, LF and CRLF mixed, comments,
  unknown fields) parse to the events they were built from.
- `gateway.interpolate`: ``escape`` round-trips through ``interpolate``, values are
  never expanded twice, and malformed input raises only `InterpolationError`.
- `gateway.headers.strip_hop_by_hop`: whatever the names, their case and the
  ``Connection`` lists, no hop-by-hop header survives and nothing else is lost;
  `upstream_request_headers` lets through no header that identifies the client
  unless asked, and none outside an allow-list.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.api import SSEEvent
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.headers import (
    HOP_BY_HOP,
    identifies_client,
    strip_hop_by_hop,
    upstream_request_headers,
)
from gateway.interpolate import InterpolationError, escape, interpolate
from gateway.sse import SSEParser

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# --- SSE ---------------------------------------------------------------------------


def parse_in_chunks(stream: bytes, cuts: list[int]) -> list[tuple[SSEEvent | None, bytes]]:
    parser = SSEParser()
    points = sorted({min(c, len(stream)) for c in cuts})
    out = []
    for start, end in zip([0, *points], [*points, len(stream)], strict=True):
        out.extend(parser.feed(stream[start:end]))
    out.extend(parser.flush())
    return out


# Bytes biased towards what matters to the parser.
sse_bytes = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b":", b" ", b"data", b"event", b"id", b"retry"])
    | st.binary(max_size=6),
    max_size=60,
).map(b"".join)
cut_points = st.lists(st.integers(min_value=0, max_value=400), max_size=30)


@SETTINGS
@given(sse_bytes, cut_points)
def test_any_chunking_of_any_stream_gives_the_same_events(stream, cuts):
    assert parse_in_chunks(stream, cuts) == parse_in_chunks(stream, [])


@SETTINGS
@given(sse_bytes, cut_points)
def test_the_parser_gives_back_every_byte_in_order(stream, cuts):
    assert b"".join(raw for _, raw in parse_in_chunks(stream, cuts)) == stream


@SETTINGS
@given(st.binary(max_size=300), cut_points)
def test_arbitrary_binary_never_breaks_the_parser(stream, cuts):
    events = parse_in_chunks(stream, cuts)
    assert b"".join(raw for _, raw in events) == stream


value_text = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=12
)
field_line = st.one_of(
    st.tuples(st.just("data"), value_text),
    st.tuples(st.just("data-bare"), st.just("")),  # "data" with no colon: empty data
    st.tuples(st.just("event"), value_text),
    st.tuples(st.just("id"), value_text),
    st.tuples(
        st.just("retry"),
        st.integers(0, 999_999).map(str) | st.text("abc", min_size=1, max_size=3),
    ),
    st.tuples(st.just("comment"), value_text),
    st.tuples(st.just("unknown"), value_text),
)
line_end = st.sampled_from(["\n", "\r", "\r\n"])
event_block = st.lists(st.tuples(field_line, line_end), min_size=1, max_size=6)


def render(blocks: list) -> tuple[bytes, list[SSEEvent | None]]:
    """The stream of ``blocks`` and the events a correct parser finds in it."""
    text, expected, previous_end = "", [], ""
    for lines, blank in blocks:
        data, event, event_id, retry, seen = [], None, None, None, False
        for (kind, value), end in lines:
            if kind == "data-bare":
                text += "data"
            elif kind == "comment":
                text += ":" + value
            elif kind == "unknown":
                text += "x-unknown: " + value
            else:
                text += f"{kind}: {value}"
            text += end
            previous_end = end
            if kind in ("data", "data-bare"):
                data.append(value)
            elif kind == "event":
                event = value
            elif kind == "id":
                event_id = value
            elif kind == "retry":
                retry = int(value) if value.isdigit() else None
            else:
                continue
            seen = True
        # A CR line end followed by an LF blank line would read as one CRLF.
        if previous_end == "\r" and blank == "\n":
            blank = "\r\n"
        text += blank
        expected.append(
            SSEEvent(data="\n".join(data), event=event, id=event_id, retry=retry) if seen else None
        )
    return text.encode(), expected


@SETTINGS
@given(st.lists(st.tuples(event_block, line_end), min_size=1, max_size=6), cut_points)
def test_generated_event_streams_parse_to_their_events(blocks, cuts):
    stream, expected = render(blocks)
    parsed = parse_in_chunks(stream, cuts)
    assert [event for event, _ in parsed] == expected
    assert b"".join(raw for _, raw in parsed) == stream


@pytest.mark.parametrize(
    "value",
    ["\u00b2", "\u00b9\u2070", "\u2460", "9" * 5000],
    ids=["superscript-two", "superscript-ten", "circled-one", "5000-digits"],
)
def test_a_retry_int_cannot_read_does_not_break_the_parser(value):
    parser = SSEParser()
    events = parser.feed(f"retry: {value}\ndata: x\n\n".encode())
    assert events[0][0] == SSEEvent(data="x", retry=None)


# --- interpolation -----------------------------------------------------------------

env_names = st.builds(
    str.__add__,
    st.sampled_from(LETTERS + "_"),
    st.text(LETTERS + "0123456789_", max_size=8),
)
envs = st.dictionaries(env_names, st.text(max_size=10), max_size=5)


@SETTINGS
@given(st.text(max_size=60), envs)
def test_escape_round_trips_through_interpolate(text, env):
    assert interpolate(escape(text), env) == text


@SETTINGS
@given(env_names, st.text(max_size=30))
def test_a_value_is_inserted_as_it_is_never_expanded_again(name, value):
    assert interpolate("${" + name + "}", {name: value}) == value
    assert interpolate("a${" + name + "}b", {name: value}) == f"a{value}b"


@SETTINGS
@given(env_names, st.one_of(st.none(), st.text(max_size=8)), st.text(max_size=20))
def test_defaults_follow_their_operator(name, value, default):
    default = default.replace("}", "")  # a default cannot hold "}" (see the report)
    env = {} if value is None else {name: value}
    escaped = escape(default)
    colon = interpolate("${" + name + ":-" + escaped + "}", env)
    plain = interpolate("${" + name + "-" + escaped + "}", env)
    assert colon == (value if value else default)
    assert plain == (value if value is not None else default)


@SETTINGS
@given(st.text(st.sampled_from("${}:-A_x9 "), max_size=40), envs)
def test_malformed_templates_raise_only_interpolation_errors(text, env):
    try:
        result = interpolate(text, env)
    except InterpolationError:
        return
    assert isinstance(result, str)


def test_deeply_nested_defaults_are_a_config_error_not_a_crash():
    nested = "${A:-" * 2000 + "x" + "}" * 2000
    text = f'[upstreams.up]\nurl = "http://127.0.0.1:1"\nheaders = {{ X = "{nested}" }}\n'
    with contextlib.suppress(ConfigError):
        parse_config(text, "deep.toml", {})


# --- hop-by-hop headers ------------------------------------------------------------


def random_case(names: list[str]) -> st.SearchStrategy[str]:
    """One of ``names``, each letter upper- or lower-cased by the bits of a drawn number."""

    def flip(name: str, bits: int) -> str:
        return "".join(c.upper() if bits >> i & 1 else c.lower() for i, c in enumerate(name))

    return st.builds(flip, st.sampled_from(names), st.integers(0, 2**20))


token = st.text(LETTERS + "0123456789!#$%&'*+.^_`|~-", min_size=1, max_size=12)
# Names the rules are about, and spellings of them.
IDENTIFYING = ["forwarded", "x-forwarded-for", "x_real_ip", "traceparent", "true-client-ip", "via"]
known = sorted(HOP_BY_HOP | {"host", "cookie", "expect", "x-request-id", *IDENTIFYING})
header_name = st.one_of(token, random_case(known))
header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@st.composite
def header_lists(draw) -> list[tuple[str, str]]:
    headers = draw(st.lists(st.tuples(header_name, header_value), max_size=12))
    for _ in range(draw(st.integers(0, 3))):  # Connection headers naming some of them
        names = draw(st.lists(st.one_of(header_name, st.just("")), max_size=5))
        spaces = draw(st.sampled_from(["", " ", "\t", " \t "]))
        value = ",".join(f"{spaces}{n}{spaces}" for n in names)
        where = draw(st.integers(0, len(headers)))
        headers.insert(where, (draw(random_case(["connection"])), value))
    return headers


def listed_in_connection(headers: list[tuple[str, str]]) -> set[str]:
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }


@SETTINGS
@given(header_lists())
def test_strip_hop_by_hop_keeps_no_hop_by_hop_header(headers):
    original = CIMultiDict(headers)
    kept = strip_hop_by_hop(CIMultiDictProxy(original))
    dropped = HOP_BY_HOP | listed_in_connection(headers)
    assert not {name.lower() for name in kept} & dropped
    assert list(kept.items()) == [(n, v) for n, v in headers if n.lower() not in dropped]
    assert list(original.items()) == headers  # the input is left alone


allow_lists = st.none() | st.frozensets(st.sampled_from(known).map(str.lower), max_size=6)


@SETTINGS
@given(header_lists(), st.booleans(), st.booleans(), allow_lists)
def test_upstream_request_headers_leak_nothing_unasked(headers, client_address, cookies, allowed):
    kept = upstream_request_headers(
        CIMultiDictProxy(CIMultiDict(headers)),
        keep_length=True,
        forward_client_address=client_address,
        forward_cookies=cookies,
        allowed=allowed,
    )
    names = {name.lower() for name in kept}
    assert not names & (HOP_BY_HOP | listed_in_connection(headers) | {"host", "expect"})
    if not client_address:
        assert not any(identifies_client(name) for name in names)
    if not cookies:
        assert "cookie" not in names
    if allowed is not None:
        assert names <= allowed | {"content-length", "content-type", "content-encoding"}


@pytest.mark.parametrize(
    "name",
    [
        "X-Client-Request-Id",
        "OpenAI-Organization",
        "X-Stainless-Arch",
        "Accept",
        "Content-Type",
        "Authorization",
        "User-Agent",
        "X-Request-ID",
        "Zip-Code",
    ],
)
def test_ordinary_headers_are_not_taken_for_identifying_ones(name):
    assert not identifies_client(name)
