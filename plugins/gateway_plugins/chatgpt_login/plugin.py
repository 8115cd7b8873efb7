"""``chatgpt_login``: ``POST /auth/login`` with an e-mail and password → a ChatGPT access token.

The plugin answers the request itself (the route's upstream only tells
``upstream_proxy`` which proxy to choose).  It runs the classic ChatGPT Auth0
login of SPEC section 6 (`gateway_plugins.chatgpt_login.flow`) against the configured
hosts, with a fresh cookie jar per login, through the proxy ``upstream_proxy``
chose (``ex.proxy``), within ``timeout`` for the whole login.

Outcomes, each an error in the JSON envelope except the first:

=====  ==============================================================================
200    ``{"accessToken": "..."}``
400    the body is not a JSON object with non-empty string ``username`` and ``password``
401    wrong credentials (the login page's ``#prompt-alert`` text), or a refused e-mail
403    two-factor login (not supported), or the login service blocked the login (403)
405    a method other than ``POST``
429    the login service said too many requests: its reason, and its ``Retry-After``
502    the login service is unreachable or broken (5xx, unexpected status, unparsable
       or incomplete answers, no ``state``, a redirect to an unexpected host)
504    the login did not finish within ``timeout`` (a timeout is not a broken upstream)
=====  ==============================================================================

The password is never logged, and never quoted in an answer (an upstream reason
that echoes it has it blanked); each step is logged at debug level without secrets.

``email`` and ``password`` are the server's own account, which ``imitate`` logs in
with at start (`gateway_plugins.chatgpt_login.session`); ``/auth/login`` does not use them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
from aiohttp import web

from gateway.api import (
    BadRequest,
    Exchange,
    GatewayContext,
    GatewayTimeout,
    HttpClient,
    HttpUrl,
    MethodNotAllowed,
    Plugin,
    PositiveSeconds,
    Seconds,
)
from gateway_plugins.chatgpt_login.flow import Credentials, LoginFlow

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


def read_credentials(body: Any) -> Credentials:
    """The ``username`` and ``password`` of a login request body; `BadRequest` otherwise.

    The message names the fields that are wrong, never their values.
    """
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"username": "...", "password": "..."}')
    username, password = body.get("username"), body.get("password")
    wrong = [
        name
        for name, value in (("username", username), ("password", password))
        if not isinstance(value, str) or not value.strip()
    ]
    if wrong:
        raise BadRequest(f"{' and '.join(wrong)} must be given as non-empty strings")
    assert isinstance(username, str) and isinstance(password, str)
    return Credentials(username=username.strip(), password=password)


class ChatGPTLogin(Plugin):
    """Logs in to ChatGPT with an e-mail and password and answers with the access token."""

    @attrs.frozen
    class Config:
        """``[plugins.chatgpt_login]``."""

        #: The ChatGPT web site, which serves ``/api/auth/*`` (``CHATGPT_WEB_URL``).
        web_url: HttpUrl = HttpUrl("https://chatgpt.com")
        #: The login identity provider (``CHATGPT_AUTH0_URL``).
        auth0_url: HttpUrl = HttpUrl("https://auth0.openai.com")
        #: The longest a whole login may take; beyond it the client gets a 504.
        timeout: PositiveSeconds = Seconds(30.0)
        #: The browser the login presents itself as.
        user_agent: str = DEFAULT_USER_AGENT
        #: The server's own account (``OPENAI_EMAIL``, ``OPENAI_PASSWORD``), logged in at
        #: start for ``imitate`` (see `gateway_plugins.chatgpt_login.session`); never logged.
        email: str = ""
        password: str = attrs.field(default="", repr=False)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if bool(config.email) != bool(config.password):
            raise ValueError("email and password (OPENAI_EMAIL, OPENAI_PASSWORD) go together")
        self.http: HttpClient | None = None  # set at start-up

    async def startup(self, context: GatewayContext) -> None:
        """Keep the gateway's HTTP client: every login calls through it."""
        self.http = context.http

    async def on_request(self, ex: Exchange) -> web.StreamResponse:
        """Answer the login request: the access token, or the reason there is none."""
        if ex.method != "POST":
            raise MethodNotAllowed(
                f"{ex.method} is not allowed: log in with POST", headers={"Allow": "POST"}
            )
        credentials = read_credentials(await ex.json())
        assert self.http is not None
        token = await self.login(self.http, credentials, ex.proxy, ex.log)
        ex.log.debug("chatgpt login succeeded")
        return web.json_response({"accessToken": token}, headers={"Cache-Control": "no-store"})

    async def login(
        self, http: HttpClient, credentials: Credentials, proxy: str | None, log: Any = None
    ) -> str:
        """Run one login with ``http`` through ``proxy``, with a fresh cookie jar; return
        the access token.

        Raises a `GatewayError` for every failure (see the module's table).
        """
        config = self.config
        headers = {"User-Agent": config.user_agent, "Accept-Language": "en-US,en;q=0.9"}
        flow = LoginFlow(
            http,
            config.web_url,
            config.auth0_url,
            credentials,
            headers=headers,
            proxy=proxy,
            log=log,
        )
        try:
            async with asyncio.timeout(config.timeout):
                return await flow.run()
        except TimeoutError as exc:
            raise GatewayTimeout(
                f"the ChatGPT login did not finish within {config.timeout:g} s"
            ) from exc
