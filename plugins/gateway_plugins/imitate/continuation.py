"""``imitate``'s continuations: go-chatgpt-api's ``CONTINUE_SIGNAL``.

When ChatGPT cuts an answer for length (``finish_details.type`` ``max_tokens``)
and ``[plugins.imitate] auto_continue`` is on, the plugin sends ChatGPT an
``action: "continue"`` request for the same conversation, from the answer's last
message, and converts what comes back as more of the same answer: the client
sees one answer, finished by ``stop`` (or by ``length`` after `MAX_CONTINUATIONS`).

The continuation is called while the answer's body is being converted, so its
text reaches the client when each continuation has been read whole: a stream
pauses meanwhile, then goes on.
"""

from __future__ import annotations

from gateway.api import Exchange, GatewayError, HttpClient
from gateway_plugins.imitate.errors import error_detail
from gateway_plugins.imitate.request import continue_body
from gateway_plugins.imitate.stream import ChunkStream, Completion

__all__ = ["MAX_CONTINUATIONS", "continue_answer"]

#: How many times one answer is continued at most (go-chatgpt-api stopped after a few too).
MAX_CONTINUATIONS = 3
#: How much of a refused continuation's body is read to find ChatGPT's reason.
_ERROR_LIMIT = 64 * 1024


async def continue_answer(
    http: HttpClient,
    ex: Exchange,
    conversion: ChunkStream | Completion,
    slug: str,
    history: bool,
) -> bytes:
    """Have ChatGPT continue the answer ``conversion`` stopped short; return what it adds.

    The continuation goes to the exchange's upstream, through its proxy.  Whatever
    goes wrong ends the answer through ``conversion`` (an error event once the
    stream has begun, else a 502).
    """
    conversation_id, last_message_id = conversion.continue_answer()
    ex.set_json(continue_body(conversation_id, last_message_id, slug, history=history))
    ex.log.info("continuing an answer cut for length", conversation_id=conversation_id)
    assert ex.upstream is not None and ex.upstream_url is not None
    out: list[bytes] = []
    answered = False
    try:
        async with http.stream(
            ex.method,
            ex.upstream_url,
            headers=ex.upstream_headers,
            body=ex.body,
            upstream=ex.upstream,
            proxy=ex.proxy,
        ) as upstream:
            answered = True
            if upstream.status != 200:
                body = b""
                while len(body) < _ERROR_LIMIT and (chunk := await upstream.chunk()):
                    body += chunk
                detail = error_detail(body)
                reason = f"HTTP {upstream.status}" + (f": {detail}" if detail else "")
                return conversion.fail(f"ChatGPT could not continue the answer ({reason})")
            while chunk := await upstream.chunk():
                out.append(conversion.feed(chunk))
    except GatewayError as exc:
        if not answered:
            return conversion.fail(f"ChatGPT could not continue the answer: {exc.message}")
        # Broken off: the final feed below ends the answer as incomplete.
    if conversion.pending_continuation is None:
        out.append(conversion.feed(b"", final=True))
    return b"".join(out)
