"""TLS towards upstreams: a private CA, a client certificate, and failures that say what failed.

The upstreams are real aiohttp servers on 127.0.0.1 speaking TLS with
certificates from a trustme CA (valid, for another name, expired).
"""

from __future__ import annotations

import datetime
import json
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web
from structlog.testing import capture_logs

from gateway.errors import ConfigError

Serve = Callable[..., Awaitable[str]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def serve_tls() -> AsyncIterator[Serve]:
    """Serve a small app over TLS with ``cert``; ``client_ca`` makes it ask for a client cert."""
    runners: list[web.AppRunner] = []

    async def serve(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> str:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED

        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"tls": True})

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"https://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


def config(url: str, tls: str = "") -> str:
    return f"""
pipeline = ["access_log"]
[upstreams.up]
url = "{url}"
connect_timeout = "2s"
[upstreams.up.tls]
{tls}
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


async def fetch(gateway) -> tuple[int, dict[str, object]]:
    async with gateway.request("GET", "/x") as response:
        return response.status, json.loads(await response.read())


async def test_a_private_ca_is_trusted_when_configured(ca, ca_file, serve_tls, start_gateway):
    url = await serve_tls(ca.issue_cert("127.0.0.1"))
    gateway = await start_gateway(config(url, f'ca_file = "{ca_file}"'))
    assert await fetch(gateway) == (200, {"tls": True})


async def test_ssl_cert_file_trusts_a_ca_for_every_upstream(
    ca, ca_file, serve_tls, start_gateway, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    url = await serve_tls(ca.issue_cert("127.0.0.1"))
    gateway = await start_gateway(config(url))
    assert (await fetch(gateway))[0] == 200


def _past(days: int) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("unknown CA", "certificate not trusted"),
        ("other name", "hostname mismatch: the certificate is not valid for '127.0.0.1'"),
        ("expired", "certificate expired"),
    ],
)
async def test_tls_failures_say_what_failed(ca, ca_file, serve_tls, start_gateway, case, said):
    if case == "unknown CA":
        url, tls = await serve_tls(ca.issue_cert("127.0.0.1")), ""
    elif case == "other name":
        url, tls = await serve_tls(ca.issue_cert("other.example")), f'ca_file = "{ca_file}"'
    else:
        cert = ca.issue_cert("127.0.0.1", not_before=_past(30), not_after=_past(1))
        url, tls = await serve_tls(cert), f'ca_file = "{ca_file}"'
    gateway = await start_gateway(config(url, tls))
    with capture_logs() as logs:
        status, body = await fetch(gateway)
    error = body["error"]
    assert status == 502 and error["code"] == "upstream_tls_error"  # type: ignore[index]
    assert said in error["message"]  # type: ignore[index]
    warning = next(e for e in logs if e["event"] == "upstream TLS failed")
    assert warning["log_level"] == "warning" and said in warning["error"]


async def test_verification_is_off_only_when_said_so(ca, serve_tls, start_gateway):
    url = await serve_tls(ca.issue_cert("other.example"))  # neither trusted nor the right name
    with capture_logs() as logs:
        gateway = await start_gateway(config(url, "verify = false"))
        assert (await fetch(gateway))[0] == 200
    assert any(e["event"] == "TLS certificates of this upstream are not verified" for e in logs)


async def test_a_client_certificate_for_upstreams_that_ask(
    ca, ca_file, serve_tls, start_gateway, tmp_path
):
    client_ca = trustme.CA()
    client = client_ca.issue_cert("gateway.example")
    cert_file = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    url = await serve_tls(ca.issue_cert("127.0.0.1"), client_ca=client_ca)
    with_cert = await start_gateway(
        config(url, f'ca_file = "{ca_file}"\ncert_file = "{cert_file}"')
    )
    assert await fetch(with_cert) == (200, {"tls": True})
    without = await start_gateway(config(url, f'ca_file = "{ca_file}"'))
    assert (await fetch(without))[0] == 502


@pytest.mark.parametrize(
    ("tls", "problem"),
    [
        ('ca_file = "/nonexistent/ca.pem"', "ca_file: cannot use '/nonexistent/ca.pem'"),
        ('key_file = "/some/key.pem"', "key_file is set but cert_file is not"),
        ('cert_file = "/nonexistent/c.pem"', "cert_file/key_file: cannot use"),
        ('verify = "maybe"', "not a boolean"),
    ],
)
async def test_unusable_tls_settings_are_config_errors(start_gateway, tls, problem):
    with pytest.raises(ConfigError) as caught:
        await start_gateway(config("https://127.0.0.1:9", tls))
    assert "$.upstreams.up.tls" in str(caught.value) and problem in str(caught.value)


async def test_a_ca_file_gone_since_the_config_loaded_is_a_502(
    ca, ca_file, serve_tls, start_gateway
):
    url = await serve_tls(ca.issue_cert("127.0.0.1"))
    gateway = await start_gateway(config(url, f'ca_file = "{ca_file}"'))
    os.remove(ca_file)
    status, body = await fetch(gateway)
    assert status == 502 and "ca_file" in body["error"]["message"]  # type: ignore[index]
