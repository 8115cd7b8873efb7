"""The forwarder's rules (SPEC section 7), each against a real upstream on loopback."""

from __future__ import annotations

import asyncio
import gzip

import aiohttp
import pytest
from yarl import URL

from tests.upstreams import Upstream, seen_headers


def config(url: str, *, upstream: str = "", route: str = "", server: str = "") -> str:
    return f"""
pipeline = ["access_log"]
[server]
max_body_size = "64KiB"
max_header_size = "8KiB"
{server}
[upstreams.up]
url = "{url}"
connect_timeout = "1s"
idle_timeout = "300ms"
{upstream}
[routes.all]
path = "/{{rest*}}"
upstream = "up"
{route}
"""


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def gateway(upstream, serve_app, start_gateway):
    url = await serve_app(upstream.app)
    return await start_gateway(config(url))


async def test_upstream_url_is_base_plus_path_and_query(upstream, serve_app, start_gateway):
    gateway = await start_gateway(config(await serve_app(upstream.app) + "/base"))
    target = URL(gateway.url + "/a/b%20c?x=1&y=%2F&z=%26", encoded=True)
    async with gateway.session.get(target) as response:
        assert response.status == 200
        seen = await response.json()
    assert seen["path_qs"] == "/base/a/b%20c?x=1&y=%2F&z=%26"


async def test_host_is_the_upstreams(gateway, upstream, serve_app):
    async with gateway.request("GET", "/h", headers={"Host": "evil.example"}) as response:
        await response.read()
    host = seen_headers(upstream.requests[-1])["host"]
    assert host.startswith("127.0.0.1:")


async def test_sse_is_streamed_event_by_event(gateway, upstream):
    async with gateway.request("GET", "/sse") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["X-Accel-Buffering"] == "no"
        # The upstream holds its second event until the gate opens: reading the
        # first one now proves nothing waits for the whole body.
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        assert first == b"data: first\n\n"
        assert not upstream.gate.is_set()
        upstream.gate.set()
        rest = await response.content.read()
    assert rest == b"data: second\n\ndata: [DONE]\n\n"


