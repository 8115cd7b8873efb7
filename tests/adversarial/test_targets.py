"""Attacks on the request target: open-proxy tricks and path confusion.

Absolute-form targets naming a foreign host, asterisk- and authority-form,
``CONNECT``, a lying ``Host``; then encoded dot segments, ``//``, ``%2F`` and
friends against a gateway whose only route is ``/public/{rest*}``: what the route
matched must be exactly what the upstream receives, and nothing outside
``/public/`` may ever reach it.
"""

from __future__ import annotations

import pytest

from tests.adversarial.support import Recorder, Tap, assert_envelope, request


@pytest.fixture
async def bystander(serve_app):
    """Another server the attacker would like the gateway to reach (it must not)."""
    recorder = Recorder()
    url = await serve_app(recorder.app)
    tap = await Tap(int(url.rsplit(":", 1)[1])).start()
    yield tap
    await tap.stop()


@pytest.mark.parametrize(
    "form",
    [
        "http://{host}/public/x",
        "http://{host}",
        "https://{host}/public/x",
        "HTTP://{host}/public/x",
        "http://user:pw@{host}/public/x",
        "ftp://{host}/public/x",
    ],
)
async def test_absolute_form_naming_a_foreign_host_is_400(target, bystander, form):
    host = bystander.url.removeprefix("http://")
    target_text = form.format(host=host)
    (answer,), _ = await target.converse(request("GET", target_text, f"Host: {host}"))
    assert_envelope(answer, 400, "bad_request")
    assert bystander.connections == 0
    assert target.nothing_reached_upstream()


async def test_absolute_form_naming_the_real_upstream_is_400_too(target):
    # Even when it names the configured upstream: the target never chooses where to go.
    (answer,), _ = await target.converse(request("GET", target.tap.url + "/public/x"))
    assert_envelope(answer, 400, "bad_request")
    assert target.nothing_reached_upstream()


@pytest.mark.parametrize("method", ["OPTIONS", "GET"])
async def test_asterisk_form_is_400(target, method):
    (answer,), _ = await target.converse(request(method, "*"))
    assert_envelope(answer, 400, "bad_request")
    assert target.nothing_reached_upstream()


@pytest.mark.parametrize("target_text", ["evil.example:443", "127.0.0.1:22", "/public/x"])
async def test_connect_is_405(target, target_text):
    data = f"CONNECT {target_text} HTTP/1.1\r\nHost: {target_text}\r\n\r\n".encode()
    (answer,), _ = await target.converse(data)
    assert_envelope(answer, 405, "method_not_allowed")
    assert target.nothing_reached_upstream()


async def test_authority_form_with_get_is_400(target):
    (answer,), _ = await target.converse(request("GET", "evil.example:443"))
    assert_envelope(answer, 400, "bad_request")
    assert target.nothing_reached_upstream()


async def test_a_network_path_target_is_a_path_not_a_host(target):
    # "//evil.example/public/x" must not be read as an authority: it is the path
    # /evil.example/public/x once the slashes are merged, and no route has it.
    (answer,), _ = await target.converse(request("GET", "//evil.example/public/x"))
    error = assert_envelope(answer, 404, "not_found")
    assert "/evil.example/public/x" in error["message"]
    assert target.nothing_reached_upstream()


async def test_the_clients_host_header_never_reaches_the_upstream(target):
    (answer,), _ = await target.converse(
        b"GET /public/x HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n\r\n"
    )
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert seen.headers["Host"] == target.tap.url.removeprefix("http://")
    assert "X-Forwarded-Host" not in seen.headers


# --- paths: what routing sees is what goes upstream --------------------------------

