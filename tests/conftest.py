"""Shared fixtures: real proxies, and the log output.

``start_gateway``, ``serve_app`` and ``simulator`` come from the gateway's own test kit
(`gateway.testing.pytest_plugin`, registered through the ``pytest11`` entry point), as
they do for a plugin author's tests.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import structlog

from gateway import logs
from tests.proxies import ProxyServer


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., Awaitable[ProxyServer]]]:
    """Start real pproxy servers (``scheme``, optional ``user``/``password``); stop them after."""
    proxies: list[ProxyServer] = []

    async def start(
        scheme: str, user: str | None = None, password: str | None = None
    ) -> ProxyServer:
        proxy = ProxyServer(scheme, user, password)
        proxies.append(proxy)
        return await proxy.start()

    yield start
    for proxy in proxies:
        await proxy.stop()


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the process's log writer writes; structlog's config is restored afterwards."""
    saved = structlog.get_config()
    stream = io.StringIO()
    monkeypatch.setattr(logs, "_WRITER", logs.BlockWriter(stream))
    monkeypatch.setattr(logs, "_JSON", None)
    yield stream
    structlog.configure(**saved)
