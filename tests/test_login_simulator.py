"""The simulated ChatGPT login (`gateway.testing.login`), driven as a browser would drive it."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from yarl import URL

from gateway.testing import DEMO_ACCOUNT, Account, Fault, Simulator, start_simulator
from gateway_plugins.jwt import jwt_expiry

ALERT = re.compile(r'<span id="prompt-alert"[^>]*>([^<]*)</span>')
STATE_INPUT = re.compile(r'<input type="hidden" name="state" value="([^"]+)">')


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = await start_simulator()
    yield simulator
    await simulator.close()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies, of IP-address hosts too (the simulator's)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


class Browser:
    """The login steps of SPEC section 6, one method each, on one cookie jar."""

    def __init__(self, http: aiohttp.ClientSession, sim: Simulator) -> None:
        self.http = http
        self.sim = sim

    async def csrf(self) -> str:
        async with self.http.get(f"{self.sim.web_url}/api/auth/csrf") as response:
            assert response.status == 200
            token: str = (await response.json())["csrfToken"]
            return token

    async def signin(self, csrf: str) -> aiohttp.ClientResponse:
        form = {"callbackUrl": "/", "csrfToken": csrf, "json": "true"}
        url = f"{self.sim.web_url}/api/auth/signin/auth0?prompt=login"
        async with self.http.post(url, data=form) as response:
            await response.read()
            return response

    async def authorize_url(self) -> str:
        response = await self.signin(await self.csrf())
        assert response.status == 200
        url: str = (await response.json())["url"]
        return url

    async def state(self) -> str:
        async with self.http.get(await self.authorize_url()) as response:
            assert response.status == 200
            match = STATE_INPUT.search(await response.text())
            assert match is not None
            assert response.url.query["state"] == match.group(1)
            return match.group(1)

    async def identifier(self, state: str, username: str) -> tuple[int, str, str | None]:
        form = {
            "state": state,
            "username": username,
            "js-available": "true",
            "webauthn-available": "true",
            "is-brave": "false",
            "webauthn-platform-available": "false",
            "action": "default",
        }
        url = f"{self.sim.auth0_url}/u/login/identifier?state={state}"
        async with self.http.post(url, data=form, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers.get("Location")

    async def password(
        self, state: str, username: str, password: str
    ) -> tuple[int, str, str | None]:
        form = {"state": state, "username": username, "password": password, "action": "default"}
        url = f"{self.sim.auth0_url}/u/login/password?state={state}"
        async with self.http.post(url, data=form, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers.get("Location")

    async def get(self, url: str) -> tuple[int, str | None]:
        async with self.http.get(url, allow_redirects=False) as response:
            await response.read()
            return response.status, response.headers.get("Location")

    async def session(self) -> dict[str, Any]:
        async with self.http.get(f"{self.sim.web_url}/api/auth/session") as response:
            assert response.status == 200
            data: dict[str, Any] = await response.json()
            return data

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """The whole flow; the session it ends with."""
        state = await self.state()
        assert (await self.identifier(state, username))[0] == 302
        status, _, location = await self.password(state, username, password)
        assert status == 302 and location == f"/authorize/resume?state={state}"
        status, callback = await self.get(f"{self.sim.auth0_url}{location}")
        assert status == 302 and callback is not None
        assert callback.startswith(f"{self.sim.web_url}/api/auth/callback/auth0?code=")
        assert await self.get(callback) == (302, "/")
        return await self.session()


async def test_the_whole_flow_ends_with_an_access_token(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    session = await Browser(browser, sim).login(DEMO_ACCOUNT.email, DEMO_ACCOUNT.password)

    token = session["accessToken"]
    assert sim.login.tokens_for(DEMO_ACCOUNT.email) == [token]
    expiry = jwt_expiry(token)
    assert expiry is not None and expiry > time.time() + 86400
    assert session["user"]["email"] == DEMO_ACCOUNT.email
    assert session["expires"].endswith("Z")
    paths = [r.path for r in sim.recorder.requests]
    assert paths[0] == "/api/auth/csrf" and paths[-1] == "/api/auth/session"
    assert "/authorize/resume" in paths


async def test_the_two_hosts_differ_and_both_stop(sim: Simulator) -> None:
    assert sim.web_url == sim.url
    web, auth0 = URL(sim.web_url), URL(sim.auth0_url)
    assert auth0.host == web.host and auth0.port != web.port
    await sim.close()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{sim.auth0_url}/authorize")


async def test_session_is_empty_without_the_cookie(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    await Browser(browser, sim).login(DEMO_ACCOUNT.email, DEMO_ACCOUNT.password)
    async with aiohttp.ClientSession() as stranger:
        async with stranger.get(f"{sim.web_url}/api/auth/session") as response:
            assert await response.json() == {}


async def test_the_authorize_url_points_to_auth0_and_carries_a_state(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    url = URL(await Browser(browser, sim).authorize_url())
    assert str(url.origin()) == sim.auth0_url and url.path == "/authorize"
    assert url.query["prompt"] == "login" and url.query["state"]
    assert url.query["redirect_uri"] == f"{sim.web_url}/api/auth/callback/auth0"
    async with browser.get(url, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"].startswith("/u/login/identifier?state=")


async def test_signin_refuses_a_csrf_token_that_does_not_match_the_cookie(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    user = Browser(browser, sim)
    await user.csrf()
    assert (await user.signin("forged-token")).status == 400
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        # A token from another jar: the cookie it belongs to is not in this one.
        assert (await Browser(other, sim).signin(await user.csrf())).status == 400


async def test_a_jar_that_drops_ip_address_cookies_cannot_sign_in(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as default_jar:  # unsafe=False: 127.0.0.1 cookies dropped
        user = Browser(default_jar, sim)
        assert (await user.signin(await user.csrf())).status == 400


async def test_wrong_password_and_unknown_account_show_the_prompt_alert(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    user = Browser(browser, sim)
    for username, password in (
        (DEMO_ACCOUNT.email, "not-the-password"),
        ("nobody@example.com", DEMO_ACCOUNT.password),
    ):
        state = await user.state()
        assert (await user.identifier(state, username))[0] == 302
        status, page, _ = await user.password(state, username, password)
        assert status == 400
        assert ALERT.findall(page) == ["Wrong email or password"]
    assert sim.login.sessions == {}


async def test_refused_and_invalid_emails_are_a_400(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    sim.login.refused.add("blocked@example.com")
    user = Browser(browser, sim)
    for username, alert in (
        ("Blocked@Example.com", "This e-mail address cannot be used to sign in."),
        ("not-an-email", "Email is not valid."),
    ):
        status, page, _ = await user.identifier(await user.state(), username)
        assert status == 400
        assert ALERT.findall(page) == [alert]


async def test_two_factor_accounts_go_to_the_otp_challenge(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    sim.login.accounts.append(Account("mfa@example.com", "mfa-password", mfa=True))
    user = Browser(browser, sim)
    state = await user.state()
    await user.identifier(state, "mfa@example.com")
    status, _, location = await user.password(state, "mfa@example.com", "mfa-password")
    assert (status, location) == (302, f"/u/mfa-otp-challenge?state={state}")
    assert (await user.get(f"{sim.auth0_url}{location}"))[0] == 200
    # Skipping the challenge gets no code.
    assert (await user.get(f"{sim.auth0_url}/authorize/resume?state={state}"))[0] == 400
    assert sim.login.sessions == {}


async def test_password_before_identifier_and_a_forged_callback_fail(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    user = Browser(browser, sim)
    state = await user.state()
    status, page, _ = await user.password(state, DEMO_ACCOUNT.email, DEMO_ACCOUNT.password)
    assert status == 400 and ALERT.findall(page)
    forged = f"{sim.web_url}/api/auth/callback/auth0?code=made-up&state=x"
    assert await user.get(forged) == (302, "/api/auth/error?error=OAuthCallback")
    assert await user.session() == {}


async def test_each_login_gets_its_own_token(sim: Simulator) -> None:
    sessions = []
    for _ in range(2):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            login = Browser(http, sim).login(DEMO_ACCOUNT.email, DEMO_ACCOUNT.password)
            sessions.append(await login)
    tokens = [s["accessToken"] for s in sessions]
    assert tokens[0] != tokens[1]
    assert sim.login.tokens_for(DEMO_ACCOUNT.email) == tokens


async def test_forms_are_recorded_as_sent(sim: Simulator, browser: aiohttp.ClientSession) -> None:
    user = Browser(browser, sim)
    state = await user.state()
    await user.identifier(state, DEMO_ACCOUNT.email)
    (recorded,) = sim.recorder.to("/u/login/identifier", "POST")
    form = {k: v[0] for k, v in parse_qs(recorded.body.decode()).items()}
    assert form["username"] == DEMO_ACCOUNT.email and form["state"] == state
    assert recorded.query == {"state": state}


@pytest.mark.parametrize(
    ("step", "expected"),
    [("csrf", {"detail": "Too many requests, slow down"}), ("password", None)],
)
async def test_a_429_fault_carries_its_reason_and_retry_after(
    sim: Simulator, browser: aiohttp.ClientSession, step: str, expected: object
) -> None:
    sim.login.fail_at[step] = Fault.too_many_requests()
    user = Browser(browser, sim)
    if step == "csrf":
        async with browser.get(f"{sim.web_url}/api/auth/csrf") as response:
            assert response.status == 429 and response.headers["Retry-After"] == "30"
            assert await response.json() == expected
        return
    state = await user.state()
    await user.identifier(state, DEMO_ACCOUNT.email)
    status, page, _ = await user.password(state, DEMO_ACCOUNT.email, DEMO_ACCOUNT.password)
    assert status == 429
    assert ALERT.findall(page) == ["Too many requests, slow down"]


async def test_server_error_and_broken_faults(
    sim: Simulator, browser: aiohttp.ClientSession
) -> None:
    sim.login.fail_at["session"] = Fault.server_error("database down")
    sim.login.fail_at["csrf"] = Fault.broken_body()
    sim.login.fail_at["authorize"] = Fault.broken_body()
    async with browser.get(f"{sim.web_url}/api/auth/session") as response:
        assert response.status == 500 and await response.json() == {"detail": "database down"}
    async with browser.get(f"{sim.web_url}/api/auth/csrf") as response:
        assert response.status == 200
        with pytest.raises(ValueError):
            await response.json()
    async with browser.get(f"{sim.auth0_url}/authorize?x=1") as response:
        assert response.status == 200
        assert "state" not in await response.text()
    del sim.login.fail_at["csrf"]
    assert await Browser(browser, sim).csrf()
