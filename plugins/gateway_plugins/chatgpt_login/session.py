"""The server's own ChatGPT account: go-chatgpt-api's ``OPENAI_EMAIL`` and ``OPENAI_PASSWORD``.

With ``email`` and ``password`` in ``[plugins.chatgpt_login]``, a `ServerLogin`
logs in when ``imitate`` starts, through the same login flow as ``/auth/login``
and the outbound proxy of the upstream ``imitate`` calls, and logs in again at
`RENEW_AT` of the token's lifetime, well before it expires.  A failed login is
logged (never the password) and tried again with back-off, from `RETRY_FIRST`
up to `RETRY_MAX`; wrong credentials or a two-factor account (401, 403) are not
tried again: a reload or a restart does.

``imitate`` serves with this token when the request brings none and its own
``access_token`` is empty, under ``access_token``'s rule: a client nobody
authenticated (no gateway key, so no identity) gets 401 unless ``[plugins.imitate]``
says ``allow_anonymous = true``; ``imitate`` says so in a warning at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.api import (
    GatewayConfig,
    GatewayError,
    HttpClient,
    ServiceUnavailable,
    get_logger,
    route_plugin_names,
    structure,
)
from gateway_plugins.chatgpt_login.flow import Credentials
from gateway_plugins.chatgpt_login.plugin import ChatGPTLogin
from gateway_plugins.jwt import jwt_expiry

__all__ = ["ServerLogin"]

logger = get_logger("gateway")

#: The share of a token's lifetime after which it is renewed.
RENEW_AT = 0.8
#: How long a token whose expiry cannot be read is used before it is renewed.
UNKNOWN_LIFETIME = 24 * 3600.0
#: The first and the longest wait before a failed login is tried again.
RETRY_FIRST, RETRY_MAX = 30.0, 1800.0
#: Answers that another try with the same credentials would only repeat.
_FINAL = frozenset({401, 403})


class ServerLogin:
    """Keeps a fresh ChatGPT access token for the server's own account."""

    def __init__(
        self, login: ChatGPTLogin, http: HttpClient, credentials: Credentials, proxy: str | None
    ) -> None:
        self._login = login
        self._http = http
        self._credentials = credentials
        self._proxy = proxy
        self._token: str | None = None
        self._expires = 0.0
        self._problem = "the login has not finished yet"
        self._tried = asyncio.Event()  # the first login has succeeded or failed
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls, config: GatewayConfig, plugin: str, http: HttpClient
    ) -> ServerLogin | None:
        """The server login ``config`` asks for (``None`` without an e-mail), for ``plugin``,
        calling through ``http``.

        It goes through the outbound proxy of the first route's upstream that runs ``plugin``.
        """
        table = config.plugins.get("chatgpt_login", {})
        login_config, problems = structure(dict(table), ChatGPTLogin.Config, "")
        if problems or not login_config.email:
            return None  # (the config check reports the problems)
        names = [
            route.upstream
            for route in config.routes.values()
            if route.upstream is not None and plugin in route_plugin_names(config, route)
        ]
        upstream = config.upstreams.get(names[0]) if names else None
        proxy = upstream.proxy[0] if upstream is not None and upstream.proxy else None
        credentials = Credentials(login_config.email, login_config.password)
        return cls(ChatGPTLogin(login_config), http, credentials, proxy)

    def start(self) -> None:
        """Log in now, and again before each token expires, in the background."""
        self._task = asyncio.create_task(self._keep_fresh())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def authorization(self) -> str:
        """The ``Authorization`` value with the current token, or the error that says why
        there is none (``imitate`` decides who may be served with it)."""
        if self._token is None:
            # Right after start: wait for the first login, as long as a login may take.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._tried.wait()), self._login.config.timeout
                )
        if self._token is None or self._expires <= time.time():
            raise ServiceUnavailable(f"the server's ChatGPT login failed: {self._problem}")
        return f"Bearer {self._token}"

    async def _keep_fresh(self) -> None:
        retry = RETRY_FIRST
        while True:
            try:
                token = await self._login.login(self._http, self._credentials, self._proxy)
            except GatewayError as exc:
                self._problem = exc.message
                final = exc.status in _FINAL
                logger.error(
                    "chatgpt server login failed",
                    reason=exc.message,
                    status=exc.status,
                    retry_in=None if final else retry,
                )
                self._tried.set()
                if final:
                    return
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            now = time.time()
            self._token = token
            self._expires = jwt_expiry(token) or now + UNKNOWN_LIFETIME
            self._tried.set()
            retry = RETRY_FIRST
            renew_in = max(1.0, RENEW_AT * (self._expires - now))
            logger.info("chatgpt server login succeeded", renew_in=round(renew_in))
            await asyncio.sleep(renew_in)
