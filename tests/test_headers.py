"""Header rules: hop-by-hop stripping and the client's address."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.headers import client_address, strip_hop_by_hop, upstream_request_headers


def test_connection_named_headers_are_hop_by_hop_in_any_case():
    headers = CIMultiDict(
        [("connection", "close, x-a"), ("X-A", "1"), ("keep-alive", "5"), ("x-b", "2")]
    )
    assert list(strip_hop_by_hop(headers).items()) == [("x-b", "2")]


def test_upstream_request_headers_policy():
    incoming = CIMultiDict(
        [
            ("Host", "gw"),
            ("Cookie", "c"),
            ("X-Real-IP", "1.2.3.4"),
            ("Content-Length", "3"),
            ("Accept", "*/*"),
        ]
    )
    private = upstream_request_headers(
        incoming, keep_length=True, forward_client_address=False, forward_cookies=False
    )
    assert dict(private) == {"Content-Length": "3", "Accept": "*/*"}
    open_ = upstream_request_headers(
        incoming, keep_length=False, forward_client_address=True, forward_cookies=True
    )
    assert dict(open_) == {"Cookie": "c", "X-Real-IP": "1.2.3.4", "Accept": "*/*"}


def test_client_address():
    chain = ["198.51.100.1, 198.51.100.2", "198.51.100.3"]
    assert client_address("10.0.0.1", chain, 0) == "10.0.0.1"
    assert client_address("10.0.0.1", chain, 1) == "198.51.100.3"
    assert client_address("10.0.0.1", chain, 2) == "198.51.100.2"
    assert client_address("10.0.0.1", chain, 9) == "198.51.100.1"
    assert client_address("10.0.0.1", [], 1) == "10.0.0.1"
