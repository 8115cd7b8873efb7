"""A fake OpenAI API that judges each request by its account, as OpenAI does.

Each API key belongs to an organisation and may be marked invalid, deactivated
or out of quota; a key may also be rate-limited for one model.  Errors are
OpenAI's: ``{"error": {"message", "type", "param", "code"}}`` with its codes
(``invalid_api_key``, ``mismatched_organization``, ``account_deactivated``,
``insufficient_quota``, ``rate_limit_exceeded``).  ``POST /v1/chat/completions``
answers a ``chat.completion`` naming the key's organisation; every request's
headers are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import attrs
from aiohttp import web
from multidict import CIMultiDict

from gateway.keys import key_digest, new_key

#: The gateway key of the one client of `keys_config`.
ALICE, _ = new_key()
ONE_KEY = '{ name = "main", token = "sk-main" }'
TWO_KEYS = '{ name = "main", token = "sk-main" }, { name = "spare", token = "sk-spare" }'


def keys_config(
    url: str, credentials: str = TWO_KEYS, auth: str = "", upstream: str = "", route: str = ""
) -> str:
    """A gateway in keys mode (one key, `ALICE`) in front of this API at ``url``, on ``/v1``;
    ``auth``, ``upstream`` and ``route`` are TOML added to those tables."""
    return f"""
pipeline = ["access_log", "auth"]
[plugins.auth]
mode = "keys"
keys.alice = {{ sha256 = "{key_digest(ALICE)}" }}
credentials.openai = [{credentials}]
{auth}
[upstreams.openai]
url = "{url}"
{upstream}
[routes.openai]
path = "/v1/{{rest*}}"
upstream = "openai"
upstream_path = "/v1/{{rest}}"
{route}
"""


@attrs.define
class Account:
    """One API key: its organisation, what is wrong with it, and its per-model limits."""

    organization: str
    #: "" (fine), "invalid", "deactivated" or "quota".
    trouble: str = ""
    #: Models this key is rate-limited on, with the headers of the 429.
    limited: dict[str, dict[str, str]] = attrs.Factory(dict)


class OpenAIAccounts:
    """The fake API; ``accounts`` maps API keys to their `Account`."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        #: The headers of every request, in order.
        self.seen: list[CIMultiDict[str]] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    @classmethod
    async def serve(cls, serve_app: Callable[[web.Application], Awaitable[str]]) -> OpenAIAccounts:
        """The API with two keys, ``sk-main`` (org-main) and ``sk-spare`` (org-spare), served;
        its base URL is ``url``."""
        api = cls()
        api.accounts = {"sk-main": Account("org-main"), "sk-spare": Account("org-spare")}
        api.url = await serve_app(api.app)
        return api

    def keys_seen(self) -> list[str]:
        """The API key of every request, in order."""
        return [h.get("Authorization", "").removeprefix("Bearer ") for h in self.seen]

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(CIMultiDict(request.headers))
        raw = await request.read()
        body = json.loads(raw) if raw and request.content_type == "application/json" else {}
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        account = self.accounts.get(key)
        if account is None or account.trouble == "invalid":
            shown = f"{key[:3]}***{key[-4:]}"
            return error(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")
        organization = request.headers.get("OpenAI-Organization")
        if organization is not None and organization != account.organization:
            return error(
                401,
                "OpenAI-Organization header should match organization for API key",
                "mismatched_organization",
            )
        if account.trouble == "deactivated":
            return error(
                401, "This key is associated with a deactivated account.", "account_deactivated"
            )
        if account.trouble == "quota":
            return error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                kind="insufficient_quota",
            )
        model = body.get("model") if isinstance(body, dict) else None
        if model in account.limited:
            return error(
                429,
                f"Rate limit reached for {model} in organization {account.organization}.",
                "rate_limit_exceeded",
                kind="requests",
                headers=account.limited[model],
            )
        return web.json_response(completion(model, account.organization))


def error(
    status: int,
    message: str,
    code: str,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> web.Response:
    payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(payload, status=status, headers=headers)


def completion(model: object, organization: str) -> dict[str, object]:
    """A ``chat.completion`` whose text names the organisation that answered."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else "unknown",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"answered by {organization}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }
