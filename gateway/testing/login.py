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

import hashlib
import hmac
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from gateway.testing.login_pages import (
    DEMO_ACCOUNT,
    TOKEN_LIFETIME,
    Account,
    Fault,
    Host,
    IssuedSession,
    Step,
    access_token,
    alert,
    hidden,
    html_page,
    misbehave,
    page,
    random_token,
    record_requests,
    redirect,
    set_cookie,
    user_id,
)
from gateway.testing.recorder import Recorder

CSRF_COOKIE = "next-auth.csrf-token"
STATE_COOKIE = "next-auth.state"
CALLBACK_COOKIE = "next-auth.callback-url"
SESSION_COOKIE = "next-auth.session-token"
AUTH0_COOKIE = "auth0"
CLIENT_ID = "simulated-chatgpt"
SESSION_LIFETIME = timedelta(days=30)
WRONG_CREDENTIALS = "Wrong email or password"


@attrs.define
class _Transaction:
    """One Auth0 login in progress, from ``/authorize`` to ``/authorize/resume``."""

    cookie: str
    redirect_uri: str
    client_state: str
    username: str | None = None
    account: Account | None = None
    mfa_pending: bool = False


@attrs.define
class LoginSimulator:
    """The login flow's accounts, switches and state, shared by the web and Auth0 hosts."""

    #: The accounts that can log in.
    accounts: list[Account] = attrs.field(factory=lambda: [attrs.evolve(DEMO_ACCOUNT)])
    #: E-mail addresses the identifier step refuses (compared case-insensitively).
    refused: set[str] = attrs.field(factory=set)
    #: Steps that misbehave, and how.
    fail_at: dict[Step, Fault] = attrs.field(factory=dict)
    #: How long the access tokens it issues last (their JWT ``exp``).
    token_lifetime: timedelta = TOKEN_LIFETIME
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
        app.middlewares.append(record_requests(recorder, "/api/auth/"))
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
        app = web.Application(middlewares=[record_requests(recorder, "/")])
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
            return await handler(request) if fault is None else await misbehave(host, fault)

        return handle

    # --- the web host ----------------------------------------------------------------

    def _sign(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    def _web_url(self, request: web.Request) -> str:
        return self.web_url or str(request.url.origin())

    async def _home(self, request: web.Request) -> web.Response:
        return html_page(
            page("ChatGPT (simulated)", "<p>Signed in or not, this is the home page.</p>")
        )

    async def _csrf(self, request: web.Request) -> web.Response:
        token = random_token(32)
        response = web.json_response({"csrfToken": token})
        set_cookie(response, CSRF_COOKIE, f"{token}|{self._sign(token)}")
        return response

    async def _signin(self, request: web.Request) -> web.Response:
        form = await request.post()
        token, _, digest = request.cookies.get(CSRF_COOKIE, "").partition("|")
        given = form.get("csrfToken")
        if not token or not hmac.compare_digest(digest, self._sign(token)) or given != token:
            return web.json_response({"detail": "CSRF token missing or invalid"}, status=400)
        client_state = random_token()
        callback = f"{self._web_url(request)}/api/auth/callback/auth0"
        query = {
            "client_id": CLIENT_ID,
            "scope": "openid email profile offline_access model.request model.read",
            "response_type": "code",
            "redirect_uri": callback,
            "audience": "https://api.openai.com/v1",
            "prompt": request.query.get("prompt", "login"),
            "state": client_state,
            "code_challenge": random_token(32),
            "code_challenge_method": "S256",
        }
        url = URL(f"{self.auth0_url}/authorize").with_query(query)
        response = (
            web.json_response({"url": str(url)}) if form.get("json") == "true" else redirect(url)
        )
        set_cookie(response, STATE_COOKIE, client_state)
        callback_url = str(form.get("callbackUrl", "/"))
        set_cookie(response, CALLBACK_COOKIE, callback_url if callback_url.startswith("/") else "/")
        return response

    async def _callback(self, request: web.Request) -> web.Response:
        code, state = request.query.get("code", ""), request.query.get("state", "")
        issued = self._codes.pop(code, None)
        if issued is None or state != issued[1] or request.cookies.get(STATE_COOKIE) != state:
            return redirect("/api/auth/error?error=OAuthCallback")
        account = issued[0]
        now = time.time()
        expires = datetime.fromtimestamp(now, UTC) + SESSION_LIFETIME
        session = IssuedSession(
            email=account.email.lower(),
            access_token=access_token(account.email, now, self.token_lifetime),
            expires=expires.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        session_token = random_token(32)
        self.sessions[session_token] = session
        response = redirect(request.cookies.get(CALLBACK_COOKIE, "/"))
        set_cookie(response, SESSION_COOKIE, session_token)
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
        return html_page(page("Sign in error", "", alert=f"Sign in failed ({error})"), status=400)

    # --- the Auth0 host --------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        missing = [
            name
            for name in ("client_id", "redirect_uri", "state", "response_type")
            if not query.get(name)
        ]
        if missing:
            return html_page(page("Error", "", alert=f"missing {', '.join(missing)}"), status=400)
        state = random_token(30)
        self._transactions[state] = _Transaction(
            cookie=random_token(), redirect_uri=query["redirect_uri"], client_state=query["state"]
        )
        response = redirect(URL("/u/login/identifier").with_query(state=state))
        set_cookie(response, AUTH0_COOKIE, self._transactions[state].cookie)
        return response

    def _transaction(self, request: web.Request, form_state: object = None) -> _Transaction:
        """The transaction a request continues; a page with an alert (400) when there is none."""
        state = request.query.get("state", "")
        transaction = self._transactions.get(state)
        if form_state is not None and form_state != state:
            transaction = None
        if transaction is None or request.cookies.get(AUTH0_COOKIE) != transaction.cookie:
            raise alert("Your session has expired, please try again.")
        return transaction

    async def _identifier_page(self, request: web.Request) -> web.Response:
        self._transaction(request)
        form = hidden("state", request.query["state"]) + (
            '<input type="text" name="username" autocomplete="email">'
            '<button type="submit" name="action" value="default">Continue</button>'
        )
        return html_page(page("Welcome back", f'<form method="POST">{form}</form>'))

    async def _identifier(self, request: web.Request) -> web.Response:
        form = await request.post()
        transaction = self._transaction(request, form.get("state"))
        username = str(form.get("username", "")).strip()
        if "@" not in username:
            raise alert("Email is not valid.")
        if username.lower() in {e.lower() for e in self.refused}:
            raise alert("This e-mail address cannot be used to sign in.")
        transaction.username = username
        return redirect(URL("/u/login/password").with_query(state=request.query["state"]))

    async def _password_page(self, request: web.Request) -> web.Response:
        transaction = self._transaction(request)
        form = (
            hidden("state", request.query["state"])
            + hidden("username", transaction.username or "")
            + '<input type="password" name="password">'
            '<button type="submit" name="action" value="default">Continue</button>'
        )
        return html_page(page("Enter your password", f'<form method="POST">{form}</form>'))

    async def _password(self, request: web.Request) -> web.Response:
        form = await request.post()
        transaction = self._transaction(request, form.get("state"))
        username = str(form.get("username", "")).strip()
        if transaction.username is None or username.lower() != transaction.username.lower():
            raise alert("Something went wrong, please try again later.")
        account = self.account(username)
        if account is None or not hmac.compare_digest(
            account.password.encode(), str(form.get("password", "")).encode()
        ):
            raise alert(WRONG_CREDENTIALS)
        transaction.account = account
        transaction.mfa_pending = account.mfa
        target = "/u/mfa-otp-challenge" if account.mfa else "/authorize/resume"
        return redirect(URL(target).with_query(state=request.query["state"]))

    async def _mfa_page(self, request: web.Request) -> web.Response:
        self._transaction(request)
        form = hidden("state", request.query["state"]) + '<input type="text" name="code">'
        return html_page(page("Verify your identity", f'<form method="POST">{form}</form>'))

    async def _resume(self, request: web.Request) -> web.Response:
        transaction = self._transaction(request)
        account = transaction.account
        if account is None or transaction.mfa_pending:
            raise alert("Something went wrong, please try again later.")
        del self._transactions[request.query["state"]]
        code = random_token()
        self._codes[code] = (account, transaction.client_state)
        target = URL(transaction.redirect_uri).update_query(
            code=code, state=transaction.client_state
        )
        return redirect(target)
