"""Token quotas before the answer: what a request may cost, and asking streams for usage.

A request that a token quota applies to reserves its likely cost before it is
forwarded (`reservation`): its prompt's estimated tokens plus the completion
tokens it allows (``max_completion_tokens``, ``max_tokens``, or the Responses
API's ``max_output_tokens``; else the configured default), for each of its
``n`` choices.  The quota admits it only if the reservation fits, and settles
it with the real usage when the answer has ended.

OpenAI reports usage in a streamed chat or legacy completion only when asked
(``stream_options.include_usage``): `ask_for_usage` asks on the client's
behalf, and the plugin then removes the extra usage chunk from what a client
that did not ask sees (the ``"usage": null`` the other chunks then carry is
left, as OpenAI's SDKs read it as absent).  The Responses API always reports
usage in its ``response.completed`` event.
"""

from __future__ import annotations

from typing import Any

import attrs

from gateway.api import BadRequest, Exchange, TokenMeter, UnsupportedMediaType, prompt_tokens

__all__ = ["TokenBudget", "ask_for_usage", "reservation"]

_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# Upstream paths that stream OpenAI completion chunks.
_CHUNK_STREAMS = ("/chat/completions", "/completions")
# More choices than this are not worth believing for a reservation.
_MAX_CHOICES = 128
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


@attrs.define
class TokenBudget:
    """One request's tokens: reserved before it is forwarded, counted once it has ended."""

    #: The prompt's estimated tokens (0 without a JSON body).
    prompt: int
    #: The most tokens the request may use: what a token quota reserves for it.
    reserved: int
    #: The gateway asked the upstream for the usage chunk, which the client did not want.
    strip_usage: bool = False
    #: The request's JSON body, if it has one.
    body: Any = None
    #: Watches the answer (set when its head arrives).
    meter: TokenMeter | None = None

    @classmethod
    async def of(cls, ex: Exchange, default_completion: int) -> TokenBudget:
        """The budget of a request: nothing without a body; its JSON read when it has one."""
        if ex.method in _BODILESS or not ex.request.body_exists:
            return cls(0, 0)
        media = ex.request.headers.get("Content-Type", "application/json").partition(";")[0]
        body = None
        if media.strip().lower() in ("application/json", ""):
            try:
                body = await ex.json()
            except (BadRequest, UnsupportedMediaType):  # not JSON: its cost is unknown
                body = None
        prompt = prompt_tokens(body)
        return cls(prompt, reservation(body, prompt, default_completion), body=body)

    def ask_for_usage(self, ex: Exchange) -> None:
        """Ask a completion stream for its usage, to be removed from what the client sees."""
        if ex.upstream_url is None:
            return
        body = ask_for_usage(self.body, ex.upstream_url.path)
        if body is not None:
            ex.set_json(body)
            self.strip_usage = True

    def used(self, ex: Exchange, error: BaseException | None) -> int:
        """The tokens to charge once the request has ended.

        The usage another plugin counted or the upstream reported; without one,
        the estimate of the prompt and the answer's text; and when the answer was
        cut before its usage came, the whole reservation (at least): the upstream
        may well have used it all.
        """
        if ex.usage is not None:
            return ex.usage.total_tokens
        meter = self.meter
        if meter is not None and meter.reported is not None:
            return meter.reported
        status = ex.upstream_status
        if status is None or not 200 <= status < 300:
            return 0  # never answered, or refused: nothing generated
        estimated = self.prompt + (meter.estimated if meter is not None else 0)
        if error is not None:
            return max(self.reserved, estimated)
        return estimated


def reservation(body: Any, prompt: int, default_completion: int) -> int:
    """The tokens a request with this JSON ``body`` (``prompt`` tokens) may use at most."""
    completion = default_completion
    choices = 1
    if isinstance(body, dict):
        for field in _LIMIT_FIELDS:
            if _whole(body.get(field)):
                completion = body[field]
                break
        if _whole(body.get("n")):
            choices = min(body["n"], _MAX_CHOICES)
    return prompt + completion * choices


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def ask_for_usage(body: Any, upstream_path: str) -> dict[str, Any] | None:
    """The body asking a completion stream for its usage, or ``None`` if there is nothing to ask.

    ``None`` also when the client asked already: it then gets the usage chunk.
    """
    if not isinstance(body, dict) or body.get("stream") is not True:
        return None
    if not upstream_path.endswith(_CHUNK_STREAMS):
        return None
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return None  # the upstream will refuse it; not ours to fix
    if options is not None and options.get("include_usage") is True:
        return None
    return {**body, "stream_options": {**(options or {}), "include_usage": True}}
