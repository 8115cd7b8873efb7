"""Serving the simulated upstreams, for tests, ``gateway demo`` and benchmarks.

ChatGPT, OpenAI and the ChatGPT web host's login endpoints share one port; the
login's Auth0 host listens on a second one, so that the two login hosts differ.
"""

from __future__ import annotations

from types import TracebackType

import attrs
from aiohttp import web

from gateway.testing.chatgpt import CLIENT_MAX_SIZE, install_chatgpt
from gateway.testing.flavors import CHATGPT
from gateway.testing.login import LoginSimulator
from gateway.testing.openai import install_openai
from gateway.testing.recorder import Recorder

SHUTDOWN_TIMEOUT = 1.0


def simulator_app(
    recorder: Recorder | None = None,
    *,
    delay: float = 0.0,
    words: int | None = None,
    login: LoginSimulator | None = None,
) -> web.Application:
    """One application serving ChatGPT under ``/backend-api`` and OpenAI under ``/v1``.

    With ``login``, it also serves the web host's login endpoints (``/api/auth/*``).
    """
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    install_chatgpt(app, recorder, delay=delay, words=words)
    install_openai(app, recorder, delay=delay)
    if login is not None:
        login.install_web(app, recorder)
    return app


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port``; return its runner and base URL."""
    # A client that disconnects cancels its stream at once, as a real upstream would.
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound_port}"


@attrs.define
class Simulator:
    """A running simulator; ``close()`` (or leaving ``async with``) stops it."""

    url: str  # e.g. "http://127.0.0.1:41234", no trailing slash
    recorder: Recorder
    _runner: web.AppRunner = attrs.field(repr=False, alias="runner")
    #: The simulated login: its ``accounts``, ``refused`` e-mails and ``fail_at`` faults.
    login: LoginSimulator = attrs.field(factory=LoginSimulator)
    _auth0_runner: web.AppRunner | None = attrs.field(
        default=None, repr=False, alias="auth0_runner"
    )

    @property
    def web_url(self) -> str:
        """The ChatGPT web host (login: ``/api/auth/*``); the same server as `url`."""
        return self.url

    @property
    def auth0_url(self) -> str:
        """The login's Auth0 host, on a port of its own (empty if it is not served)."""
        return self.login.auth0_url

    @property
    def chatgpt_url(self) -> str:
        """The ChatGPT upstream base URL, e.g. ``http://127.0.0.1:41234/backend-api``."""
        return self.url + CHATGPT.prefix

    @property
    def openai_url(self) -> str:
        """The OpenAI upstream base URL (the server's root; routes are under ``/v1``)."""
        return self.url

    @property
    def port(self) -> int:
        """The port the simulator listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def environment(self) -> dict[str, str]:
        """The variables that point the default config's upstreams here, proxies off."""
        return {
            "CHATGPT_BASE_URL": self.chatgpt_url,
            "CHATGPT_WEB_URL": self.web_url,
            "CHATGPT_AUTH0_URL": self.auth0_url,
            "OPENAI_BASE_URL": self.openai_url,
            "GO_CHATGPT_API_PROXY": "",
            "PROXY": "",
            "GATEWAY_PROXY": "",
        }

    async def close(self) -> None:
        """Stop serving; open streams get `SHUTDOWN_TIMEOUT` seconds, then are cancelled."""
        try:
            await self._runner.cleanup()
        finally:
            if self._auth0_runner is not None:
                await self._auth0_runner.cleanup()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    delay: float = 0.0,
    words: int | None = None,
    recorder: Recorder | None = None,
) -> Simulator:
    """Start the simulated upstreams on ``host:port`` (port 0: any free port).

    ``delay`` seconds separate stream events, ``words`` fixes the length of ChatGPT
    answers, and every request is appended to ``recorder`` (a new one if not given).
    The login's Auth0 host listens on another free port of ``host`` (`Simulator.auth0_url`).
    """
    recorder = recorder if recorder is not None else Recorder()
    login = LoginSimulator()
    auth0_runner, login.auth0_url = await _serve(login.auth0_app(recorder), host, 0)
    try:
        app = simulator_app(recorder, delay=delay, words=words, login=login)
        runner, url = await _serve(app, host, port)
    except BaseException:
        await auth0_runner.cleanup()
        raise
    login.web_url = url
    return Simulator(
        url=url, recorder=recorder, runner=runner, login=login, auth0_runner=auth0_runner
    )
