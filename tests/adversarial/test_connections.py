"""Clients that open more connections than the gateway will hold.

``server.max_client_connections`` caps the client connections open at once (by
default, from the open-file limit: each proxied request needs two descriptors).
A connection over the cap gets a clean 503 in the envelope and is closed; the
ones already open are served as before, and a place that frees up is taken again.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.adversarial.rawhttp import RawConnection
from tests.adversarial.support import BASE_CONFIG, assert_clean, assert_envelope, request

CAP = 3
CONFIG = BASE_CONFIG.replace("[server]", f"[server]\nmax_client_connections = {CAP}")


async def test_a_connection_over_the_cap_gets_a_503_and_the_others_are_served(make_target):
    target = await make_target(CONFIG)
    async with contextlib.AsyncExitStack() as stack:
        held = [
            await stack.enter_async_context(await RawConnection.open(target.port))
            for _ in range(CAP)
        ]
        for connection in held:  # each is served, and kept alive
            await connection.send(request("GET", "/public/x"))
            assert (await connection.read_response(5)).status == 200
        async with await RawConnection.open(target.port) as extra:
            await extra.send(request("GET", "/public/over", "Authorization: Bearer t"))
            answer = await extra.read_response(5)
            assert await extra.server_closed(5)
            assert_clean(bytes(extra.received))
        error = assert_envelope(answer, 503, "service_unavailable")
        assert "connections" in error["message"]
        assert answer.header("Connection") == "close"
        assert answer.header("Retry-After") == "1"
        assert b"/public/over" not in target.tap.received
        # The connections held are still served.
        await held[0].send(request("GET", "/public/again"))
        assert (await held[0].read_response(5)).status == 200
        # A place that frees up is taken again.
        held[1].close()
        for _ in range(50):
            async with await RawConnection.open(target.port) as late:
                await late.send(request("GET", "/public/late"))
                if (await late.read_response(5)).status == 200:
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the freed place was never given again")
