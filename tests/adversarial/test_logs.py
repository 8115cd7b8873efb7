"""What the gateway logs about hostile requests, at ``LOG_LEVEL=debug`` too.

A malformed request's raw header lines, and the start of an oversized header,
may hold a client's token: no log line may carry a header value.  The error
handler logs what went wrong (the kind of error, the status), never the bytes.
"""

from __future__ import annotations

import logging

import pytest
from structlog.testing import capture_logs

from tests.adversarial.support import assert_envelope

SECRET = "sk-proj-S3CRETS3CRETS3CRETS3CRET"
MALFORMED = {
    "nul-in-value": f"Authorization: Bearer {SECRET}\x00".encode(),
    "bare-cr-in-value": f"Authorization: Bearer {SECRET}\rX".encode(),
    "space-before-colon": f"Authorization : Bearer {SECRET}".encode(),
    "no-colon": f"Bearer {SECRET}".encode(),
    "bad-name": f"Auth(orization: Bearer {SECRET}".encode(),
    "folded": f"X-A: a\r\n Bearer {SECRET}".encode(),
    "oversized-authorization": f"Authorization: Bearer {SECRET}{'x' * 20_000}".encode(),
    "oversized-name": f"Authorization{SECRET}{'x' * 20_000}: 1".encode(),
    "too-many-headers": b"\r\n".join(
        [f"Authorization: Bearer {SECRET}".encode()] + [b"X-%d: 1" % i for i in range(300)]
    ),
}


@pytest.mark.parametrize("line", MALFORMED.values(), ids=MALFORMED.keys())
async def test_no_header_value_reaches_a_debug_log(target, caplog, line):
    data = b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n" + line + b"\r\n\r\n"
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        (answer,), _ = await target.converse(data)
    assert answer.status in (400, 431), answer.body[:200]
    assert_envelope(answer, answer.status)
    assert logs, "the rejection is logged"
    assert SECRET not in repr(logs)
    assert SECRET not in caplog.text
    assert SECRET.encode() not in answer.body
    assert target.nothing_reached_upstream()
