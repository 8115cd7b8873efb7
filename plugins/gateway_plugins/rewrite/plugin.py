"""The ``rewrite`` plugin: declarative changes to requests, responses and events.

Everything is optional and precomputed when the config loads::

    [routes.conversations.plugins.rewrite]
    query_defaults = { offset = "0", limit = "20" }
    query_bounds = { limit = { min = 1, max = 100 } }

    [routes.create_conversation.plugins.rewrite]
    json_empty_to_null = ["conversation_id"]
    json_defaults = { "messages[*].author.role" = "user", "messages[*].metadata" = {} }
    drop_events = ["ping", "moderation"]
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote, quote_plus, unquote_plus

import attrs
from multidict import CIMultiDict
from yarl import URL

from gateway.api import HEADER_TOKEN, BadRequest, Exchange, Plugin, Range, SSEEvent
from gateway_plugins.rewrite.jsonpath import JsonPath

__all__ = ["Bounds", "HeaderChanges", "PathPrefix", "PathRegex", "Rewrite"]

#: A bound of a query parameter: any whole number an upstream can parse (64 bits).
QueryInt = Annotated[int, Range(-(2**63), 2**63 - 1)]
_INTEGER = re.compile(r"[+-]?[0-9]+")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@attrs.frozen
class PathPrefix:
    """``path_prefix``: remove ``strip`` from the upstream path's start, then prepend ``add``."""

    strip: str = ""
    add: str = ""


@attrs.frozen
class PathRegex:
    """One ``path_regex`` rule: ``re.sub(pattern, replace, path)`` on the encoded upstream path."""

    pattern: str
    replace: str


@attrs.frozen
class Bounds:
    """``query_bounds.<name>``: the integer range a query parameter is clamped to."""

    min: QueryInt | None = None
    max: QueryInt | None = None


@attrs.frozen
class HeaderChanges:
    """``request_headers`` / ``response_headers``: applied as remove, then set, then add."""

    set: Mapping[str, str] = attrs.field(factory=dict)
    add: Mapping[str, str] = attrs.field(factory=dict)
    remove: tuple[str, ...] = ()