# Client target -> the exact path (and query) the upstream receives.
FORWARDED = {
    "/public/a": "/public/a",
    "/public/./a": "/public/a",
    "/public/a/.": "/public/a",
    "/public/a/%2e": "/public/a",
    "/public/a/../b": "/public/b",
    "/public/a/%2e%2e/b": "/public/b",
    "/public//a": "/public/a",
    "//public/a": "/public/a",
    "/./public/a": "/public/a",
    "/x/../public/a": "/public/a",
    "/x/%2E%2E/public/a": "/public/a",
    "/%70ublic/a": "/public/a",
    "/public/a%2Fb": "/public/a/b",
    "/public/": "/public/",
    # Encoded once more: a literal "%2e%2e" segment, which the upstream decodes once only.
    "/public/%252e%252e/secret": "/public/%252e%252e/secret",
    "/public/a%3Fb": "/public/a%3Fb",
    "/public/a%23b": "/public/a%23b",
    "/public/%": "/public/%25",
    "/public/%zz": "/public/%25zz",
    "/public/%c3%a9": "/public/%C3%A9",
    "/public/a;b=c": "/public/a;b=c",
    "/public/..%5csecret": "/public/..%5Csecret",
    "/public/a?x=/../y&z=%2e%2e": "/public/a?x=/../y&z=%2e%2e",
    "/public/a#fragment": "/public/a",
    "/public%2Fa": "/public/a",
}


@pytest.mark.parametrize(("sent", "forwarded"), FORWARDED.items(), ids=FORWARDED.keys())
async def test_path_seen_by_routing_is_the_path_forwarded(target, sent, forwarded):
    (answer,), _ = await target.converse(request("GET", sent))
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert seen.raw_path == forwarded
    assert answer.json()["path"] == forwarded
    ((line, _),) = target.tap.requests()
    assert line == f"GET {forwarded} HTTP/1.1".encode()


ESCAPES = [
    "/public/../secret",
    "/public/%2e%2e/secret",
    "/public/%2E%2E/secret",
    "/public/.%2e/secret",
    "/public/%2e./secret",
    "/public/..%2Fsecret",
    "/public/%2e%2e%2fsecret",
    "/public/%2F..%2Fsecret",
    "/public/a/../../secret",
    "/public/a%2F..%2F..%2Fsecret",
    "/public/..",
    "/public/%2e%2e",
    "/public/%2e%2e/",
    "/public/./../secret",
    "/public//../secret",
    "/public",
    "/secret",
    "/PUBLIC/a",
    # Invalid UTF-8 ("%ff") next to the dot segments must not stop their decoding.
    "/public/%ff/%2e%2e/%2e%2e/secret",
    "/public/%ff%2F..%2F..%2Fsecret",
]


@pytest.mark.parametrize("sent", ESCAPES)
async def test_nothing_outside_the_route_reaches_the_upstream(target, sent):
    (answer,), _ = await target.converse(request("GET", sent))
    error = assert_envelope(answer, 404, "not_found")
    assert "/public/" not in error["message"]  # the path routing saw is outside the route
    assert target.nothing_reached_upstream()


async def test_invalid_utf8_in_a_path_keeps_one_meaning(target):
    # "%ff" is not UTF-8: routing keeps the three characters "%ff", and the upstream
    # gets them encoded ("%25ff"), so "/public/%ff" and "/public/%25ff" are the same
    # resource both for routing and for the upstream.
    for sent in ("/public/%ff", "/public/%25ff"):
        (answer,), _ = await target.converse(request("GET", sent))
        assert answer.status == 200
    assert [seen.raw_path for seen in target.recorder.requests] == ["/public/%25ff"] * 2


async def test_an_encoded_newline_in_a_tail_is_forwarded_encoded(target):
    (answer,), _ = await target.converse(request("GET", "/public/a%0Ab"))
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert seen.raw_path == "/public/a%0Ab"


async def test_an_encoded_crlf_never_becomes_a_header(target):
    (answer,), _ = await target.converse(request("GET", "/public/a%0D%0AX-Injected:%201"))
    assert answer.status in (200, 404)
    assert b"\r\nX-Injected" not in target.tap.received
    for seen in target.recorder.requests:
        assert "X-Injected" not in seen.headers
