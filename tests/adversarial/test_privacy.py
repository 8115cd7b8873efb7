"""What a client sends about itself must not reach a third-party upstream.

Any request header that names a forwarded, real, remote, originating or client
address, a trace context or a client certificate is removed by rule, in any
spelling (``_`` or ``-``, any case), unless the upstream opts in with
``forward_client_address``.  An upstream with ``forward_headers`` (the allow-list
mode) gets only the client headers it names.
"""

from __future__ import annotations

import pytest

from tests.adversarial.support import BASE_CONFIG, request

# Every header the sweep saw reach OpenAI and ChatGPT, then more of the same kinds.
IDENTIFYING = [
    "X-Forwarded-Client-Cert",
    "X-Original-Forwarded-For",
    "X-Envoy-External-Address",
    "Fastly-Client-IP",
    "X-Cluster-Client-IP",
    "Client-IP",
    "True-Client-IP",
    "CF-Connecting-IP",
    "X-Originating-IP",
    "X-Remote-IP",
    "X-Remote-Addr",
    "X-ProxyUser-Ip",
    "X-Forwarded",
    "Forwarded-For",
    "X-Forwarded-Server",
    "X-Forwarded-Prefix",
    "traceparent",
    "tracestate",
    "X-Amzn-Trace-Id",
    "X-Cloud-Trace-Context",
    "X_Forwarded_For",
    "X-Real_IP",
    "x_real_ip",
    "FORWARDED",
    "Via",
    "X-Client-IP",
    "X-ClientIP",
    "X-Real-IP",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-B3-TraceId",
    "X-B3-SpanId",
    "b3",
    "baggage",
    "uber-trace-id",
    "sentry-trace",
    "X-Datadog-Trace-Id",
    "X-SSL-Client-Cert",
    "X-SSL-Client-S-DN",
    "Ssl-Client-Verify",
    "X-Client-Cert",
]
ORDINARY = ["X-Client-Request-Id", "OpenAI-Beta", "X-Stainless-Lang", "User-Agent", "X-Custom"]


# (X-Request-ID by access_log; X-Forwarded-* when the upstream opts in.)
ADDED_BY_THE_GATEWAY = {"x-request-id", "x-forwarded-for", "x-forwarded-proto"}


def sent(*names: str) -> bytes:
    return request("GET", "/public/x", *(f"{name}: 203.0.113.7" for name in names))


async def test_identifying_headers_never_reach_a_third_party(make_target):
    target = await make_target()
    (answer,), _ = await target.converse(sent(*IDENTIFYING, *ORDINARY))
    assert answer.status == 200
    (seen,) = target.recorder.requests
    leaked = [name for name in IDENTIFYING if name in seen.headers]
    assert not leaked
    assert all(seen.headers[name] == "203.0.113.7" for name in ORDINARY)
    assert target.tap.received.count(b"203.0.113.7") == len(ORDINARY)


async def test_an_upstream_that_opts_in_gets_them(make_target):
    config = BASE_CONFIG.replace(
        'idle_timeout = "1s"', 'idle_timeout = "1s"\nforward_client_address = true'
    )
    target = await make_target(config)
    (answer,), _ = await target.converse(sent(*IDENTIFYING))
    assert answer.status == 200
    (seen,) = target.recorder.requests
    assert all(name in seen.headers for name in IDENTIFYING)


@pytest.mark.parametrize("opt_in", [False, True])
async def test_the_allow_list_forwards_only_the_headers_it_names(make_target, opt_in):
    allowed = '["X-Custom", "traceparent", "Content-Type"]'
    extra = f"\nforward_headers = {allowed}" + ("\nforward_client_address = true" if opt_in else "")
    config = BASE_CONFIG.replace('idle_timeout = "1s"', 'idle_timeout = "1s"' + extra)
    target = await make_target(config)
    data = request(
        "POST",
        "/public/x",
        "Content-Type: text/plain",
        "X-Custom: 1",
        "X-Other: 2",
        "User-Agent: curl",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        body=b"hello",
    )
    (answer,), _ = await target.converse(data)
    assert answer.status == 200
    (seen,) = target.recorder.requests
    names = {name.lower() for name in seen.headers}
    # The framing the gateway writes itself (Host, Content-Length) is not the client's.
    expected = {"host", "content-length", "content-type", "x-custom"} | (
        {"traceparent"} if opt_in else set()
    )
    # The allow-list narrows what goes, never widens it: a trace context still needs the opt-in.
    assert names - ADDED_BY_THE_GATEWAY == expected
    assert seen.body == b"hello"
