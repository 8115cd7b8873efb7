"""How the ChatGPT login talks to its two hosts, and reads what they answer.

`LoginClient` sends one request at a time through the gateway's HTTP client
(``context.http``: its proxies, time-outs and errors), never following redirects
by itself and only to the configured hosts, keeps the login's cookies in a jar of
its own, reads each answer whole (bounded), and turns unexpected answers into the
gateway's errors: a refused
connection or a broken answer is 502, an upstream 429 stays 429 with its reason
and ``Retry-After``, an upstream 403 is 403.  Reasons quoted from upstream pages
never carry the password, even if an upstream echoes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import aiohttp
import attrs
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.api import BadGateway, Forbidden, GatewayError, HttpClient, TooManyRequests
from gateway_plugins.chatgpt_login.page import upstream_reason

#: The largest upstream answer read (the login pages are a few kilobytes).
MAX_ANSWER = 1024 * 1024
_RETRY_AFTER = re.compile(r"[\w ,:+-]{1,64}")


@attrs.frozen
class Answer:
    """One upstream answer, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json_object(self) -> dict[str, Any]:
        """The body parsed as a JSON object; ``ValueError`` when it is not one."""
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data

    @property
    def redirect(self) -> URL | None:
        """Where a 3xx answer points, resolved against the URL it came from."""
        location = self.headers.get("Location")
        if not 300 <= self.status < 400 or not location:
            return None
        try:
            return self.url.join(URL(location))
        except ValueError:
            return None


class LoginClient:
    """Sends the login's requests with one cookie jar, and reads the answers."""

    def __init__(
        self,
        http: HttpClient,
        hosts: Iterable[str],
        *,
        headers: Mapping[str, str],
        secret: str,
        proxy: str | None,
        log: Any,
    ) -> None:
        self._http = http
        self._origins = {URL(host).origin() for host in hosts}
        self._headers = dict(headers)
        # One jar per login, so that logins never share a session; unsafe=True keeps
        # cookies of hosts given by IP address (a local simulator, say).
        self._cookies = aiohttp.CookieJar(unsafe=True)
        self._secret = secret
        self._proxy = proxy
        self._log = log

    async def send(
        self, step: str, method: str, url: URL, form: dict[str, str] | None = None
    ) -> Answer:
        """One request, never following redirects; network failures become 502 or 504."""
        try:
            allowed = url.origin() in self._origins
        except ValueError:
            allowed = False
        if not allowed:
            raise BadGateway(
                f"the login service sent the gateway to an unexpected host at the {step} step"
            )
        # The query carries the state and the code: log the path only, and never the form.
        self._log.debug(
            "chatgpt login step", step=step, method=method, host=url.host, path=url.path
        )
        headers = {**self._headers, "Accept": "*/*"}
        cookies = self._cookies.filter_cookies(url)
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={m.coded_value}" for k, m in cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = await self._http.request(
            method,
            url,
            headers=headers,
            body=body,
            proxy=self._proxy,
            max_size=MAX_ANSWER,
            target=f"the login service at {url.host} ({step} step)",
        )
        for set_cookie in response.headers.getall("Set-Cookie", ()):
            received: SimpleCookie = SimpleCookie()
            try:
                received.load(set_cookie)
            except ValueError:  # (a malformed cookie is dropped, as browsers do)
                continue
            self._cookies.update_cookies(received, url)
        answer = Answer(response.status, response.headers, response.body, url)
        self._log.debug("chatgpt login answer", step=step, status=answer.status)
        return answer

    def json(self, answer: Answer, step: str) -> dict[str, Any]:
        """The JSON object of a 200 answer; any other answer is refused."""
        if answer.status != 200:
            raise self.refusal(answer, step)
        try:
            data = answer.json_object()
        except ValueError:
            raise BadGateway(f"the {step} answer is not a JSON object") from None
        return data

    def field(self, data: dict[str, Any], name: str, step: str) -> str:
        """The non-empty string ``data[name]``; a 502 when the answer lacks it."""
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise BadGateway(f"the {step} answer has no {name!r}")
        return value

    def reason(self, answer: Answer) -> str | None:
        """The upstream's own words, with the password blanked should it echo it."""
        reason = upstream_reason(answer.body, answer.headers.get("Content-Type", ""))
        if reason is not None:
            reason = reason.replace(self._secret, "***")
        return reason

    def refusal(self, answer: Answer, step: str) -> GatewayError:
        """The error for an answer the step did not expect."""
        reason = self.reason(answer)
        said = f": {reason}" if reason else ""
        status = answer.status
        if status == 429:
            retry_after = answer.headers.get("Retry-After", "")
            headers = {"Retry-After": retry_after} if _RETRY_AFTER.fullmatch(retry_after) else {}
            return TooManyRequests(
                reason or "the login service says: too many requests", headers=headers
            )
        if status == 403:
            return Forbidden(f"the login service blocked the login at the {step} step{said}")
        if status >= 500:
            return BadGateway(f"the login service failed at the {step} step (HTTP {status}){said}")
        return BadGateway(f"the login service answered HTTP {status} at the {step} step{said}")
