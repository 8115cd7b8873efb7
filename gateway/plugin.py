"""The plugin types: `Plugin`, `Exchange`, `SSEEvent` (plugins import them from `gateway.api`).

A plugin is a class registered under the entry-point group ``gateway.plugins``.
The gateway builds, for every route, the list of plugins named by the config and
calls only the hooks each plugin overrides:

- ``on_request`` in pipeline order, before the upstream is called;
- ``on_upstream_error`` in reverse pipeline order, when the upstream could not
  be reached or gave no answer head in time (a plugin may switch upstream and retry);
- ``on_response``, ``on_chunk``, ``on_event`` and ``on_complete`` in reverse
  pipeline order, as Envoy's encoder filters do: the first plugin sees the final
  response.

``docs/plugins.md`` documents every hook with an example.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway import jsonbody
from gateway.body import read_limited
from gateway.errors import BadRequest, GatewayError, UnsupportedMediaType
from gateway.sse import SSEEvent
from gateway.usage import Usage

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, RouteConfig, UpstreamConfig
    from gateway.context import GatewayContext
    from gateway.transport import UpstreamResponse

__all__ = ["HOOKS", "Exchange", "Identity", "Plugin", "SSEEvent", "Usage"]

#: The names of the per-request hooks, in the order a request meets them.
HOOKS = (
    "on_request",
    "on_upstream_error",
    "on_response",
    "on_chunk",
    "on_event",
    "on_complete",
)


@attrs.frozen
class NoConfig:
    """The config class of a plugin that takes no options."""


class Plugin:
    """Base class of every plugin.

    Subclasses set a nested attrs class ``Config`` (structured by cattrs from
    ``[plugins.<name>]`` merged with a route's ``[routes.<r>.plugins.<name>]``)
    and override only the hooks they need: a hook that is not overridden is
    never called and costs nothing.
    """

    #: The attrs class the plugin's config table is structured into.
    Config: ClassVar[type[Any]] = NoConfig
    #: The entry-point name the plugin was loaded under (set by the loader).
    name: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        self.config = config

    def check(self, config: GatewayConfig) -> list[str]:
        """Problems this plugin's config has in the light of the whole config.

        Called when a config is loaded (by ``gateway check``, at start and on
        reload), after every plugin was built; each problem is a line such as
        ``"rules[0].routes: unknown route 'x'"``, reported under the plugin's key
        path (a line that starts with ``$`` names its own).
        """
        return []

    async def startup(self, context: GatewayContext) -> None:
        """Called once before the first request that may use this plugin."""

    async def shutdown(self) -> None:
        """Called once after the last request that used this plugin has ended."""

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        """Inspect or change the upstream request; return a response to answer now."""
        return None

    async def on_upstream_error(self, ex: Exchange, error: GatewayError) -> None:
        """The upstream could not be reached, refused, or timed out before its answer's head.

        ``error`` is what the client will get unless a plugin retries (``ex.retry()``,
        after ``ex.use_upstream(...)`` to try another upstream, say) or raises another.
        """

    async def on_response(self, ex: Exchange) -> None:
        """Inspect or change the status and headers before the client sees them."""

    async def on_chunk(self, ex: Exchange, chunk: bytes) -> bytes:
        """Transform one body chunk; called once more with ``b""`` at the end."""
        return chunk

    async def on_event(self, ex: Exchange, event: SSEEvent) -> SSEEvent | Sequence[SSEEvent] | None:
        """Transform, replace (a list) or drop (``None``) one whole server-sent event."""
        return event

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        """Called exactly once per request, after the last byte or the error."""

    def needs_usage(self) -> bool:
        """Whether this plugin reads ``Exchange.usage``: then the gateway fills it.

        On a route where some plugin says yes, the gateway meters every answer's
        tokens (the upstream's ``usage``, else an estimate with ``estimated=True``)
        unless a plugin set ``ex.usage`` itself.  Default: no (metering costs CPU).
        """
        return False

    def identifies_clients(self) -> bool:
        """Whether this plugin sets ``Exchange.identity`` on every request it lets pass
        (an authentication plugin that refuses the unknown).  Default: no."""
        return False

    def status(self) -> Mapping[str, Any]:
        """What this plugin can report about its live state, JSON-able (default: nothing).

        Read by `GatewayContext.statuses` (an admin page, say); names, states and
        times only, never a secret.
        """
        return {}

    def uses(self, hook: str) -> bool:
        """Whether the gateway must call ``hook`` on this instance.

        By default, whether the class overrides it.  A plugin whose config leaves
        a hook nothing to do may say no, so that, say, an idle ``on_event`` does
        not make the gateway parse every event stream of the route.
        """
        return self.overrides(hook)

    @classmethod
    def overrides(cls, hook: str) -> bool:
        """Whether this plugin class overrides ``hook``."""
        return getattr(cls, hook) is not getattr(Plugin, hook)


@attrs.frozen
class Identity:
    """Who the client is, as an authentication plugin established it."""

    name: str
    team: str | None = None
    #: The routes this client may use (``None``: every route); the auth plugin enforces it.
    allowed_routes: frozenset[str] | None = None
    #: The models this client may ask for (``None``: any); the auth plugin enforces it.
    allowed_models: frozenset[str] | None = None


_UNREAD: Any = object()


@attrs.define(eq=False)
class Exchange:
    """One request's passage through the gateway, shared by every hook.

    The request side (``upstream_url``, ``upstream_headers``, the JSON body) may
    be changed by ``on_request``; the response side (``status``,
    ``response_headers``) by ``on_response``.  ``state`` is free for plugins,
    keyed by plugin name by convention.
    """

    #: The client's request, as aiohttp parsed it.
    request: web.BaseRequest
    #: The name and config of the route the request matched.
    route_name: str
    route: RouteConfig
    #: The upstream the route points to; ``None`` for routes that plugins answer.
    upstream: UpstreamConfig | None
    #: The parameters the route's path pattern captured.
    path_params: dict[str, str]
    #: The request path after normalisation (what routing and limits saw).
    path: str
    #: The URL the forwarder will call, built from config only.
    upstream_url: URL | None
    #: The headers the forwarder will send (hop-by-hop headers already removed).
    upstream_headers: CIMultiDict[str]
    #: The client's address, through the configured trusted proxy hops.
    client_ip: str
    #: The request id (taken from ``X-Request-ID`` by ``access_log`` or made).
    request_id: str
    #: The outbound proxy for this request: the upstream's next, or a route's (``upstream_proxy``).
    proxy: str | None = None
    #: Who the client is, once an auth plugin knows.
    identity: Identity | None = None
    #: Free space for a plugin's own per-request state, keyed by its name.  What other
    #: plugins read goes in the typed fields below, never here.
    state: dict[str, Any] = attrs.Factory(dict)
    #: The model the request asked for (the body's ``model``), once a plugin read the body.
    model: str | None = None
    #: The name of the pooled upstream credential used (never the secret), set by ``auth``.
    credential: str | None = None
    #: How many times a refused credential was replaced by another for this request.
    credential_failovers: int = 0
    #: The name of the limit rule that refused the request (a config name), if one did.
    limited_by: str | None = None
    #: The ``code`` of the error the client got, the gateway's or the upstream's.
    error_code: str | None = None
    #: The deployment that answered, when a plugin chose among several.
    deployment: str | None = None
    #: Whether some plugin of the route needs ``usage`` (`Plugin.needs_usage`).
    usage_wanted: bool = False
    #: The status and headers the client will get (set when the upstream answers).
    status: int | None = None
    response_headers: CIMultiDict[str] | None = None
    #: The upstream's own status, unchanged by plugins (``None`` if not called).
    upstream_status: int | None = None
    #: Token usage, for quotas and metrics.
    usage: Usage | None = None
    #: Timing (``time.perf_counter`` values) and byte counts.
    started: float = attrs.Factory(time.perf_counter)
    first_byte_at: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    #: The request body when it has been read (plugins replace it with ``set_body``).
    body: bytes | None = None
    _json: Any = _UNREAD
    #: The maximum request body size the forwarder and ``json()`` accept.
    max_body_size: int = 8 * 1024 * 1024
    #: The longest silence allowed between bytes of the request body.
    body_idle_timeout: float = 60.0
    #: The longest server-sent event the gateway parses (``server.max_event_size``).
    max_event_size: int = 4 * 1024 * 1024
    #: Whether a plugin asked, from ``on_response``, for the request to be sent again.
    retry_requested: bool = False
    #: Whether a retry is possible now (no byte sent yet, the body replayable, attempts left).
    can_retry: bool = False
    #: How many times the upstream has been called for this request.
    attempts: int = 0
    #: The upstream's answer while the response hooks run (read it with `read_upstream_body`).
    upstream_response: UpstreamResponse | None = None
    #: Set by a plugin whose body hooks finish an answer in their own format when the
    #: upstream breaks off mid-body (an error event, say): the hooks then get their final
    #: call and the answer ends cleanly, where the gateway would abort the connection.
    ends_broken_body: bool = False
    #: The config's upstreams, by name (what `use_upstream` may switch to).
    _upstreams: Mapping[str, UpstreamConfig] = attrs.Factory(dict)
    _log: Any = None

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A structlog logger bound to this request's id (made on first use)."""
        if self._log is None:
            self._log = structlog.get_logger("gateway").bind(request_id=self.request_id)
        return self._log  # type: ignore[no-any-return]

    @property
    def method(self) -> str:
        return self.request.method

    async def read_body(self) -> bytes:
        """Read the whole request body once (bounded by the size limit) and keep it."""
        if self.body is None:
            self.body = await read_limited(self.request, self.max_body_size, self.body_idle_timeout)
        return self.body

    async def json(self) -> Any:
        """The request body parsed as strict JSON, cached; a bad body answers 400.

        Strict: no duplicate keys, ``NaN``, infinities or unbounded nesting (see
        `gateway.jsonbody`).  A compressed body cannot be read: 415.
        """
        if self._json is _UNREAD:
            encoding = self.request.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding != "identity":
                raise UnsupportedMediaType(
                    f"this route reads the JSON body and cannot read a {encoding!r}-encoded one"
                )
            raw = await self.read_body()
            try:
                self._json = await jsonbody.loads_async(raw) if raw.strip() else None
            except ValueError as exc:
                raise BadRequest(f"request body is not valid JSON: {exc}") from None
            self.note_model(self._json)
        return self._json

    def json_if_read(self) -> Any:
        """The parsed JSON body if a plugin has read it (`json`), else ``None``."""
        return None if self._json is _UNREAD else self._json

    def note_model(self, body: Any) -> None:
        """Set `model` from a JSON body's ``model`` string, unless a plugin set it already."""
        if self.model is None and isinstance(body, dict):
            model = body.get("model")
            if isinstance(model, str):
                self.model = model

    def set_json(self, value: Any) -> None:
        """Replace the request body with ``value`` serialised as JSON (400 if it cannot be)."""
        try:
            body = jsonbody.dumps(value)
        except ValueError as exc:
            raise BadRequest(f"request body {exc}") from None
        self._json = value
        self.set_body(body, "application/json")

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the request body sent upstream."""
        self.body = body
        self.upstream_headers.popall("Content-Length", None)
        self.upstream_headers.popall("Content-Encoding", None)
        if content_type is not None:
            self.upstream_headers["Content-Type"] = content_type

    async def read_upstream_body(self, limit: int = 64 * 1024) -> bytes | None:
        """From ``on_response``: the upstream answer's whole body, if at most ``limit`` bytes.

        ``None`` for a longer (or broken) body.  The bytes read still go to the client
        (and through the body hooks): a plugin can read an error's reason before
        choosing to retry, or to let the answer pass.
        """
        if self.upstream_response is None:
            return None
        return await self.upstream_response.read_ahead(limit)

    def retry(self) -> bool:
        """From ``on_response`` or ``on_upstream_error``: send the request again.

        An answer the upstream gave is discarded.  Returns whether the retry will
        happen: only while no byte has reached the client, the body can be replayed
        (it was read, or there was none) and attempts are left.  A plugin changes
        what it must (a credential, the upstream with `use_upstream`) before asking;
        the plugins after it in the response order never see the discarded answer.
        """
        self.retry_requested = self.can_retry
        return self.retry_requested

    def use_upstream(
        self,
        upstream: UpstreamConfig | str,
        url: URL | str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send this request (or its retry) to another upstream of the config, at ``url``.

        ``upstream`` is an ``[upstreams.<name>]`` config or its name (`KeyError` if
        there is none).  The forwarder then uses that upstream's connections, proxies,
        TLS settings and timeouts (a route's own timeouts apply to the route's upstream
        only).  The headers sent are ``headers`` when given, else the current ones;
        either way without the headers the previous upstream's config adds, and with
        the new one's.
        """
        if isinstance(upstream, str):
            upstream = self._upstreams[upstream]
        previous = self.upstream
        sent = CIMultiDict(headers) if headers is not None else self.upstream_headers
        if previous is not None:
            for name in previous.headers:
                sent.popall(name, None)
        sent.update(upstream.headers)
        self.upstream_headers = sent
        self.upstream = upstream
        self.upstream_url = url if isinstance(url, URL) else URL(url)
        # SECURITY: the new upstream's own proxies (the forwarder chooses one), never the
        # previous upstream's.
        self.proxy = None
