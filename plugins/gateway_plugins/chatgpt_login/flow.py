"""The six steps of the classic ChatGPT login (SPEC section 6), over one cookie jar.

`LoginFlow` walks the ChatGPT web host and its Auth0 host as a browser would,
through a `LoginClient`, and turns every way it can go wrong into a
`GatewayError`: the caller only has to answer with it.  Redirects are followed
by hand, so that a two-factor challenge is seen in the chain, and the chain
stops at the ChatGPT callback, which sets the session cookie.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from yarl import URL

from gateway.api import BadGateway, Forbidden, HttpClient, Unauthorized, get_logger
from gateway_plugins.chatgpt_login.client import Answer, LoginClient
from gateway_plugins.chatgpt_login.page import form_state

MAX_REDIRECTS = 10
CALLBACK_PATH = "/api/auth/callback/auth0"
#: The identifier form's fields besides ``state`` and ``username``, as the browser sends them.
IDENTIFIER_FIELDS = {
    "js-available": "true",
    "webauthn-available": "true",
    "is-brave": "false",
    "webauthn-platform-available": "false",
    "action": "default",
}


@attrs.frozen
class Credentials:
    """What the client logs in with; the password never appears in a repr."""

    username: str
    password: str = attrs.field(repr=False)


class LoginFlow:
    """One login: `run` returns the access token or raises a `GatewayError`."""

    def __init__(
        self,
        http: HttpClient,
        web_url: str,
        auth0_url: str,
        credentials: Credentials,
        *,
        headers: Mapping[str, str],
        proxy: str | None = None,
        log: Any = None,
    ) -> None:
        self._web = web_url.rstrip("/")
        self._auth0 = auth0_url.rstrip("/")
        self._credentials = credentials
        self._client = LoginClient(
            http,
            (self._web, self._auth0),
            headers=headers,
            secret=credentials.password,
            proxy=proxy,
            log=log if log is not None else get_logger("gateway"),
        )

    async def run(self) -> str:
        """The six steps, in order; the access token of the new session."""
        csrf_token = await self.csrf_token()
        authorize_url = await self.authorize_url(csrf_token)
        state = await self.login_state(authorize_url)
        await self.check_username(state)
        await self.check_password(state)
        return await self.access_token()

    async def csrf_token(self) -> str:
        """Step 1: ``GET {web}/api/auth/csrf`` → ``{"csrfToken"}`` (and its cookie)."""
        answer = await self._client.send("csrf", "GET", URL(f"{self._web}/api/auth/csrf"))
        return self._client.field(self._client.json(answer, "csrf"), "csrfToken", "csrf")

    async def authorize_url(self, csrf_token: str) -> URL:
        """Step 2: sign in with the Auth0 provider → the authorize URL to visit."""
        form = {"callbackUrl": "/", "csrfToken": csrf_token, "json": "true"}
        url = URL(f"{self._web}/api/auth/signin/auth0").with_query(prompt="login")
        answer = await self._client.send("signin", "POST", url, form)
        target = self._client.field(self._client.json(answer, "signin"), "url", "signin")
        try:
            return URL(self._web).join(URL(target))
        except ValueError:
            raise BadGateway("the sign-in answer's url is not a URL") from None

    async def login_state(self, authorize_url: URL) -> str:
        """Step 3: visit the authorize URL to the identifier page; read its ``state``."""
        answer = await self._client.send("authorize", "GET", authorize_url)
        answer = await self._follow("authorize", answer)
        if answer.status != 200:
            raise self._client.refusal(answer, "authorize")
        state = form_state(answer.text)
        if state is None and answer.url != authorize_url:
            # The page's own URL (/u/login/identifier?state=S); not the authorize URL,
            # whose state is the web host's, not Auth0's.
            state = answer.url.query.get("state")
        if not state:
            raise BadGateway("the login page has no state: the login service changed or failed")
        return state

    async def check_username(self, state: str) -> None:
        """Step 4: submit the e-mail address; a 4xx means it was refused."""
        form = {"state": state, "username": self._credentials.username, **IDENTIFIER_FIELDS}
        url = self._auth0_page("identifier", state)
        answer = await self._client.send("identifier", "POST", url, form)
        if 400 <= answer.status < 500 and answer.status != 429:
            reason = self._client.reason(answer) or "the login service refused this e-mail address"
            raise Unauthorized(reason)
        answer = await self._follow("identifier", answer)
        if answer.status >= 300:
            raise self._client.refusal(answer, "identifier")

    async def check_password(self, state: str) -> None:
        """Step 5: submit the password, then follow the redirects to the ChatGPT callback."""
        form = {
            "state": state,
            "username": self._credentials.username,
            "password": self._credentials.password,
            "action": "default",
        }
        url = self._auth0_page("password", state)
        answer = await self._client.send("password", "POST", url, form)
        if answer.status == 400:
            raise Unauthorized(self._client.reason(answer) or "wrong e-mail address or password")
        if answer.redirect is None:
            raise self._client.refusal(answer, "password")
        answer = await self._follow("password", answer)
        if answer.url.path != CALLBACK_PATH:
            if answer.status >= 400:
                raise self._client.refusal(answer, "password")
            raise BadGateway("the login did not reach the ChatGPT callback")
        if answer.status >= 400:
            raise self._client.refusal(answer, "callback")
        target = answer.redirect
        if target is not None and target.path.startswith("/api/auth/error"):
            error = target.query.get("error", "unknown error")
            raise BadGateway(f"the ChatGPT site rejected the login callback ({error})")

    async def access_token(self) -> str:
        """Step 6: ``GET {web}/api/auth/session`` → the session's ``accessToken``."""
        answer = await self._client.send("session", "GET", URL(f"{self._web}/api/auth/session"))
        data = self._client.json(answer, "session")
        if not isinstance(data.get("accessToken"), str) or not data["accessToken"]:
            raise BadGateway("the ChatGPT session has no access token: the login did not complete")
        token: str = data["accessToken"]
        return token

    def _auth0_page(self, name: str, state: str) -> URL:
        return URL(f"{self._auth0}/u/login/{name}").with_query(state=state)

    async def _follow(self, step: str, answer: Answer) -> Answer:
        """Follow ``answer``'s redirects until an answer that is not one, or the callback.

        The callback sets the session cookie; where it redirects to next is not needed.
        """
        for _ in range(MAX_REDIRECTS):
            target = answer.redirect
            if target is None:
                return answer
            if target.path.startswith("/u/mfa"):
                raise Forbidden(
                    "this account uses two-factor login, which the gateway's login does not "
                    "support: log in with a browser and send the access token instead"
                )
            at_callback = target.path == CALLBACK_PATH
            answer = await self._client.send("callback" if at_callback else step, "GET", target)
            if at_callback:
                return answer
        raise BadGateway(f"too many redirects at the {step} step")
