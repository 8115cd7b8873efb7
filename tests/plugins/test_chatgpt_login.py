"""``chatgpt_login``: ``POST /auth/login`` end to end, through a real gateway, against the
simulated ChatGPT web host and Auth0 host (and real proxies)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import structlog
from structlog.testing import capture_logs
from yarl import URL

from gateway.errors import BadRequest, ConfigError, GatewayError
from gateway.forwarder import Forwarder
from gateway.http_client import HttpClient
from gateway.logs import configure_logging
from gateway.runtime import load_runtime
from gateway.testing import DEMO_ACCOUNT, Account, Fault, Simulator, start_simulator
from gateway_plugins.chatgpt_login.flow import Credentials
from gateway_plugins.chatgpt_login.page import form_state, prompt_alert, upstream_reason
from gateway_plugins.chatgpt_login.plugin import ChatGPTLogin, read_credentials
from tests.proxies import free_port

CANARY = "canary-password-123"
LOGIN_PATHS = ("/auth/login", "/chatgpt/login", "/chatgpt/backend-api/login")


def config(
    sim: Simulator,
    proxy: str | None = None,
    *,
    web_url: str | None = None,
    auth0_url: str | None = None,
    timeout: str = "5s",
    server: str = "",
) -> str:
    routes = "".join(
        f"""
[routes.login{i}]
methods = ["POST"]
path = "{path}"
upstream = "chatgpt"
pipeline = ["chatgpt_login"]
"""
        for i, path in enumerate(LOGIN_PATHS)
    )
    return f"""
