"""The ``imitate`` plugin: the OpenAI chat API served over a ChatGPT account.

::

    [plugins.imitate]
    access_token = "${IMITATE_ACCESS_TOKEN:-}"
    allow_anonymous = false
    models = { "gpt-3.5*" = "text-davinci-002-render-sha", "gpt-4*" = "gpt-4" }

    [routes.imitate_chat]
    methods = ["POST"]
    path = "/imitate/v1/chat/completions"
    upstream = "chatgpt"
    pipeline = ["imitate"]

    [routes.imitate_models]
    methods = ["GET"]
    path = "/imitate/v1/models"
    upstream = "chatgpt"
    pipeline = ["imitate"]

What a request asks for is read from the client's method and path, whatever
the route is called or where it is mounted, as the OpenAI SDKs build them from
their base URL: ``POST .../chat/completions`` is a chat request, ``GET .../models``
the model list and ``GET .../models/{id}`` one model (routes may serve any of
them, one route may serve all).  The plugin then calls the ChatGPT endpoint
itself, ``<upstream url>/conversation`` or ``<upstream url>/models``: a route's
``upstream_path`` does not matter.  Other paths answer 404, other methods 405.

The ChatGPT token is the one an earlier plugin put in the upstream
``Authorization`` header (``auth``: the client's own token in passthrough mode,
a pool credential in keys mode), else the server's: ``access_token``, or the
token of the server's own account when ``[plugins.chatgpt_login]`` names one
(`gateway_plugins.chatgpt_login.session`).

SECURITY: the server's token opens the operator's account, so it is served only
to clients an auth plugin identified (``auth`` in keys mode), unless
``allow_anonymous = true``.  The rule is checked for each request; at start, one
warning lists the routes where a client without a key would get 401 (those
whose own pipeline has no ``auth`` in keys mode), and how to open them.

The parts, one idea each: `gateway_plugins.imitate.request` (what is accepted, the
ChatGPT request, token estimates), `gateway_plugins.imitate.answer` (reading ChatGPT's
stream), `gateway_plugins.imitate.stream` (the delta rule, chunks and completions),
`gateway_plugins.imitate.errors` (the status mapping), `gateway_plugins.imitate.models`
(model names and the model list), `gateway_plugins.imitate.continuation` (answers ChatGPT
cut for length, continued with ``auto_continue``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Literal, Protocol

import attrs
from aiohttp import web
from yarl import URL

from gateway.api import (
    BadGateway,
    Exchange,
    GatewayConfig,
    GatewayContext,
    HttpClient,
    MethodNotAllowed,
    NotFound,
    Plugin,
    Unauthorized,
    get_logger,
    route_plugin_names,
)
from gateway_plugins.chatgpt_login.session import ServerLogin
from gateway_plugins.imitate.continuation import MAX_CONTINUATIONS, continue_answer
from gateway_plugins.imitate.errors import ErrorAnswer
from gateway_plugins.imitate.models import ModelListAnswer, ModelMap
from gateway_plugins.imitate.request import ChatRequest, conversation_body, parse_chat_request
from gateway_plugins.imitate.stream import ChunkStream, Completion

__all__ = ["Imitate"]

logger = get_logger("gateway")

DEFAULT_MODELS = {"gpt-3.5*": "text-davinci-002-render-sha"}

_CHAT_PATH = re.compile(r".*/chat/completions/?")
_MODELS_PATH = re.compile(r".*/models/?")
_MODEL_PATH = re.compile(r".*/models/([^/]+)/?")
# Headers of the OpenAI API that mean nothing to ChatGPT (the SDKs' telemetry among them).
_OPENAI_HEADERS = ("openai-", "x-stainless-")
# How an operator serves the server's token, said wherever it is refused.
_HOW_TO_OPEN = (
    'configure client keys ([plugins.auth] mode = "keys") so that it serves key holders, '
    "or set [plugins.imitate] allow_anonymous = true to serve anyone"
)


class _Body(Protocol):
    def feed(self, chunk: bytes, final: bool = False) -> bytes: ...


@attrs.define
class _State:
    """One request's conversion, in ``ex.state["imitate"]``."""

    kind: Literal["chat", "models"]
    chat: ChatRequest | None = None  # the parsed request, once read
    model_id: str | None = None  # GET .../models/{id}
    completion_id: str = ""
    created: int = 0
    slug: str = ""  # the ChatGPT model answering
    body: _Body | None = None  # set by on_response, per upstream answer


