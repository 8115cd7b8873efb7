"""A simulated ChatGPT login: the classic Auth0 flow, on two hosts as in life.

The web host (the main simulator server) serves next-auth's ``/api/auth/*``; the
Auth0 host (a second port of the simulator, so the two hosts differ) serves the
Universal Login pages.  A client logs in as a browser would:

1. ``GET {web}/api/auth/csrf`` → ``{"csrfToken"}``, and the csrf cookie;
2. ``POST {web}/api/auth/signin/auth0?prompt=login`` (form ``callbackUrl=/``,
   ``csrfToken``, ``json=true``; the token must match the cookie, else 400)
   → ``{"url": "{auth0}/authorize?...&state=..."}``;
3. ``GET {auth0}/authorize?...`` → 302 ``/u/login/identifier?state=S``, a page with
   ``<input type="hidden" name="state" value="S">``;
4. ``POST {auth0}/u/login/identifier?state=S`` → 302 ``/u/login/password?state=S``,
   or 400 with a ``#prompt-alert`` for a refused e-mail;
5. ``POST {auth0}/u/login/password?state=S`` → 400 with ``#prompt-alert`` "Wrong
   email or password", or 302 ``/authorize/resume?state=S`` → 302
   ``{web}/api/auth/callback/auth0?code=C&state=...``, which sets the session cookie
   and redirects to ``/``; an account with two-factor login goes to
   ``/u/mfa-otp-challenge?state=S`` instead;
6. ``GET {web}/api/auth/session`` → ``{"accessToken": <a JWT with exp>, "user",
   "expires"}`` with a valid session cookie, else ``{}``.

The demo account is ``demo@example.com`` with the password ``demo-password``.
Tests configure the rest on ``Simulator.login``, a `LoginSimulator`: ``accounts``,
``refused`` e-mails, and ``fail_at[step] = Fault(...)`` to make one step answer a
429 with a reason, a 500, a broken body or nothing at all.  Every request to the
login endpoints is also appended to the simulator's recorder.

The cookies are set for the simulator's IP address: an ``aiohttp.CookieJar`` keeps
them only when made with ``unsafe=True``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from gateway.testing.recorder import Recorder, capture

Step = Literal[
    "csrf", "signin", "authorize", "identifier", "password", "resume", "callback", "session"
]
Host = Literal["web", "auth0"]

CSRF_COOKIE = "next-auth.csrf-token"
STATE_COOKIE = "next-auth.state"
CALLBACK_COOKIE = "next-auth.callback-url"
SESSION_COOKIE = "next-auth.session-token"
AUTH0_COOKIE = "auth0"
CLIENT_ID = "simulated-chatgpt"
#: How long an issued access token is valid (ChatGPT's are valid for about ten days).
TOKEN_LIFETIME = timedelta(days=10)
SESSION_LIFETIME = timedelta(days=30)
WRONG_CREDENTIALS = "Wrong email or password"


@attrs.define
class Account:
    """A ChatGPT account the simulated Auth0 knows; ``mfa`` asks for a one-time code."""

    email: str
    password: str = attrs.field(repr=False)
    mfa: bool = False


#: The account every simulator starts with.
DEMO_ACCOUNT = Account("demo@example.com", "demo-password")


@attrs.frozen
class Fault:
    """How one step misbehaves, set as ``LoginSimulator.fail_at[step]``.

    By default an error ``status`` with ``reason`` (JSON ``{"detail"}`` on the web
    host, a page with a ``#prompt-alert`` on the Auth0 host) and ``Retry-After``
    when given; ``broken`` answers 200 with a body no client can use (unparsable
    JSON, a page without a form); ``hang`` never answers.
    """

    status: int = 500
    reason: str = "simulated failure"
    retry_after: str | None = None
    broken: bool = False
    hang: bool = False

    @classmethod
    def too_many_requests(
        cls, reason: str = "Too many requests, slow down", retry_after: str | None = "30"
    ) -> Fault:
        """A 429 with ``reason`` and ``Retry-After``."""
        return cls(429, reason, retry_after)

    @classmethod
    def server_error(cls, reason: str = "simulated internal error") -> Fault:
        """A 500 with ``reason``."""
        return cls(500, reason)

    @classmethod
    def broken_body(cls) -> Fault:
        """A 200 whose body is not what the step promises."""
        return cls(200, "broken", broken=True)

    @classmethod
    def no_answer(cls) -> Fault:
        """No answer at all, until the client gives up."""
        return cls(200, "hang", hang=True)


@attrs.frozen
class IssuedSession:
    """A session the web host opened at the callback, and the access token it serves."""

    email: str
    access_token: str
    expires: str


@attrs.define
class _Transaction:
    """One Auth0 login in progress, from ``/authorize`` to ``/authorize/resume``."""

    cookie: str
    redirect_uri: str
    client_state: str
    username: str | None = None
    account: Account | None = None
    mfa_pending: bool = False


def _random(size: int = 24) -> str:
    return base64.urlsafe_b64encode(os.urandom(size)).rstrip(b"=").decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(email: str, issued_at: float) -> str:
    """A ChatGPT-shaped JWT (unsigned for real) for ``email``, with ``iat`` and ``exp``."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "simulated"}
    claims = {
        "https://api.openai.com/profile": {"email": email, "email_verified": True},
        "https://api.openai.com/auth": {"user_id": user_id(email)},
        "iss": "https://auth0.openai.com/",
        "sub": f"auth0|{user_id(email)}",
        "aud": ["https://api.openai.com/v1", "https://openai.openai.auth0app.com/userinfo"],
        "iat": int(issued_at),
        "exp": int(issued_at + TOKEN_LIFETIME.total_seconds()),
        "scope": "openid email profile model.read model.request organization.read offline_access",
        "jti": _random(12),
    }
    parts = [json.dumps(part, separators=(",", ":")).encode() for part in (header, claims)]
    return ".".join(_b64(part) for part in [*parts, os.urandom(32)])


def user_id(email: str) -> str:
    """The stable simulated user id of ``email``."""
    return "user-" + hashlib.sha256(email.lower().encode()).hexdigest()[:24]


def page(title: str, body: str, alert: str | None = None) -> str:
    """A Universal-Login-like HTML page; ``alert`` becomes its ``#prompt-alert``."""
    shown = (
        f'<div class="ulp-alert"><span id="prompt-alert" data-error-code="error">'
        f"{html.escape(alert)}</span></div>"
        if alert
        else ""
    )
    return (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{shown}{body}</main></body></html>"
    )


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{html.escape(value)}">'


def _html(text: str, status: int = 200, **headers: str) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def _redirect(location: str | URL) -> web.Response:
    return web.Response(status=302, headers={"Location": str(location)})


def _cookie(response: web.Response, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="Lax")


@attrs.define
class LoginSimulator:
    """The login flow's accounts, switches and state, shared by the web and Auth0 hosts."""

    #: The accounts that can log in.
    accounts: list[Account] = attrs.field(factory=lambda: [attrs.evolve(DEMO_ACCOUNT)])
    #: E-mail addresses the identifier step refuses (compared case-insensitively).
    refused: set[str] = attrs.field(factory=set)
    #: Steps that misbehave, and how.
    fail_at: dict[Step, Fault] = attrs.field(factory=dict)
    #: The hosts' base URLs (set by `start_simulator`; the web one defaults to the request's).
    web_url: str = ""
    auth0_url: str = ""
    #: The sessions opened so far, by session cookie.
    sessions: dict[str, IssuedSession] = attrs.field(factory=dict)
    _secret: bytes = attrs.field(factory=lambda: os.urandom(16), repr=False)
    _transactions: dict[str, _Transaction] = attrs.field(factory=dict, repr=False)
    _codes: dict[str, tuple[Account, str]] = attrs.field(factory=dict, repr=False)

    def account(self, email: str) -> Account | None:
        """The account of ``email`` (case-insensitive), if there is one."""
        return next((a for a in self.accounts if a.email.lower() == email.lower()), None)

    def tokens_for(self, email: str) -> list[str]:
        """The access tokens issued to ``email`` so far, oldest first."""
        return [s.access_token for s in self.sessions.values() if s.email == email.lower()]

    def install_web(self, app: web.Application, recorder: Recorder | None = None) -> None:
        """Add the web host's ``/api/auth/*`` routes (and ``/``) to ``app``."""
        app.middlewares.append(_record(recorder, "/api/auth/"))
        app.add_routes(
            [
                web.get("/", self._home),
                web.get("/api/auth/csrf", self._step("web", "csrf", self._csrf)),
                web.post("/api/auth/signin/auth0", self._step("web", "signin", self._signin)),
                web.get("/api/auth/callback/auth0", self._step("web", "callback", self._callback)),
                web.get("/api/auth/session", self._step("web", "session", self._session)),
                web.get("/api/auth/error", self._error_page),
            ]
        )

    def auth0_app(self, recorder: Recorder | None = None) -> web.Application:
        """The Auth0 host, an application of its own (serve it on another port)."""
        app = web.Application(middlewares=[_record(recorder, "/")])
        identifier = self._step("auth0", "identifier", self._identifier)
        password = self._step("auth0", "password", self._password)
        app.add_routes(
            [
                web.get("/authorize", self._step("auth0", "authorize", self._authorize)),
                web.get("/authorize/resume", self._step("auth0", "resume", self._resume)),
                web.get("/u/login/identifier", self._identifier_page),
                web.post("/u/login/identifier", identifier),
                web.get("/u/login/password", self._password_page),
                web.post("/u/login/password", password),
                web.get("/u/mfa-otp-challenge", self._mfa_page),
            ]
        )
        return app

    # --- faults ----------------------------------------------------------------------

    def _step(self, host: Host, step: Step, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            fault = self.fail_at.get(step)
            return await handler(request) if fault is None else await _misbehave(host, fault)

        return handle

    # --- the web host ----------------------------------------------------------------

    def _sign(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    def _web_url(self, request: web.Request) -> str:
        return self.web_url or str(request.url.origin())

    async def _home(self, request: web.Request) -> web.Response:
        return _html(page("ChatGPT (simulated)", "<p>Signed in or not, this is the home page.</p>"))

    async def _csrf(self, request: web.Request) -> web.Response:
        token = _random(32)
        response = web.json_response({"csrfToken": token})
        _cookie(response, CSRF_COOKIE, f"{token}|{self._sign(token)}")
        return response

    async def _signin(self, request: web.Request) -> web.Response:
        form = await request.post()
        token, _, digest = request.cookies.get(CSRF_COOKIE, "").partition("|")
        given = form.get("csrfToken")
        if not token or not hmac.compare_digest(digest, self._sign(token)) or given != token:
            return web.json_response({"detail": "CSRF token missing or invalid"}, status=400)
        client_state = _random()
        callback = f"{self._web_url(request)}/api/auth/callback/auth0"
        query = {
            "client_id": CLIENT_ID,
            "scope": "openid email profile offline_access model.request model.read",
            "response_type": "code",
            "redirect_uri": callback,
            "audience": "https://api.openai.com/v1",
            "prompt": request.query.get("prompt", "login"),
            "state": client_state,
            "code_challenge": _random(32),
            "code_challenge_method": "S256",
        }
        url = URL(f"{self.auth0_url}/authorize").with_query(query)
        response = (
            web.json_response({"url": str(url)}) if form.get("json") == "true" else _redirect(url)
        )
        _cookie(response, STATE_COOKIE, client_state)
        callback_url = str(form.get("callbackUrl", "/"))
        _cookie(response, CALLBACK_COOKIE, callback_url if callback_url.startswith("/") else "/")
        return response

    async def _callback(self, request: web.Request) -> web.Response:
        code, state = request.query.get("code", ""), request.query.get("state", "")
        issued = self._codes.pop(code, None)
        if issued is None or state != issued[1] or request.cookies.get(STATE_COOKIE) != state:
            return _redirect("/api/auth/error?error=OAuthCallback")
        account = issued[0]
        now = time.time()
        expires = datetime.fromtimestamp(now, UTC) + SESSION_LIFETIME
        session = IssuedSession(
            email=account.email.lower(),
            access_token=access_token(account.email, now),
            expires=expires.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        session_token = _random(32)
        self.sessions[session_token] = session
        response = _redirect(request.cookies.get(CALLBACK_COOKIE, "/"))
        _cookie(response, SESSION_COOKIE, session_token)
        response.del_cookie(STATE_COOKIE, path="/")
        return response

    async def _session(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if session is None:
            return web.json_response({})
        account = self.account(session.email)
        user: dict[str, Any] = {
            "id": user_id(session.email),
            "name": session.email.partition("@")[0],
            "email": session.email,
            "image": None,
            "picture": None,
            "idp": "auth0",
            "iat": int(time.time()),
            "mfa": bool(account and account.mfa),
            "groups": [],
        }
        return web.json_response(
            {
                "user": user,
                "expires": session.expires,
                "accessToken": session.access_token,
                "authProvider": "auth0",
            }
        )

    async def _error_page(self, request: web.Request) -> web.Response:
        error = request.query.get("error", "Default")
        return _html(page("Sign in error", "", alert=f"Sign in failed ({error})"), status=400)

    # --- the Auth0 host --------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        missing = [
            name
            for name in ("client_id", "redirect_uri", "state", "response_type")
            if not query.get(name)
        ]
        if missing:
            return _html(page("Error", "", alert=f"missing {', '.join(missing)}"), status=400)
        state = _random(30)
        self._transactions[state] = _Transaction(
            cookie=_random(), redirect_uri=query["redirect_uri"], client_state=query["state"]
        )
        response = _redirect(URL("/u/login/identifier").with_query(state=state))
        _cookie(response, AUTH0_COOKIE, self._transactions[state].cookie)
        return response

    def _transaction(self, request: web.Request, form_state: object = None) -> _Transaction:
        """The transaction a request continues; a page with an alert (400) when there is none."""
        state = request.query.get("state", "")
        transaction = self._transactions.get(state)
        if form_state is not None and form_state != state:
            transaction = None
        if transaction is None or request.cookies.get(AUTH0_COOKIE) != transaction.cookie:
            raise _alert("Your session has expired, please try again.")
        return transaction

    async def _identifier_page(self, request: web.Request) -> web.Response:
        self._transaction(request)
        form = _hidden("state", request.query["state"]) + (
            '<input type="text" name="username" autocomplete="email">'
            '<button type="submit" name="action" value="default">Continue</button>'
        )
        return _html(page("Welcome back", f'<form method="POST">{form}</form>'))

    async def _identifier(self, request: web.Request) -> web.Response:
        form = await request.post()
        transaction = self._transaction(request, form.get("state"))
        username = str(form.get("username", "")).strip()
        if "@" not in username:
            raise _alert("Email is not valid.")
        if username.lower() in {e.lower() for e in self.refused}:
            raise _alert("This e-mail address cannot be used to sign in.")
        transaction.username = username
        return _redirect(URL("/u/login/password").with_query(state=request.query["state"]))

    async def _password_page(self, request: web.Request) -> web.Response:
        transaction = self._transaction(request)
        form = (
            _hidden("state", request.query["state"])
            + _hidden("username", transaction.username or "")
            + '<input type="password" name="password">'
            '<button type="submit" name="action" value="default">Continue</button>'
        )
        return _html(page("Enter your password", f'<form method="POST">{form}</form>'))

    async def _password(self, request: web.Request) -> web.Response:
        form = await request.post()
        transaction = self._transaction(request, form.get("state"))
        username = str(form.get("username", "")).strip()
        if transaction.username is None or username.lower() != transaction.username.lower():
            raise _alert("Something went wrong, please try again later.")
        account = self.account(username)
        if account is None or not hmac.compare_digest(
            account.password.encode(), str(form.get("password", "")).encode()
        ):
            raise _alert(WRONG_CREDENTIALS)
        transaction.account = account
        transaction.mfa_pending = account.mfa
        target = "/u/mfa-otp-challenge" if account.mfa else "/authorize/resume"
        return _redirect(URL(target).with_query(state=request.query["state"]))

    async def _mfa_page(self, request: web.Request) -> web.Response:
        self._transaction(request)
        form = _hidden("state", request.query["state"]) + '<input type="text" name="code">'
        return _html(page("Verify your identity", f'<form method="POST">{form}</form>'))

    async def _resume(self, request: web.Request) -> web.Response:
        transaction = self._transaction(request)
        account = transaction.account
        if account is None or transaction.mfa_pending:
            raise _alert("Something went wrong, please try again later.")
        del self._transactions[request.query["state"]]
        code = _random()
        self._codes[code] = (account, transaction.client_state)
        target = URL(transaction.redirect_uri).update_query(
            code=code, state=transaction.client_state
        )
        return _redirect(target)


def _alert(message: str) -> web.HTTPBadRequest:
    """An Auth0 error page (400) carrying ``message`` in its ``#prompt-alert``, to raise."""
    return web.HTTPBadRequest(text=page("Log in", "", alert=message), content_type="text/html")


async def _misbehave(host: Host, fault: Fault) -> web.Response:
    if fault.hang:
        await asyncio.Event().wait()
    if fault.broken:
        if host == "web":
            return web.Response(text='{"csrfToken": "', content_type="application/json")
        return _html("<html><body><p>Something unexpected happened</body>")
    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
    if host == "web":
        return web.json_response({"detail": fault.reason}, status=fault.status, headers=headers)
    return _html(page("Error", "", alert=fault.reason), status=fault.status, **headers)


def _record(recorder: Recorder | None, prefix: str) -> Middleware:
    """A middleware appending the requests under ``prefix`` to ``recorder``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if recorder is not None and request.path.startswith(prefix):
            recorder.add(await capture(request))
        return await handler(request)

    return middleware