class Rewrite(Plugin):
    """Rewrites paths, query parameters, headers and JSON bodies, and drops SSE events.

    The upstream path is changed by ``path_prefix`` then ``path_regex``; query
    defaults are added before bounds are applied (a non-integer bounded value
    answers 400).  JSON rules touch a request body only when it is a JSON object
    (Content-Type JSON or none), in this order: ``model_aliases``,
    ``json_remove``, ``json_empty_to_null``, ``json_defaults``, ``json_force``;
    the body is serialised again only when a rule changed it.
    """

    name = "rewrite"

    @attrs.frozen
    class Config:
        path_prefix: PathPrefix = attrs.field(factory=PathPrefix)
        path_regex: tuple[PathRegex, ...] = ()
        #: Query parameters set when the client did not send them.
        query_defaults: Mapping[str, str] = attrs.field(factory=dict)
        query_bounds: Mapping[str, Bounds] = attrs.field(factory=dict)
        request_headers: HeaderChanges = attrs.field(factory=HeaderChanges)
        response_headers: HeaderChanges = attrs.field(factory=HeaderChanges)
        #: JSON paths (``messages[*].author.role``) to values: set when missing.
        json_defaults: Mapping[str, Any] = attrs.field(factory=dict)
        #: JSON paths to values: always set.
        json_force: Mapping[str, Any] = attrs.field(factory=dict)
        json_remove: tuple[str, ...] = ()
        #: JSON paths where ``""`` becomes ``null`` (TOML cannot write null).
        json_empty_to_null: tuple[str, ...] = ()
        #: The body's ``model``, when it is a key here, is replaced by the value.
        model_aliases: Mapping[str, str] = attrs.field(factory=dict)
        #: SSE events dropped: by ``event:`` name, or by the ``"type"`` of a JSON object.
        drop_events: tuple[str, ...] = ()

    def __init__(self, config: Rewrite.Config) -> None:
        super().__init__(config)
        prefix = config.path_prefix
        for key, value in (("strip", prefix.strip), ("add", prefix.add)):
            if value and not value.startswith("/"):
                raise ValueError(f"path_prefix.{key}: must start with '/' ({value!r})")
        self._strip = prefix.strip.rstrip("/")
        self._add = prefix.add.rstrip("/")
        self._regexes = tuple(
            (_compile(rule.pattern, f"path_regex[{i}].pattern"), rule.replace)
            for i, rule in enumerate(config.path_regex)
        )
        for name, bounds in config.query_bounds.items():
            if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
                raise ValueError(f"query_bounds.{name}: min {bounds.min} is above max {bounds.max}")
            default = config.query_defaults.get(name)
            if default is not None and not _INTEGER.fullmatch(default):
                raise ValueError(f"query_defaults.{name}: {default!r} is not an integer")
        self._query_defaults = tuple(config.query_defaults.items())
        self._query_bounds = dict(config.query_bounds)
        self._rewrites_url = bool(
            self._strip or self._add or self._regexes or self._query_defaults or self._query_bounds
        )
        self._request_headers = _HeaderRules(config.request_headers, "request_headers")
        self._response_headers = _HeaderRules(config.response_headers, "response_headers")
        self._model_aliases = dict(config.model_aliases)
        self._remove = _paths(config.json_remove, "json_remove")
        self._empty_to_null = _paths(config.json_empty_to_null, "json_empty_to_null")
        self._defaults = _path_values(config.json_defaults, "json_defaults")
        self._force = _path_values(config.json_force, "json_force")
        self._rewrites_json = any(
            (self._model_aliases, self._remove, self._empty_to_null, self._defaults, self._force)
        )
        self._drop_events = frozenset(config.drop_events)
        # A route with an ``on_event`` hook has every event stream parsed: hooks this
        # config leaves with nothing to do are not asked for.
        self._used = {
            "on_request": bool(self._rewrites_url or self._request_headers or self._rewrites_json),
            "on_response": bool(self._response_headers),
            "on_event": bool(self._drop_events),
        }

    def uses(self, hook: str) -> bool:
        return self._used.get(hook, False)

    async def on_request(self, ex: Exchange) -> None:
        if self._rewrites_url and ex.upstream_url is not None:
            ex.upstream_url = self._rewrite_url(ex.upstream_url)
        self._request_headers.apply(ex.upstream_headers)
        if self._rewrites_json:
            await self._rewrite_json(ex)

    async def on_response(self, ex: Exchange) -> None:
        if ex.response_headers is not None:
            self._response_headers.apply(ex.response_headers)

    async def on_event(self, ex: Exchange, event: SSEEvent) -> SSEEvent | None:
        if event.event in self._drop_events:
            return None
        data = event.data
        # Cheap test first: most events of a stream carry no "type" at all.
        if '"type"' in data and data.lstrip().startswith("{"):
            try:
                parsed = json.loads(data)
            except (ValueError, RecursionError):
                return event
            kind = parsed.get("type") if isinstance(parsed, dict) else None
            if isinstance(kind, str) and kind in self._drop_events:
                return None
        return event

    def _rewrite_url(self, url: URL) -> URL:
        path = self._rewrite_path(url.raw_path)
        query = self._rewrite_query(url.raw_query_string)
        if path == url.raw_path and query == url.raw_query_string:
            return url
        # Built from parts, never parsed from a string: a path such as "//host/x"
        # must not become an authority.
        return URL.build(
            scheme=url.scheme,
            authority=url.raw_authority,
            path=path,
            query_string=query,
            fragment=url.raw_fragment,
            encoded=True,
        )

    def _rewrite_path(self, original: str) -> str:
        path = original
        if self._strip and (path == self._strip or path.startswith(self._strip + "/")):
            path = path[len(self._strip) :]
        path = self._add + path
        for pattern, replace in self._regexes:
            path = pattern.sub(replace, path)
        if path == original:
            return original
        if not path.startswith("/"):
            path = "/" + path
        # What the rules produced may hold characters a URL path cannot carry.
        return _STRAY_PERCENT.sub("%25", quote(path, safe="/%!$&'()*+,;=:@~"))

    def _rewrite_query(self, query: str) -> str:
        if not (self._query_defaults or self._query_bounds):
            return query
        # The raw pairs are edited in place so that untouched ones keep their bytes.
        pairs = query.split("&") if query else []
        names = [unquote_plus(pair.partition("=")[0]) for pair in pairs]
        for name, default in self._query_defaults:
            if name not in names:
                pairs.append(f"{quote_plus(name)}={quote_plus(default)}")
                names.append(name)
        for i, name in enumerate(names):
            bounds = self._query_bounds.get(name)
            if bounds is not None:
                raw_name, _, raw_value = pairs[i].partition("=")
                value = _bounded(name, unquote_plus(raw_value), bounds)
                if value is not None:
                    pairs[i] = f"{raw_name}={value}"
        return "&".join(pairs)

    async def _rewrite_json(self, ex: Exchange) -> None:
        content_type = ex.upstream_headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if content_type not in ("", "application/json") and not content_type.endswith("+json"):
            return  # a form, an upload: not ours to parse
        if ex.body is None and not ex.request.body_exists:
            return
        body = await ex.json()
        if not isinstance(body, dict):
            return
        changed = False
        model = body.get("model")
        if isinstance(model, str) and model in self._model_aliases:
            body["model"] = self._model_aliases[model]
            changed = True
        for path in self._remove:
            changed = path.remove(body) or changed
        for path in self._empty_to_null:
            changed = path.empty_to_null(body) or changed
        for path, value in self._defaults:
            changed = path.set_default(body, value) or changed
        for path, value in self._force:
            changed = path.force(body, value) or changed
        if changed:
            ex.set_json(body)


