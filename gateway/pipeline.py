"""A route's pipeline: its plugins and, per hook, the list of those that override it.

The lists are built once per route when the config loads, so a request only
loops over plugins that have work to do (structlog's processor chain is the
model: a plain loop over a precomputed list).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from gateway.errors import GatewayError
from gateway.plugin import Exchange, Plugin
from gateway.sse import EventTooLarge, SSEEvent, SSEParser
from gateway.usage import TokenMeter, prompt_tokens, reported_usage

logger = structlog.get_logger("gateway")

Parsed = list[tuple[SSEEvent | None, bytes]]
ChunkHook = Callable[[Exchange, bytes], Awaitable[bytes]]
EventHook = Callable[[Exchange, SSEEvent], Awaitable[SSEEvent | Sequence[SSEEvent] | None]]


class Pipeline:
    """The ordered plugins of one route, with their hooks sorted out."""

    __slots__ = (
        "body_stages",
        "changes_bodies",
        "complete_hooks",
        "plugins",
        "request_hooks",
        "response_hooks",
        "upstream_error_hooks",
        "usage_wanted",
    )

    def __init__(self, plugins: Sequence[Plugin]) -> None:
        self.plugins = tuple(plugins)
        # Request hooks run in order; the rest in reverse (the first plugin sees last).
        self.request_hooks = [
            (i, p.on_request) for i, p in enumerate(plugins) if p.uses("on_request")
        ]
        backwards = list(enumerate(plugins))[::-1]
        self.response_hooks = [(i, p.on_response) for i, p in backwards if p.uses("on_response")]
        self.upstream_error_hooks = [
            p.on_upstream_error for _, p in backwards if p.uses("on_upstream_error")
        ]
        self.complete_hooks = [p.on_complete for _, p in backwards if p.uses("on_complete")]
        stages: list[tuple[str, list[Any]]] = []
        for _, plugin in backwards:
            if plugin.uses("on_chunk"):
                stages.append(("chunk", [plugin.on_chunk]))
            if plugin.uses("on_event"):
                if stages and stages[-1][0] == "event":
                    stages[-1][1].append(plugin.on_event)
                else:
                    stages.append(("event", [plugin.on_event]))
        self.body_stages = stages
        #: Some plugin may change the bytes of an answer that is not an event stream
        #: (an ``on_chunk`` hook: ``on_event`` hooks see event streams only).
        self.changes_bodies = any(kind == "chunk" for kind, _ in stages)
        #: Some plugin reads ``Exchange.usage``: the gateway meters answers for it.
        self.usage_wanted = any(p.needs_usage() for p in plugins)

    async def run_request(
        self, ex: Exchange
    ) -> tuple[web.StreamResponse | None, int, GatewayError | None]:
        """Run ``on_request`` hooks in order until one answers.

        Returns the answer (a raised `GatewayError` becomes its JSON answer), the
        index of the plugin that gave it, and the error if one was raised.
        """
        ex.usage_wanted = self.usage_wanted
        for index, hook in self.request_hooks:
            try:
                response = await hook(ex)
            except GatewayError as exc:
                return exc.response(), index, exc
            if response is not None:
                return response, index, None
        return None, len(self.plugins), None

    async def run_upstream_error(self, ex: Exchange, error: GatewayError) -> GatewayError:
        """Run ``on_upstream_error`` hooks in reverse until one asks for a retry.

        Returns the error to answer with: ``error``, or one a hook raised instead
        (which the hooks after it then see).
        """
        for hook in self.upstream_error_hooks:
            try:
                await hook(ex, error)
            except GatewayError as exc:
                error = exc
                ex.retry_requested = False
                continue
            if ex.retry_requested:
                break
        return error

    async def run_response(
        self, ex: Exchange, before: int | None = None
    ) -> tuple[web.Response | None, GatewayError | None]:
        """Run ``on_response`` hooks in reverse, of plugins before index ``before`` only.

        A hook that raises a `GatewayError` replaces the answer with the error's,
        which only the plugins before it then see; that answer is returned.  A hook
        that asks for a retry ends the round: the others never see the discarded answer.
        """
        replaced: web.Response | None = None
        error: GatewayError | None = None
        for index, hook in self.response_hooks:
            if before is not None and index >= before:
                continue
            try:
                await hook(ex)
            except GatewayError as exc:
                replaced, error, before = exc.response(), exc, index
                ex.status, ex.response_headers = replaced.status, replaced.headers
                ex.retry_requested = False
                continue
            if ex.retry_requested:
                break
        return replaced, error

    async def run_complete(self, ex: Exchange, error: BaseException | None) -> None:
        """Run every ``on_complete`` hook; one failing does not stop the others."""
        if ex.error_code is None and isinstance(error, GatewayError):
            ex.error_code = error.code
        for hook in self.complete_hooks:
            try:
                await hook(ex, error)
            except Exception:
                logger.exception("on_complete hook failed", request_id=ex.request_id)

    def body_filter(self, ex: Exchange, sse: bool) -> BodyFilter | Stage | None:
        """A filter for this response's body (``feed``, ``finish``), or ``None`` when no
        plugin wants the body."""
        stages = [s for s in self.body_stages if sse or s[0] == "chunk"]
        meter = usage_meter(ex) if self.usage_wanted else None
        if meter is not None:
            # First: it sees the upstream's own bytes, before any plugin changes them.
            stages.insert(0, ("usage", [meter]))
        if not stages:
            return None
        built = tuple(_stage(ex, kind, hooks) for kind, hooks in stages)
        # One stage (the token meter alone, on the default pipeline) is its own filter:
        # no `BodyFilter` and tuple around it for the length of a stream (about 100
        # bytes less per open stream, bench/streams.py hold_streams).
        return built[0] if len(built) == 1 else BodyFilter(built)

    def meter_whole(self, ex: Exchange, body: bytes) -> None:
        """Set ``ex.usage`` from a whole answer that no plugin changes, if a plugin wants it.

        (Without the body filter around the meter, and without the meter when the answer
        is plain JSON with the upstream's own count: 634k -> 600k instructions a request,
        bench/instructions.sh default.)
        """
        answer = meterable(ex) if self.usage_wanted else None
        if answer is None:
            return
        media, content_type, encoding = answer
        if not encoding and media != "text/event-stream":
            usage = reported_usage(body)
            if usage is not None:
                ex.usage = usage
                return
        meter = TokenMeter(content_type, encoding)
        meter.feed(body)
        meter.finish()
        settle_usage(ex, meter)


def usage_meter(ex: Exchange) -> TokenMeter | None:
    """A meter for this answer's tokens: for a successful JSON or event-stream answer
    whose usage no plugin has counted yet."""
    answer = meterable(ex)
    return None if answer is None else TokenMeter(answer[1], answer[2])


def meterable(ex: Exchange) -> tuple[str, str, str] | None:
    """The media type, ``Content-Type`` and ``Content-Encoding`` of a successful JSON or
    event-stream answer whose usage no plugin has counted yet; else ``None``."""
    headers = ex.response_headers
    if ex.usage is not None or headers is None or ex.status is None or ex.method == "HEAD":
        return None
    if not 200 <= ex.status < 300:
        return None
    content_type = headers.get("Content-Type", "")
    media = content_type.partition(";")[0].strip().lower()
    if media != "text/event-stream" and media != "application/json" and not media.endswith("+json"):
        return None
    return media, content_type, headers.get("Content-Encoding", "")


def settle_usage(ex: Exchange, meter: TokenMeter) -> None:
    """Set ``ex.usage`` from a meter that read the whole answer, unless a plugin that
    counts its own answer set it meanwhile."""
    if ex.usage is None:
        usage = meter.reported_usage
        if usage is None:  # an estimate: the prompt is counted only then
            usage = meter.usage(prompt_tokens(ex.json_if_read()))
        ex.usage = usage


class BodyFilter:
    """Runs a response body through the chunk and event hooks, in reverse pipeline order.

    Consecutive event hooks share one SSE parser; between a chunk hook and an
    event hook the events are serialised again, so each hook sees exactly the
    output of the one before it.
    """

    __slots__ = ("_stages",)

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        self._stages = stages

    async def feed(self, data: bytes) -> bytes:
        for stage in self._stages:
            if not data:
                return b""
            data = await stage.feed(data)
        return data

    async def finish(self) -> bytes:
        """Flush every stage at the end of the body (chunk hooks get a final ``b""``)."""
        data = b""
        for stage in self._stages:
            if data:
                data = await stage.feed(data)
            data += await stage.finish()
        return data


def _stage(ex: Exchange, kind: str, hooks: list[Any]) -> Stage:
    if kind == "chunk":
        return _ChunkStage(ex, hooks[0])
    if kind == "usage":
        return _UsageStage(ex, hooks[0])
    return _EventStage(ex, hooks)


class _ChunkStage:
    __slots__ = ("ex", "hook")

    def __init__(self, ex: Exchange, hook: ChunkHook) -> None:
        self.ex = ex
        self.hook = hook

    async def feed(self, data: bytes) -> bytes:
        return await self.hook(self.ex, data)

    async def finish(self) -> bytes:
        return await self.hook(self.ex, b"")


class _UsageStage:
    """Meters the answer's tokens, passing its bytes on untouched; sets ``ex.usage`` at the end."""

    __slots__ = ("ex", "meter", "parser")

    def __init__(self, ex: Exchange, meter: TokenMeter) -> None:
        self.ex = ex
        self.meter = meter
        self.parser = SSEParser(ex.max_event_size) if meter.streamed else None

    async def feed(self, data: bytes) -> bytes:
        if self.parser is None:
            self.meter.feed(data)
        else:
            self._read(self.parser.feed, data)
        return data

    async def finish(self) -> bytes:
        if self.parser is None:
            self.meter.finish()
        else:
            self._read(lambda _: self.parser.flush() if self.parser else [], b"")
        settle_usage(self.ex, self.meter)
        return b""

    def _read(
        self, parse: Callable[[bytes], list[tuple[SSEEvent | None, bytes]]], data: bytes
    ) -> None:
        try:
            parsed = parse(data)
        except EventTooLarge:
            self.parser = None  # metering never breaks an answer: the estimate stops here
            return
        for event, _ in parsed:
            if event is not None:
                self.meter.event(event)


