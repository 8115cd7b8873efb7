"""What the simulated login hands out: accounts, faults, tokens, pages and redirects."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import os
from datetime import timedelta
from typing import Literal

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from gateway.testing.recorder import Recorder, capture

Step = Literal[
    "csrf", "signin", "authorize", "identifier", "password", "resume", "callback", "session"
]
Host = Literal["web", "auth0"]

#: How long an issued access token is valid (ChatGPT's are valid for about ten days).
TOKEN_LIFETIME = timedelta(days=10)


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


def random_token(size: int = 24) -> str:
    return base64.urlsafe_b64encode(os.urandom(size)).rstrip(b"=").decode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(email: str, issued_at: float, lifetime: timedelta = TOKEN_LIFETIME) -> str:
    """A ChatGPT-shaped JWT (unsigned for real) for ``email``, with ``iat`` and ``exp``."""
    header = {"alg": "RS256", "typ": "JWT", "kid": "simulated"}
    claims = {
        "https://api.openai.com/profile": {"email": email, "email_verified": True},
        "https://api.openai.com/auth": {"user_id": user_id(email)},
        "iss": "https://auth0.openai.com/",
        "sub": f"auth0|{user_id(email)}",
        "aud": ["https://api.openai.com/v1", "https://openai.openai.auth0app.com/userinfo"],
        "iat": int(issued_at),
        "exp": int(issued_at + lifetime.total_seconds()),
        "scope": "openid email profile model.read model.request organization.read offline_access",
        "jti": random_token(12),
    }
    parts = [json.dumps(part, separators=(",", ":")).encode() for part in (header, claims)]
    return ".".join(b64(part) for part in [*parts, os.urandom(32)])


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


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{html.escape(value)}">'


def html_page(text: str, status: int = 200, **headers: str) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def redirect(location: str | URL) -> web.Response:
    return web.Response(status=302, headers={"Location": str(location)})


def set_cookie(response: web.Response, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="Lax")


def alert(message: str) -> web.HTTPBadRequest:
    """An Auth0 error page (400) carrying ``message`` in its ``#prompt-alert``, to raise."""
    return web.HTTPBadRequest(text=page("Log in", "", alert=message), content_type="text/html")


async def misbehave(host: Host, fault: Fault) -> web.Response:
    if fault.hang:
        await asyncio.Event().wait()
    if fault.broken:
        if host == "web":
            return web.Response(text='{"csrfToken": "', content_type="application/json")
        return html_page("<html><body><p>Something unexpected happened</body>")
    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
    if host == "web":
        return web.json_response({"detail": fault.reason}, status=fault.status, headers=headers)
    return html_page(page("Error", "", alert=fault.reason), status=fault.status, **headers)


def record_requests(recorder: Recorder | None, prefix: str) -> Middleware:
    """A middleware appending the requests under ``prefix`` to ``recorder``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if recorder is not None and request.path.startswith(prefix):
            recorder.add(await capture(request))
        return await handler(request)

    return middleware