class _HeaderRules:
    """One ``HeaderChanges`` table, checked and ready to apply."""

    __slots__ = ("add", "remove", "set")

    def __init__(self, changes: HeaderChanges, where: str) -> None:
        for key, names in (("remove", changes.remove), ("set", changes.set), ("add", changes.add)):
            for name in names:
                if not HEADER_TOKEN.fullmatch(name):
                    raise ValueError(f"{where}.{key}: {name!r} is not a header name")
        for key, table in (("set", changes.set), ("add", changes.add)):
            for name, value in table.items():
                if any(c in value for c in "\r\n\0"):
                    raise ValueError(f"{where}.{key}.{name}: line breaks are not allowed")
        self.remove = changes.remove
        self.set = tuple(changes.set.items())
        self.add = tuple(changes.add.items())

    def __bool__(self) -> bool:
        return bool(self.remove or self.set or self.add)

    def apply(self, headers: CIMultiDict[str]) -> None:
        for name in self.remove:
            headers.popall(name, None)
        for name, value in self.set:
            headers[name] = value
        for name, value in self.add:
            headers.add(name, value)


def _bounded(name: str, value: str, bounds: Bounds) -> int | None:
    """The value clamped into ``bounds``, or ``None`` when it is already inside."""
    try:
        number = int(value) if _INTEGER.fullmatch(value) else None
    except ValueError:  # more digits than Python converts
        number = None
    if number is None:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise BadRequest(f"query parameter {name!r} must be an integer, not {shown!r}")
    if bounds.max is not None and number > bounds.max:
        return bounds.max
    if bounds.min is not None and number < bounds.min:
        return bounds.min
    return None


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: not a regular expression ({exc})") from None


def _paths(texts: tuple[str, ...], where: str) -> tuple[JsonPath, ...]:
    paths = []
    for i, text in enumerate(texts):
        try:
            paths.append(JsonPath(text))
        except ValueError as exc:
            raise ValueError(f"{where}[{i}]: {exc}") from None
    return tuple(paths)


def _path_values(table: Mapping[str, Any], where: str) -> tuple[tuple[JsonPath, Any], ...]:
    rules = []
    for text, value in table.items():
        try:
            path = JsonPath(text)
            json.dumps(value, allow_nan=False)
        except ValueError as exc:
            raise ValueError(f"{where}.{text}: {exc}") from None
        except TypeError:
            kind = type(value).__name__
            raise ValueError(f"{where}.{text}: not a JSON value ({kind})") from None
        rules.append((path, value))
    return tuple(rules)