pipeline = ["access_log", "upstream_proxy"]
[server]
{server}
[upstreams.chatgpt]
url = "{sim.chatgpt_url}"
proxy = [{f'"{proxy}"' if proxy else ""}]
[plugins.chatgpt_login]
web_url = "{web_url or sim.web_url}"
auth0_url = "{auth0_url or sim.auth0_url}"
timeout = "{timeout}"
{routes}
"""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = await start_simulator()
    yield simulator
    await simulator.close()


async def login(
    gateway: Any, body: Any, path: str = "/auth/login"
) -> tuple[int, dict[str, Any], Any]:
    """POST ``body`` (JSON unless bytes) to the login route: status, JSON answer, headers."""
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with gateway.request("POST", path, **kwargs) as response:
        return response.status, json.loads(await response.read()), response.headers


def credentials(account: Account = DEMO_ACCOUNT) -> dict[str, str]:
    return {"username": account.email, "password": account.password}


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


def form_of(sim: Simulator, path: str) -> dict[str, str]:
    (recorded,) = sim.recorder.to(path, "POST")
    return {key: values[0] for key, values in parse_qs(recorded.body.decode()).items()}


# --- success ---------------------------------------------------------------------------


async def test_login_answers_the_simulators_access_token(sim, start_gateway):
    gateway = await start_gateway(config(sim))
    status, body, headers = await login(gateway, credentials())

    assert status == 200
    assert body == {"accessToken": sim.login.tokens_for(DEMO_ACCOUNT.email)[0]}
    assert headers["Cache-Control"] == "no-store"
    assert claims(body["accessToken"])["https://api.openai.com/profile"]["email"] == (
        DEMO_ACCOUNT.email
    )
    assert sim.recorder.to("/backend-api/auth/login") == []  # answered by the plugin


async def test_the_steps_send_what_spec_section_6_says(sim, start_gateway):
    gateway = await start_gateway(config(sim))
    assert (await login(gateway, credentials()))[0] == 200

    paths = [(r.method, r.path) for r in sim.recorder.requests]
    assert paths == [
        ("GET", "/api/auth/csrf"),
        ("POST", "/api/auth/signin/auth0"),
        ("GET", "/authorize"),
        ("GET", "/u/login/identifier"),
        ("POST", "/u/login/identifier"),
        ("GET", "/u/login/password"),
        ("POST", "/u/login/password"),
        ("GET", "/authorize/resume"),
        ("GET", "/api/auth/callback/auth0"),
        ("GET", "/api/auth/session"),
    ]
    signin = sim.recorder.to("/api/auth/signin/auth0")[0]
    assert signin.query == {"prompt": "login"}
    csrf = form_of(sim, "/api/auth/signin/auth0")
    assert csrf.pop("csrfToken") and csrf == {"callbackUrl": "/", "json": "true"}
    identifier = form_of(sim, "/u/login/identifier")
    state = identifier.pop("state")
    assert identifier == {
        "username": DEMO_ACCOUNT.email,
        "js-available": "true",
        "webauthn-available": "true",
        "is-brave": "false",
        "webauthn-platform-available": "false",
        "action": "default",
    }
    assert form_of(sim, "/u/login/password") == {
        "state": state,
        "username": DEMO_ACCOUNT.email,
        "password": DEMO_ACCOUNT.password,
        "action": "default",
    }
    assert sim.recorder.to("/u/login/password", "POST")[0].query == {"state": state}
    assert "Chrome/" in sim.recorder.last.headers["User-Agent"]


async def test_the_aliases_log_in_too(sim, start_gateway):
    gateway = await start_gateway(config(sim))
    for path in LOGIN_PATHS[1:]:
        status, body, _ = await login(gateway, credentials(), path)
        assert status == 200 and body["accessToken"] in sim.login.tokens_for(DEMO_ACCOUNT.email)
    assert len(sim.login.tokens_for(DEMO_ACCOUNT.email)) == 2


async def test_concurrent_logins_each_keep_their_own_cookie_jar(sim, start_gateway):
    alice = Account("alice@example.com", "alice-password")
    bob = Account("bob@example.com", "bob-password")
    sim.login.accounts += [alice, bob]
    gateway = await start_gateway(config(sim))

    answers = await asyncio.gather(*(login(gateway, credentials(a)) for a in (alice, bob) * 2))

    assert [status for status, _, _ in answers] == [200] * 4
    tokens = [body["accessToken"] for _, body, _ in answers]
    assert len(set(tokens)) == 4
    for (_, body, _), account in zip(answers, (alice, bob) * 2, strict=True):
        assert body["accessToken"] in sim.login.tokens_for(account.email)
        profile = claims(body["accessToken"])["https://api.openai.com/profile"]
        assert profile["email"] == account.email


# --- refusals ------------------------------------------------------------------------------


async def test_wrong_password_is_a_401_with_the_prompt_alert(sim, start_gateway):
    gateway = await start_gateway(config(sim))
    for body in (
        {"username": DEMO_ACCOUNT.email, "password": "wrong-password"},
        {"username": "nobody@example.com", "password": DEMO_ACCOUNT.password},
    ):
        status, answer, _ = await login(gateway, body)
        assert status == 401
        error = error_of(answer)
        assert error["message"] == "Wrong email or password"
        assert error["type"] == "authentication_error"
    assert sim.login.sessions == {}


async def test_a_refused_email_is_a_401_before_any_password_is_sent(sim, start_gateway):
    sim.login.refused.add("blocked@example.com")
    gateway = await start_gateway(config(sim))
    status, answer, _ = await login(
        gateway, {"username": "blocked@example.com", "password": "whatever"}
    )
    assert status == 401
    assert error_of(answer)["message"] == "This e-mail address cannot be used to sign in."
    assert sim.recorder.to("/u/login/password", "POST") == []


async def test_two_factor_accounts_are_a_403_saying_so(sim, start_gateway):
    account = Account("mfa@example.com", "mfa-password", mfa=True)
    sim.login.accounts.append(account)
    gateway = await start_gateway(config(sim))
    status, answer, _ = await login(gateway, credentials(account))
    assert status == 403
    assert "two-factor login" in error_of(answer)["message"]
    assert "not" in error_of(answer)["message"] and "support" in error_of(answer)["message"]
    assert sim.login.sessions == {}
    assert sim.recorder.to("/u/mfa-otp-challenge") == []  # detected from the redirect


@pytest.mark.parametrize("step", ["csrf", "password"])
async def test_an_upstream_429_is_a_429_with_its_reason_and_retry_after(sim, start_gateway, step):
    sim.login.fail_at[step] = Fault.too_many_requests("Too many login attempts", "42")
    gateway = await start_gateway(config(sim))
    status, answer, headers = await login(gateway, credentials())
    assert status == 429
    assert error_of(answer)["message"] == "Too many login attempts"
    assert error_of(answer)["type"] == "rate_limit_error"
    assert headers["Retry-After"] == "42"


async def test_an_upstream_403_is_a_403_blocked(sim, start_gateway):
    sim.login.fail_at["csrf"] = Fault(403, "Access denied")
    gateway = await start_gateway(config(sim))
    status, answer, _ = await login(gateway, credentials())
    assert status == 403
    message = error_of(answer)["message"]
    assert "blocked" in message and "Access denied" in message


# --- a broken or unreachable upstream -----------------------------------------------------


@pytest.mark.parametrize(
    ("step", "fault"),
    [
        ("csrf", Fault.server_error("csrf store down")),
        ("csrf", Fault.broken_body()),
        ("signin", Fault.server_error()),
        ("signin", Fault.broken_body()),
        ("authorize", Fault.broken_body()),
        ("authorize", Fault.server_error()),
        ("identifier", Fault.server_error()),
        ("password", Fault.server_error()),
        ("password", Fault.broken_body()),
        ("resume", Fault.server_error()),
        ("callback", Fault.server_error()),
        ("session", Fault.server_error()),
        ("session", Fault.broken_body()),
    ],
)
async def test_a_broken_upstream_is_a_502(sim, start_gateway, step, fault):
    sim.login.fail_at[step] = fault
    gateway = await start_gateway(config(sim))
    status, answer, _ = await login(gateway, credentials())
    assert status == 502, answer
    error = error_of(answer)
    assert error["type"] == "upstream_error"
    if fault.status >= 500:
        assert "HTTP 500" in error["message"]
    if fault.reason == "csrf store down":
        assert "csrf store down" in error["message"]
    assert sim.login.sessions == {} or step == "session"


async def test_a_session_without_a_token_is_a_502(sim, start_gateway):
    # The callback succeeds but sets no cookie the session answer accepts.
    sim.login.fail_at["callback"] = Fault(302, "no session")
    gateway = await start_gateway(config(sim))
    status, answer, _ = await login(gateway, credentials())
    assert status == 502
    assert "no access token" in error_of(answer)["message"]


async def test_unreachable_hosts_are_a_502(sim, start_gateway):
    dead = f"http://127.0.0.1:{free_port()}"
    for kwargs in ({"web_url": dead}, {"auth0_url": dead}):
        sim.login.auth0_url = kwargs.get("auth0_url", sim.login.auth0_url)
        gateway = await start_gateway(config(sim, **kwargs))
        status, answer, _ = await login(gateway, credentials())
        assert status == 502
        assert "cannot connect to the login service at 127.0.0.1" in error_of(answer)["message"]
    assert sim.recorder.to("/authorize") == []


async def test_a_redirect_to_another_host_is_refused(sim, start_gateway):
    gateway = await start_gateway(config(sim))
    sim.login.auth0_url = "http://127.0.0.2:1"  # the web host sends the login elsewhere
    status, answer, _ = await login(gateway, credentials())
    assert status == 502
    assert "unexpected host" in error_of(answer)["message"]
    assert sim.recorder.to("/authorize") == []


async def test_a_login_that_takes_too_long_is_a_504(sim, start_gateway):
    sim.login.fail_at["identifier"] = Fault.no_answer()
    gateway = await start_gateway(config(sim, timeout="300ms"))
    status, answer, _ = await login(gateway, credentials())
    assert status == 504
    assert error_of(answer)["type"] == "upstream_error"
    assert "did not finish" in error_of(answer)["message"]


# --- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b"[1, 2]",
        b'"a string"',
        {},
        {"username": DEMO_ACCOUNT.email},
        {"password": "secret-in-body"},
        {"username": "", "password": "secret-in-body"},
        {"username": "   ", "password": "secret-in-body"},
        {"username": 42, "password": "secret-in-body"},
        {"username": DEMO_ACCOUNT.email, "password": ""},
        {"username": DEMO_ACCOUNT.email, "password": None},
        {"username": DEMO_ACCOUNT.email, "password": ["secret-in-body"]},
    ],
)
async def test_malformed_bodies_are_a_400_that_reaches_no_upstream(sim, start_gateway, body):
    gateway = await start_gateway(config(sim))
    status, answer, _ = await login(gateway, body)
    assert status == 400
    error = error_of(answer)
    assert error["type"] == "invalid_request_error"
    assert "secret-in-body" not in error["message"]
    assert len(sim.recorder) == 0


async def test_other_methods_are_a_405(sim, start_gateway):
    gateway = await start_gateway(config(sim).replace('methods = ["POST"]', 'methods = ["*"]'))
    async with gateway.request("GET", "/auth/login") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    assert len(sim.recorder) == 0


def test_config_is_checked(sim):
    bad = config(sim, timeout="0s").replace(f'web_url = "{sim.web_url}"', 'web_url = "htp:/x"')
    with pytest.raises(ConfigError) as caught:
        load_runtime(bad, "test.toml", {})
    problems = "\n".join(caught.value.problems)
    assert "$.plugins.chatgpt_login.web_url: not a URL" in problems
    defaults = ChatGPTLogin.Config()
    assert defaults.web_url == "https://chatgpt.com"
    assert defaults.auth0_url == "https://auth0.openai.com"
    assert defaults.timeout == 30.0 and "Mozilla/5.0" in defaults.user_agent


def test_a_timeout_of_zero_is_a_config_error(sim):
    with pytest.raises(ConfigError, match=r"chatgpt_login.timeout: must be above 0"):
        load_runtime(config(sim, timeout="0s"), "test.toml", {})


# --- proxies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "user", "password"), [("socks5", "u", "p"), ("http", None, None)]
)
async def test_the_login_goes_through_the_chatgpt_upstreams_proxy(
    sim, start_gateway, start_proxy, scheme, user, password
):
    proxy = await start_proxy(scheme, user, password)
    gateway = await start_gateway(config(sim, proxy.url))
    status, body, _ = await login(gateway, credentials())
    assert status == 200
    assert body == {"accessToken": sim.login.tokens_for(DEMO_ACCOUNT.email)[0]}
    assert await proxy.tunnels_to(sim.port) >= 1, proxy.log
    assert await proxy.tunnels_to(URL(sim.auth0_url).port or 0) >= 1, proxy.log


async def test_wrong_proxy_credentials_are_a_502_without_the_proxy_password(
    sim, start_gateway, start_proxy
):
    proxy = await start_proxy("socks5", "u", "right-password")
    gateway = await start_gateway(config(sim, proxy.url.replace("right-password", "proxy-canary")))
    status, answer, _ = await login(gateway, credentials())
    assert status == 502
    assert "proxy-canary" not in json.dumps(answer)
    assert len(sim.recorder) == 0


# --- secrets ---------------------------------------------------------------------------------


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """The gateway's logging at debug level, restored afterwards."""
    saved = structlog.get_config()
    configure_logging("debug", "json", cache=False)  # cached loggers would outlive the test
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("debug_logging")
async def test_the_password_never_reaches_a_log_or_an_answer(sim, start_gateway):
    gateway = await start_gateway(config(sim, server='log_level = "debug"'))
    sim.login.accounts.append(Account("canary@example.com", CANARY))
    with capture_logs() as logs:
        wrong = await login(gateway, {"username": DEMO_ACCOUNT.email, "password": CANARY})
        right = await login(gateway, {"username": "canary@example.com", "password": CANARY})
        # An upstream that echoes the password back in its reason.
        sim.login.fail_at["password"] = Fault.too_many_requests(f"slow down, {CANARY}")
        echoed = await login(gateway, {"username": "canary@example.com", "password": CANARY})

    assert [wrong[0], right[0], echoed[0]] == [401, 200, 429]
    assert error_of(echoed[1])["message"] == "slow down, ***"
    for _, body, headers in (wrong, right, echoed):
        assert CANARY not in json.dumps(body) and CANARY not in str(dict(headers))
    assert CANARY not in repr(logs)
    steps = {e.get("step") for e in logs if e["event"] == "chatgpt login step"}
    assert {"csrf", "signin", "authorize", "identifier", "password", "session"} <= steps
    assert all(e["log_level"] == "debug" for e in logs if e["event"] == "chatgpt login step")
    assert right[1]["accessToken"] not in repr(logs)
    assert {"request"} <= {e["event"] for e in logs}  # access_log saw the requests too