class Imitate(Plugin):
    """Serves OpenAI's ``/chat/completions`` and ``/models`` over a ChatGPT account."""

    name = "imitate"

    @attrs.frozen
    class Config:
        """``[plugins.imitate]``."""

        #: The ChatGPT access token used when the request carries none (never logged).
        access_token: str = attrs.field(default="", repr=False)
        #: Allow serving ``access_token`` when no client keys (``auth`` keys mode) are set.
        allow_anonymous: bool = False
        #: OpenAI model name, or prefix ending in ``*``, to ChatGPT model slug.
        models: Mapping[str, str] = attrs.field(factory=lambda: dict(DEFAULT_MODELS))
        #: The slug for names no ``models`` key matches; empty: the name is sent as is.
        default_model: str = ""
        #: Keep the conversations in the account's history (``history_and_training_disabled``
        #: false); go-chatgpt-api's ``ENABLE_HISTORY``.
        enable_history: bool = False
        #: Have ChatGPT continue an answer it cut for length; go-chatgpt-api's ``CONTINUE_SIGNAL``.
        auto_continue: bool = False

    def __init__(self, config: Imitate.Config) -> None:
        super().__init__(config)
        if any(c in config.access_token for c in "\r\n\0"):
            raise ValueError("access_token: line breaks are not allowed")
        self.models = ModelMap(config.models, config.default_model)
        self.http: HttpClient | None = None  # set at start-up
        self.server_login: ServerLogin | None = None  # OPENAI_EMAIL's, from start-up

    async def startup(self, context: GatewayContext) -> None:
        """Keep the HTTP client (to continue answers); log in with the server's own account;
        warn, once, of the routes where the server's token is refused to clients without keys."""
        self.http = context.http
        self.server_login = ServerLogin.from_config(context.config, self.name, context.http)
        if self.server_login is not None:
            self.server_login.start()
        if self.config.allow_anonymous or not (self.config.access_token or self.server_login):
            return
        keyless = [
            name
            for name in context.config.routes
            if self.name in (p.name for p in context.route_plugins(name))
            and not any(p.identifies_clients() for p in context.route_plugins(name))
        ]
        if keyless:
            logger.warning(
                "imitate: the server's ChatGPT token (IMITATE_ACCESS_TOKEN, or OPENAI_EMAIL's "
                "login) is not served to clients without a gateway key on these routes, "
                "which answer them 401: " + _HOW_TO_OPEN,
                routes=keyless,
            )

    async def shutdown(self) -> None:
        if self.server_login is not None:
            await self.server_login.stop()

    def check(self, config: GatewayConfig) -> list[str]:
        """Every route running this plugin must have an upstream (ChatGPT's)."""
        return [
            f"$.routes.{name}: {self.name} needs an upstream (ChatGPT's)"
            for name, route in config.routes.items()
            if self.name in route_plugin_names(config, route) and route.upstream is None
        ]

    async def server_authorization(self, ex: Exchange) -> str:
        """The ``Authorization`` value of the server's own ChatGPT account, for a request
        that brought no token of its own: ``access_token``, else the server login's.

        SECURITY: only for a client an auth plugin identified, or anyone if the
        config says ``allow_anonymous = true``; checked per request, whatever the
        route's pipeline looks like.
        """
        if not (self.config.access_token or self.server_login):
            raise Unauthorized(
                "missing credential: send your ChatGPT access token as "
                "Authorization: Bearer <token>"
            )
        if ex.identity is None and not self.config.allow_anonymous:
            raise Unauthorized(
                "missing credential: send your ChatGPT access token as Authorization: "
                "Bearer <token>.  This gateway serves its own ChatGPT account only to "
                f"clients with a gateway key; to change that, {_HOW_TO_OPEN}"
            )
        if self.config.access_token:
            return f"Bearer {self.config.access_token}"
        assert self.server_login is not None
        return await self.server_login.authorization()

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        """Choose the credential and the ChatGPT endpoint; convert a chat request."""
        state = self._classify(ex)
        if ex.upstream is None:
            raise NotFound(f"no upstream for {ex.method} {ex.path}")
        headers = ex.upstream_headers
        if "Authorization" not in headers:
            headers["Authorization"] = await self.server_authorization(ex)
        for name in {n for n in headers if n.lower().startswith(_OPENAI_HEADERS)}:
            headers.popall(name)
        # The answer is parsed here: it must come uncompressed.
        headers["Accept-Encoding"] = "identity"
        base = ex.upstream.url.rstrip("/")
        if state.kind == "models":
            headers["Accept"] = "application/json"
            ex.upstream_url = URL(base + "/models")
        else:
            headers["Accept"] = "text/event-stream"
            ex.upstream_url = URL(base + "/conversation")
            chat = state.chat = parse_chat_request(await ex.json())
            state.slug = self.models.slug(chat.model)
            history = self.config.enable_history
            ex.set_json(conversation_body(chat, state.slug, history=history))
            state.completion_id = f"chatcmpl-{uuid.uuid4().hex}"
            state.created = int(time.time())
        ex.state[self.name] = state
        return None

    def _classify(self, ex: Exchange) -> _State:
        """What the client asks for, from its method and path."""
        path, method = ex.path, ex.method
        if _CHAT_PATH.fullmatch(path):
            if method != "POST":
                raise MethodNotAllowed(
                    f"{method} is not allowed on {path}", headers={"Allow": "POST"}
                )
            return _State(kind="chat")
        single = _MODEL_PATH.fullmatch(path)
        if single is not None or _MODELS_PATH.fullmatch(path):
            if method != "GET":
                raise MethodNotAllowed(
                    f"{method} is not allowed on {path}", headers={"Allow": "GET"}
                )
            return _State(kind="models", model_id=single.group(1) if single else None)
        raise NotFound(
            f"{self.name} serves POST .../chat/completions and GET .../models, not {path}"
        )

    async def on_response(self, ex: Exchange) -> None:
        """Choose how to convert this upstream answer, and the head the client gets."""
        state: _State | None = ex.state.get(self.name)
        headers = ex.response_headers
        if state is None or ex.upstream_status is None or headers is None:
            return  # an answer the gateway made itself
        content_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if ex.status != 200:
            state.body = ErrorAnswer(ex.status or 502, headers)
        elif encoding != "identity":
            raise BadGateway(f"ChatGPT answered with Content-Encoding {encoding!r}")
        elif state.kind == "models" or state.chat is None:
            if content_type != "application/json":
                raise BadGateway(f"ChatGPT's model list came as {content_type or 'no type'!r}")
            state.body = ModelListAnswer(self.models, state.model_id)
        elif content_type != "text/event-stream":
            raise BadGateway(f"ChatGPT answered {content_type or 'no type'!r}, not an event stream")
        else:
            chat = state.chat
            args = (state.completion_id, state.created, chat.model, chat.prompt_tokens)
            continues = MAX_CONTINUATIONS if self.config.auto_continue else 0
            state.body = (
                ChunkStream(*args, chat.include_usage, continues)
                if chat.stream
                else Completion(*args, continues)
            )
        for name in ("Content-Length", "Content-Encoding", "Content-Type"):
            headers.popall(name, None)
        # A stream ChatGPT breaks off still ends with an error event, then [DONE].
        ex.ends_broken_body = isinstance(state.body, ChunkStream)
        if isinstance(state.body, ChunkStream):
            headers["Content-Type"] = "text/event-stream; charset=utf-8"
            headers["Cache-Control"] = "no-cache"
        else:
            headers["Content-Type"] = "application/json"

    async def on_chunk(self, ex: Exchange, chunk: bytes) -> bytes:
        """Convert the answer's bytes; keep ``ex.usage`` up to date as text arrives."""
        state: _State | None = ex.state.get(self.name)
        if state is None or state.body is None:
            return chunk
        body = state.body
        try:
            out = body.feed(chunk, final=not chunk)
            while isinstance(body, ChunkStream | Completion) and body.pending_continuation:
                assert self.http is not None
                history = self.config.enable_history
                out += await continue_answer(self.http, ex, body, state.slug, history)
        finally:
            if isinstance(body, ChunkStream | Completion) and body.answer.started:
                ex.usage = body.usage
        return out
