"""Attacks on HTTP/1.1 message framing: request smuggling and malformed heads.

``Content-Length`` with ``Transfer-Encoding``, duplicated or malformed lengths,
obsolete line folding, NUL / bare CR / bare LF, invalid method tokens, HTTP/0.9
and other versions, headers without a colon, broken chunked bodies, pipelining.
Every request carries a second, "smuggled" request where a desync could hide
one, and the tap in front of the upstream shows which request lines arrived.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.adversarial.rawhttp import RawConnection
from tests.adversarial.support import assert_clean, assert_envelope, request

HEAD = b"POST /public/x HTTP/1.1\r\nHost: gateway.test\r\n"
SMUGGLED = b"GET /public/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


# --- Content-Length together with Transfer-Encoding --------------------------------


@pytest.mark.parametrize(
    "framing",
    [
        # CL says the body is "0\r\n\r\n" + part of the next request; TE says it ends at 0.
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        # CL covers the smuggled request; TE ends the body before it.
        b"Content-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n",
    ],
    ids=["cl-te-short", "te-cl-short", "cl-te-long", "te-cl-long"],
)
async def test_content_length_with_chunked_is_refused_and_nothing_is_smuggled(target, framing):
    (answer,), closed = await target.converse(HEAD + framing + b"0\r\n\r\n" + SMUGGLED)
    assert_envelope(answer, 400, "bad_request")
    assert closed  # one answer, then the connection is closed
    assert target.nothing_reached_upstream()


@pytest.mark.parametrize(
    "encoding",
    [
        b"Transfer-Encoding: chunked, identity",
        b"Transfer-Encoding: identity\r\nContent-Length: 3",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: xchunked",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding : chunked",
        b"Transfer-Encoding:\x0bchunked",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    ],
    ids=["list", "identity", "gzip", "xchunked", "two-headers", "space-colon", "vtab", "twice"],
)
async def test_odd_transfer_encodings_are_refused(target, encoding):
    data = HEAD + encoding + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + SMUGGLED
    (answer,), closed = await target.converse(data)
    assert_envelope(answer, 400, "bad_request")
    assert closed
    assert target.nothing_reached_upstream()


async def test_chunked_body_is_reframed_for_the_upstream(target):
    body = b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n"
    (answer,), _ = await target.converse(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert seen.body == b"abcdefg"
    assert "Transfer-Encoding" not in seen.headers and seen.headers["Content-Length"] == "7"
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", b"abcdefg")]


# --- Content-Length values ---------------------------------------------------------


@pytest.mark.parametrize(
    "lengths",
    [
        [b"3", b"3"],
        [b"3", b"5"],
        [b"5", b"3"],
        [b"3, 3"],
        [b"3,5"],
    ],
    ids=["equal", "different", "different-reversed", "list-equal", "list-different"],
)
async def test_duplicate_content_length_is_refused(target, lengths):
    fields = b"".join(b"Content-Length: " + value + b"\r\n" for value in lengths)
    (answer,), closed = await target.converse(HEAD + fields + b"\r\nabcde" + SMUGGLED)
    assert_envelope(answer, 400, "bad_request")
    assert closed
    assert target.nothing_reached_upstream()


@pytest.mark.parametrize(
    "value",
    [
        b"abc",
        b"-1",
        b"+5",
        b"1e3",
        b"0x3",
        b"3.0",
        b"",
        b"1 2",
        "\u0663".encode(),  # ARABIC-INDIC DIGIT THREE: str.isdigit() says yes
        b"18446744073709551616",  # 2**64
        b"99999999999999999999999999999",
    ],
    ids=["abc", "-1", "+5", "1e3", "hex", "decimal", "empty", "space", "arabic", "2^64", "1e29"],
)
async def test_malformed_content_length_is_400(target, value):
    (answer,), closed = await target.converse(HEAD + b"Content-Length: " + value + b"\r\n\r\nabc")
    assert_envelope(answer, 400, "bad_request")
    assert closed
    assert target.nothing_reached_upstream()


@pytest.mark.parametrize("value", [b"9223372036854775808", b"18446744073709551615"])
async def test_huge_but_valid_content_length_is_413(target, value):
    (answer,), _ = await target.converse(HEAD + b"Content-Length: " + value + b"\r\n\r\nabc")
    assert_envelope(answer, 413, "payload_too_large")
    assert answer.header("Connection") == "close"
    assert target.nothing_reached_upstream()


async def test_content_length_with_leading_zeros_is_read_as_decimal(target):
    (answer,), _ = await target.converse(HEAD + b"Content-Length: 0010\r\n\r\n0123456789")
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert seen.body == b"0123456789"
    assert int(seen.headers["Content-Length"]) == 10


TOLERATED = {
    # RFC 9112 3: recipients MAY split the request line on whitespace runs.
    "two-spaces": b"GET  /public/x  HTTP/1.1\r\nHost: a\r\n\r\n",
    "tab-in-value": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\r\n\r\n",
    "utf8-in-value": "GET /public/x HTTP/1.1\r\nHost: a\r\nX-U: caf\u00e9\r\n\r\n".encode(),
    "whitespace-around-value": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-W: \t v \t\r\n\r\n",
}


@pytest.mark.parametrize("data", TOLERATED.values(), ids=TOLERATED.keys())
async def test_tolerated_oddities_reach_the_upstream_rewritten_cleanly(target, data):
    (answer,), _ = await target.converse(data)
    assert answer.status == 200
    ((line, body),) = target.tap.requests()
    assert (line, body) == (b"GET /public/x HTTP/1.1", b"")
    head = target.tap.received.partition(b"\r\n\r\n")[0]
    assert all(b": " in field for field in head.split(b"\r\n")[1:])  # one field per line
    assert b"\t" not in head.replace(b"a\tb", b"")  # only the value's inner tab is kept


# --- malformed heads ---------------------------------------------------------------

MALFORMED_HEADS = {
    "obs-fold": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    "obs-fold-tab": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n",
    "nul-in-value": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n",
    "nul-in-name": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-N\x00ul: ab\r\n\r\n",
    "bare-cr-in-value": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Cr: a\rX-Evil: b\r\n\r\n",
    "bare-lf-in-value": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Lf: a\nX-Evil: b\r\n\r\n",
    "bare-lf-line-ends": b"GET /public/x HTTP/1.1\nHost: a\nX-Lf: ab\n\n",
    "bare-cr-line-ends": b"GET /public/x HTTP/1.1\rHost: a\r\r",
    "del-in-value": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-Del: a\x7fb\r\n\r\n",
    "no-colon": b"GET /public/x HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n",
    "space-before-colon": b"GET /public/x HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
    "empty-name": b"GET /public/x HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
    "method-token": b"G(T /public/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "method-lowercase": b"get /public/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "method-unknown": b"FROB /public/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "method-empty": b" /public/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "space-in-target": b"GET /public/a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "raw-utf8-target": "GET /public/\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
    "version-1.2": b"GET /public/x HTTP/1.2\r\nHost: a\r\n\r\n",
    "version-junk": b"GET /public/x HTTP/x.y\r\nHost: a\r\n\r\n",
    "version-lowercase": b"GET /public/x http/1.1\r\nHost: a\r\n\r\n",
    "no-host": b"GET /public/x HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad-chunk-size": HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"F" * 20 + b"\r\n",
    "chunk-without-crlf": HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    "negative-chunk": HEAD + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "binary-garbage": bytes(range(256)),
}


@pytest.mark.parametrize("data", MALFORMED_HEADS.values(), ids=MALFORMED_HEADS.keys())
async def test_malformed_requests_are_400_and_never_forwarded(target, data):
    (answer,), closed = await target.converse(data + SMUGGLED)
    assert_envelope(answer, 400, "bad_request")
    assert closed
    assert target.nothing_reached_upstream()


@pytest.mark.parametrize(
    "line",
    [b"GET /public/x\r\n\r\n", b"GET /public/x HTTP/2.0\r\nHost: a\r\n\r\n"],
    ids=["http-0.9", "http-2.0-over-1.1"],
)
async def test_other_http_versions_are_refused(target, line):
    async with await RawConnection.open(target.port) as connection:
        await connection.send(line)
        await connection.server_closed(3)
        raw = bytes(connection.received)
    assert_clean(raw)
    # aiohttp writes the status line in the request's own version; the code is what counts.
    assert raw.split(b"\r\n", 1)[0].endswith(b" 505 HTTP Version Not Supported"), raw[:80]
    assert b'"code": "http_version_not_supported"' in raw
    assert target.nothing_reached_upstream()


# --- pipelining and connection reuse -----------------------------------------------


async def test_pipelined_requests_reach_the_upstream_one_by_one(target):
    data = request("GET", "/public/one") + request("POST", "/public/two", body=b"xyz")
    answers, _ = await target.converse(data, 2, linger=0.5)
    assert [a.status for a in answers] == [200, 200]
    assert [a.json()["path"] for a in answers] == ["/public/one", "/public/two"]
    assert [s.body for s in target.recorder.requests] == [b"", b"xyz"]
    assert target.tap.requests() == [
        (b"GET /public/one HTTP/1.1", b""),
        (b"POST /public/two HTTP/1.1", b"xyz"),
    ]


async def test_a_body_that_looks_like_a_request_stays_a_body(target):
    (answer,), _ = await target.converse(request("POST", "/public/x", body=SMUGGLED), linger=0.5)
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert seen.body == SMUGGLED
    assert target.tap.requests() == [(b"POST /public/x HTTP/1.1", SMUGGLED)]


async def test_an_oversized_body_hiding_a_request_is_413_and_the_request_never_runs(target):
    size = 64 * 1024 + 1
    body = SMUGGLED + b"x" * (size - len(SMUGGLED))
    data = HEAD + f"Content-Length: {size}\r\n\r\n".encode() + body
    (answer,), closed = await target.converse(data)
    assert_envelope(answer, 413, "payload_too_large")
    assert closed
    assert target.nothing_reached_upstream()


async def test_a_malformed_request_after_a_good_one_is_not_forwarded(target):
    data = request("GET", "/public/one") + b"G(T /public/two HTTP/1.1\r\nHost: a\r\n\r\n"
    (answer,), closed = await target.converse(data, linger=0.5)
    # aiohttp parses what arrives in one read together and the parse error wins: one
    # 400 for both, the good request included.  Nothing at all goes upstream.
    assert_envelope(answer, 400, "bad_request")
    assert closed
    assert target.nothing_reached_upstream()


async def test_http10_with_chunked_body_is_read_then_the_connection_closed(target):
    data = b"POST /public/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"3\r\nabc\r\n0\r\n\r\n"
    (answer,), closed = await target.converse(data)
    assert answer.status == 200
    assert closed  # RFC 9112 6.1: the framing of such a message is not to be trusted
    assert [s.body for s in target.recorder.requests] == [b"abc"]


async def test_http10_with_chunked_body_and_a_pipelined_request_runs_neither(target):
    data = b"POST /public/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"3\r\nabc\r\n0\r\n\r\n" + SMUGGLED
    (answer,), closed = await target.converse(data)
    assert_envelope(answer, 400, "bad_request")
    assert closed
    assert target.nothing_reached_upstream()


@pytest.mark.parametrize("upgrade", ["websocket", "h2c"])
async def test_a_request_pipelined_after_an_upgrade_request_is_not_left_hanging(target, upgrade):
    # The gateway does not switch protocols; what follows an Upgrade request is either
    # served or refused by closing the connection at once, never left unread until the
    # idle timeout (2 s here).
    first = request("GET", "/public/a", "Connection: Upgrade", f"Upgrade: {upgrade}")
    async with await RawConnection.open(target.port) as connection:
        await connection.send(first + request("GET", "/public/b"))
        answer = await connection.read_response(5)
        assert answer.status == 200
        try:
            second = await connection.read_response(1.0)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            assert not isinstance(exc, TimeoutError), "the pipelined request was left hanging"
            second = None
        assert_clean(bytes(connection.received))
    if second is None:  # refused: the connection was closed after the first answer
        assert b"/public/b" not in target.tap.received
    else:
        assert second.status == 200
    assert "Upgrade" not in target.recorder.requests[0].headers