async def test_compressed_bytes_pass_through_untouched(gateway):
    async with gateway.request("GET", "/gzip", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        body = await response.read()
    assert gzip.decompress(body) == b'{"compressed": true}'


async def test_no_accept_encoding_is_added(gateway, upstream):
    async with gateway.request("GET", "/plain", skip_auto_headers=["Accept-Encoding"]) as response:
        await response.read()
    assert "accept-encoding" not in seen_headers(upstream.requests[-1])


async def raw_request(gateway, head: bytes) -> bytes:
    """Send bytes as they are (HTTP clients would tidy them up) and read the answer."""
    port = gateway.service.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_hop_by_hop_request_headers_are_removed(gateway, upstream):
    head = (
        b"GET /hop-in HTTP/1.1\r\nHost: gw\r\n"
        b"Connection: close, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        b"te: trailers\r\nkeep-alive: 1\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Upgrade: websocket\r\nX-End-To-End: kept\r\n\r\n"
    )
    answer = await raw_request(gateway, head)
    assert answer.startswith(b"HTTP/1.1 200")
    seen = seen_headers(upstream.requests[-1])
    for name in (
        "x-secret-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ):
        assert name not in seen, name
    assert seen["x-end-to-end"] == "kept"


async def test_hop_by_hop_response_headers_are_removed(gateway):
    async with gateway.request("GET", "/hop") as response:
        assert await response.text() == "ok"
        for name in ("Keep-Alive", "Proxy-Authenticate", "Upgrade", "Trailer"):
            assert name not in response.headers, name
        assert response.headers["X-Kept"] == "yes"


async def test_client_address_cookies_and_via_do_not_leak_by_default(gateway, upstream):
    headers = {
        "X-Forwarded-For": "203.0.113.9",
        "X-Real-IP": "203.0.113.9",
        "Forwarded": "for=203.0.113.9",
        "Via": "1.1 someproxy",
        "Cookie": "session=secret",
    }
    async with gateway.request("GET", "/leak", headers=headers) as response:
        await response.read()
    seen = seen_headers(upstream.requests[-1])
    for name in ("x-forwarded-for", "x-real-ip", "forwarded", "via", "cookie"):
        assert name not in seen, name


async def test_client_address_is_forwarded_when_the_upstream_says_so(
    upstream, serve_app, start_gateway
):
    url = await serve_app(upstream.app)
    gateway = await start_gateway(
        config(url, upstream="forward_client_address = true", route="forward_cookies = true")
    )
    headers = {"X-Forwarded-For": "203.0.113.9", "Cookie": "a=b"}
    async with gateway.request("GET", "/fwd", headers=headers) as response:
        await response.read()
    seen = seen_headers(upstream.requests[-1])
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["cookie"] == "a=b"


async def test_redirects_are_passed_not_followed(gateway, upstream):
    async with gateway.request("GET", "/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere"
    assert len(upstream.requests) == 1


async def test_request_body_streams_through_intact(gateway, upstream):
    body = bytes(range(256)) * 200  # 51,200 bytes
    async with gateway.request("POST", "/upload", data=body) as response:
        seen = await response.json()
    assert seen["size"] == len(body)
    assert upstream.requests[-1]["body"] == body


async def test_chunked_request_body_is_forwarded(gateway, upstream):
    async def chunks():
        for part in (b"hello ", b"chunked ", b"world"):
            yield part

    async with gateway.request("POST", "/chunked", data=chunks()) as response:
        assert response.status == 200
    assert upstream.requests[-1]["body"] == b"hello chunked world"


async def test_oversized_body_is_413_before_the_upstream(gateway, upstream):
    async with gateway.request("POST", "/big", data=b"x" * (64 * 1024 + 1)) as response:
        assert response.status == 413
        error = (await response.json())["error"]
    assert error["code"] == "payload_too_large"
    assert upstream.requests == []


async def test_oversized_chunked_body_is_413_before_the_upstream(gateway, upstream):
    async def chunks():
        for _ in range(20):
            yield b"x" * 4096

    async with gateway.request("POST", "/big", data=chunks()) as response:
        assert response.status == 413
    assert upstream.requests == []


async def test_oversized_headers_are_431_before_the_upstream(gateway, upstream):
    headers = {f"X-Pad-{i}": "y" * 900 for i in range(10)}
    async with gateway.request("GET", "/pad", headers=headers) as response:
        assert response.status == 431
        assert (await response.json())["error"]["code"] == "headers_too_large"
    assert upstream.requests == []


async def test_connect_failure_is_502_in_the_envelope(start_gateway):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = await start_gateway(config(f"http://127.0.0.1:{port}"))
    async with gateway.request("GET", "/x") as response:
        assert response.status == 502
        error = (await response.json())["error"]
    assert error["type"] == "upstream_error"
    assert "cannot connect" in error["message"]


async def test_timeout_before_the_head_is_504(gateway):
    async with gateway.request("GET", "/slow-head") as response:
        assert response.status == 504
        assert (await response.json())["error"]["code"] == "gateway_timeout"


async def test_idle_upstream_mid_body_aborts_the_client(gateway):
    async with gateway.request("GET", "/stall") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_upstream_dying_mid_stream_aborts_the_client(gateway):
    async with gateway.request("GET", "/die") as response:
        assert response.status == 200
        first = await response.content.readuntil(b"\n\n")
        assert first == b"data: partial\n\n"
        # No clean end: the client can tell the answer is incomplete.
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()


async def test_client_disconnect_cancels_the_upstream_request(gateway, upstream):
    response = await gateway.request("GET", "/heartbeat").__aenter__()
    await response.content.readuntil(b"\n\n")
    response.close()  # the client goes away mid-stream
    await asyncio.wait_for(upstream.disconnected.wait(), 2)


async def test_method_not_on_route_is_405_with_allow(upstream, serve_app, start_gateway):
    url = await serve_app(upstream.app)
    gateway = await start_gateway(config(url, route='methods = ["GET"]'))
    async with gateway.request("DELETE", "/x") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET"
        assert (await response.json())["error"]["code"] == "method_not_allowed"
    assert upstream.requests == []


async def test_unknown_route_is_404_in_the_envelope(upstream, serve_app, start_gateway):
    url = await serve_app(upstream.app)
    text = config(url).replace('path = "/{rest*}"', 'path = "/only"')
    gateway = await start_gateway(text)
    async with gateway.request("GET", "/other") as response:
        assert response.status == 404
        body = await response.json()
    assert body["error"]["code"] == "not_found"


async def test_dot_segments_are_resolved_before_routing(upstream, serve_app, start_gateway):
    url = await serve_app(upstream.app)
    text = config(url).replace('path = "/{rest*}"', 'path = "/public/{rest*}"')
    gateway = await start_gateway(text)
    async with gateway.request("GET", "/public/%2e%2e/private") as response:
        assert response.status == 404  # /private matches no route
    async with gateway.request("GET", "/public//a/./b") as response:
        seen = await response.json()
    assert seen["path_qs"] == "/public/a/b"


async def test_healthz(gateway):
    async with gateway.request("GET", "/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_request_id_is_sent_upstream_and_returned(gateway, upstream):
    async with gateway.request("GET", "/rid", headers={"X-Request-ID": "abc-123"}) as response:
        assert response.headers["X-Request-ID"] == "abc-123"
        await response.read()
    assert seen_headers(upstream.requests[-1])["x-request-id"] == "abc-123"
    async with gateway.request(
        "GET", "/rid", headers={"X-Request-ID": "bad id <script>"}
    ) as response:
        made = response.headers["X-Request-ID"]
    assert made != "bad id <script>" and len(made) >= 16


async def test_upstream_errors_pass_through_unchanged(gateway):
    async with gateway.request("GET", "/teapot") as response:
        assert response.status == 418
        assert response.headers["X-Upstream"] == "yes"
        assert await response.read() == b'{"detail": "short and stout"}'


async def test_no_header_is_invented_upstream(gateway, upstream):
    head = b"GET /bare HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    await raw_request(gateway, head)
    names = set(seen_headers(upstream.requests[-1]))
    assert names == {"host", "x-request-id"}


async def test_a_stalled_request_body_is_408(upstream, serve_app, start_gateway):
    url = await serve_app(upstream.app)
    gateway = await start_gateway(config(url, server='client_idle_timeout = "300ms"'))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.service.port)
    writer.write(b"POST /slow HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\nonly part")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # the gateway answers, then closes
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code": "request_timeout"' in answer
    assert upstream.requests == []


async def test_a_request_head_that_never_ends_is_closed(upstream, serve_app, start_gateway):
    url = await serve_app(upstream.app)
    gateway = await start_gateway(config(url, server='client_idle_timeout = "300ms"'))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.service.port)
    writer.write(b"GET /slowloris HTTP/1.1\r\nHost: gw\r\nX-A: ")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not left hanging
    writer.close()
    assert upstream.requests == []


async def test_the_connection_slot_wait_is_bounded(upstream, serve_app, start_gateway):
    url = await serve_app(upstream.app)
    gateway = await start_gateway(config(url, upstream="max_connections = 1"))
    holder = await gateway.request("GET", "/heartbeat").__aenter__()  # holds the one slot
    await holder.content.readuntil(b"\n\n")
    async with asyncio.timeout(5):  # no bound would hang here for ever
        async with gateway.request("GET", "/x") as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            error = (await response.json())["error"]
    assert error["code"] == "upstream_connections_exhausted"
    assert "max_connections" in error["message"]
    holder.close()  # the slot comes back when the stream ends
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    async with gateway.request("GET", "/x") as response:
        assert response.status == 200


async def test_header_bytes_are_never_cut(start_gateway):
    from tests.adversarial.rawhttp import ScriptedUpstream

    async def script(reader, writer):
        writer.write(
            b"HTTP/1.1 200 Caf\xe9 OK\r\nX-Latin: caf\xe9 au lait\r\n"
            b"X-Utf8: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok"
        )
        await writer.drain()

    async with ScriptedUpstream(script) as raw:
        gateway = await start_gateway(config(raw.url))
        answer = await raw_request(
            gateway, b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        )
    head = answer.partition(b"\r\n\r\n")[0]
    # UTF-8 goes out as it came; other bytes as the characters latin-1 gives them.
    assert b"\r\nX-Utf8: caf\xc3\xa9\r\n" in head
    assert "X-Latin: café au lait".encode() in head
    assert head.startswith("HTTP/1.1 200 Café OK".encode())