# --- the parts, as plain objects -------------------------------------------------------------


async def test_the_plugin_logs_in_as_a_plain_object(sim):
    plugin = ChatGPTLogin(ChatGPTLogin.Config(web_url=sim.web_url, auth0_url=sim.auth0_url))
    forwarder = Forwarder()
    http = HttpClient(forwarder, {})
    try:
        token = await plugin.login(
            http, Credentials(DEMO_ACCOUNT.email, DEMO_ACCOUNT.password), None
        )
        assert sim.login.tokens_for(DEMO_ACCOUNT.email) == [token]
        with pytest.raises(GatewayError) as caught:
            await plugin.login(http, Credentials(DEMO_ACCOUNT.email, "wrong"), None)
        assert caught.value.status == 401
    finally:
        await forwarder.close()


def test_credentials_are_read_without_echoing_them():
    parsed = read_credentials({"username": "  a@example.com ", "password": " p w "})
    assert parsed == Credentials("a@example.com", " p w ")
    assert " p w " not in repr(parsed)
    with pytest.raises(BadRequest, match="password must be given"):
        read_credentials({"username": "a@example.com", "password": 5})
    with pytest.raises(BadRequest, match="username and password"):
        read_credentials({"extra": "only"})


def test_the_state_and_the_alert_are_read_from_real_looking_pages():
    page = (
        "<html><body><form><input value='S-1' type=hidden name=state>"
        '<input name="state" value="second"></form>'
        '<div class="ulp-alert" id="prompt-alert" data-error-code="wrong-credentials">'
        "<img src=x.png><p>Wrong   email <b>or</b>\n password</p><br></div>"
        "<p>not the alert</p></body></html>"
    )
    assert form_state(page) == "S-1"
    assert prompt_alert(page) == "Wrong email or password"
    assert form_state("<input name=username value=x>") is None
    assert prompt_alert("<p>no alert here</p>") is None


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"detail": "slow down"}', "application/json", "slow down"),
        (b'{"error": {"message": "nested"}}', "application/json; charset=utf-8", "nested"),
        (b'{"error": "plain", "message": "later"}', "application/json", "plain"),
        (b"[1]", "application/json", None),
        (b"{broken", "application/json", None),
        (b'<span id="prompt-alert">Blocked</span>', "text/html", "Blocked"),
        (b"  Too   many\nrequests ", "text/plain", "Too many requests"),
        (b"\x89PNG", "image/png", None),
    ],
)
def test_upstream_reasons(body, content_type, reason):
    assert upstream_reason(body, content_type) == reason


def test_long_reasons_are_cut():
    reason = upstream_reason(b'{"detail": "' + b"x" * 1000 + b'"}', "application/json")
    assert reason is not None and len(reason) == 300 and reason.endswith("…")