class _EventStage:
    __slots__ = ("ex", "hooks", "parser")

    def __init__(self, ex: Exchange, hooks: list[EventHook]) -> None:
        self.ex = ex
        self.hooks = hooks
        self.parser = SSEParser(ex.max_event_size)

    async def feed(self, data: bytes) -> bytes:
        return await self._run(self.parser.feed(data))

    async def finish(self) -> bytes:
        return await self._run(self.parser.flush())

    async def _run(self, parsed: list[tuple[SSEEvent | None, bytes]]) -> bytes:
        ex = self.ex
        out: list[bytes] = []
        for event, raw in parsed:
            if event is None:  # a comment or a torn tail: passed on as it came
                out.append(raw)
                continue
            events: list[SSEEvent] = [event]
            for hook in self.hooks:
                next_events: list[SSEEvent] = []
                for item in events:
                    result = await hook(ex, item)
                    if result is None:
                        continue
                    if isinstance(result, SSEEvent):
                        next_events.append(result)
                    else:
                        next_events.extend(result)
                events = next_events
                if not events:
                    break
            if len(events) == 1 and events[0] is event:
                out.append(raw)  # untouched: the upstream's exact bytes
            else:
                out.extend(e.encode() for e in events)
        return b"".join(out)


#: One step of a body filter: a chunk hook, consecutive event hooks, or the token meter.
Stage = _ChunkStage | _EventStage | _UsageStage
