"""Hostile credentials from anonymous clients: tokens built to break their readers.

``auth`` reads the expiry of a ChatGPT JWT (passthrough mode) and hashes a client
key (keys mode) before anything else is known of the client.  A payload nested
thousands deep, an ``exp`` too large for a float, bytes that are not UTF-8: each
must be answered as any unknown credential is (401, or passed on for the upstream
to judge), never with a 500, and never logged at error level with a traceback.
"""

from __future__ import annotations

import base64
import json

import pytest
from structlog.testing import capture_logs

from gateway.keys import new_key
from tests.adversarial.support import AUTH_CONFIG as BASE_AUTH_CONFIG
from tests.adversarial.support import assert_envelope, keys_config

# Room in the head for a token nested 8,000 deep.
AUTH_CONFIG = BASE_AUTH_CONFIG.replace('max_header_size = "8KiB"', 'max_header_size = "64KiB"')
CLIENT_KEY, _ = new_key()
KEYS_CONFIG = keys_config(CLIENT_KEY, AUTH_CONFIG)


def jwt(payload: bytes) -> bytes:
    def part(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    return part(b'{"alg":"none"}') + b"." + part(payload) + b"." + part(b"sig")


HOSTILE_JWTS = {
    "nested-8000-deep": jwt(b"[" * 8000 + b"]" * 8000),
    "nested-objects": jwt(b'{"a":' * 8000 + b"1" + b"}" * 8000),
    "exp-400-digits": jwt(b'{"exp": 1' + b"0" * 400 + b"}"),
    "exp-huge-float": jwt(b'{"exp": 1e400}'),
    "exp-nan": jwt(b'{"exp": NaN}'),
    "payload-not-utf8": jwt(b'{"exp": "\xff\xfe"}'),
}


def get(*headers: bytes) -> bytes:
    return b"\r\n".join([b"GET /public/x HTTP/1.1", b"Host: gateway.test", *headers]) + b"\r\n\r\n"


def no_error_logs(logs: list[dict]) -> None:
    loud = [entry for entry in logs if entry.get("log_level") in ("error", "critical")]
    assert not loud, loud[:2]
    assert not any("exc_info" in entry for entry in logs), logs[:2]


@pytest.mark.parametrize("token", HOSTILE_JWTS.values(), ids=HOSTILE_JWTS.keys())
async def test_a_hostile_jwt_is_judged_by_the_upstream_not_a_500(make_target, token):
    target = await make_target(AUTH_CONFIG)
    with capture_logs() as logs:
        (answer,), _ = await target.converse(get(b"Authorization: Bearer " + token))
    # Not a readable JWT: passed on as any other token, for the upstream to judge.
    assert answer.status == 200, answer.body[:200]
    (seen,) = target.recorder.requests
    assert seen.headers["Authorization"] == "Bearer " + token.decode()
    no_error_logs(logs)


@pytest.mark.parametrize(
    "value",
    [b"Bearer \xff\xfe", b"\xff\xfe", b"Bearer \xc0\xaf", b"Bearer " + "é".encode("latin-1") * 3],
    ids=["bearer-ff-fe", "bare-ff-fe", "overlong-utf8", "latin-1"],
)
async def test_a_key_that_is_not_utf8_is_401(make_target, value):
    target = await make_target(KEYS_CONFIG)
    with capture_logs() as logs:
        (answer,), _ = await target.converse(get(b"Authorization: " + value))
    assert_envelope(answer, 401, "unauthorized")
    assert target.nothing_reached_upstream()
    no_error_logs(logs)


async def test_a_hostile_key_in_x_authorization_is_401(make_target):
    target = await make_target(KEYS_CONFIG)
    with capture_logs() as logs:
        (answer,), _ = await target.converse(get(b"X-Authorization: \xff" * 1))
    assert_envelope(answer, 401, "unauthorized")
    no_error_logs(logs)


def test_the_hostile_payloads_really_are_hostile():
    # (Guards the cases above against a json module that would read them fine.)
    with pytest.raises(RecursionError):
        json.loads(b"[" * 8000 + b"]" * 8000)
    with pytest.raises(OverflowError):
        float(json.loads(b'{"exp": 1' + b"0" * 400 + b"}")["exp"])
