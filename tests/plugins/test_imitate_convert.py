"""``imitate``'s pure conversions: requests, recorded ChatGPT streams, models and errors."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api import SSEEvent
from gateway.config import structure
from gateway.errors import BadGateway, BadRequest, GatewayError
from gateway.testing.chatgpt_stream import REWRITE_PARTS
from gateway.testing.sse import encode_event
from gateway.usage import estimate_tokens
from gateway_plugins.imitate.answer import ChatGPTAnswer
from gateway_plugins.imitate.errors import ErrorAnswer, error_detail, event_error, upstream_error
from gateway_plugins.imitate.models import ModelListAnswer, ModelMap, openai_model_list
from gateway_plugins.imitate.plugin import Imitate
from gateway_plugins.imitate.request import (
    ChatMessage,
    conversation_body,
    parse_chat_request,
)
from gateway_plugins.imitate.stream import ChunkStream, Completion, DeltaTracker

# --- recorded ChatGPT streams ---------------------------------------------------------


def message(
    text: str,
    *,
    finish: str | None = None,
    role: str = "assistant",
    message_id: str = "m1",
    content_type: str = "text",
    recipient: str = "all",
) -> dict[str, Any]:
    """A ChatGPT message event's payload, as the web backend sends it."""
    metadata: dict[str, Any] = {"message_type": "next", "model_slug": "gpt-4"}
    if finish is not None:
        metadata["finish_details"] = {"type": finish}
    return {
        "message": {
            "id": message_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "content": {"content_type": content_type, "parts": [text]},
            "status": "in_progress" if finish is None else "finished_successfully",
            "metadata": metadata,
            "recipient": recipient,
        },
        "conversation_id": "c1",
        "error": None,
    }


MODERATION = {"type": "moderation", "moderation_response": {"flagged": False, "blocked": False}}
BLOCKED = {"type": "moderation", "moderation_response": {"flagged": True, "blocked": True}}
ERROR = {"message": None, "conversation_id": None, "error": "Something went wrong"}


def recorded(*payloads: Any, done: bool = True) -> bytes:
    """A ChatGPT stream's bytes: each payload an event (``"ping"`` a ping event)."""
    out = [
        encode_event("{}", event="ping") if p == "ping" else encode_event(p, compact=False)
        for p in payloads
    ]
    if done:
        out.append(encode_event("[DONE]"))
    return b"".join(out)


def stream_of(texts: list[str], finish: str = "stop") -> bytes:
    """A stream whose message events carry ``texts``, then the usual tail."""
    events: list[Any] = [message(t) for t in texts]
    events.insert(1, "ping")
    return recorded(*events, MODERATION, message(texts[-1], finish=finish))


def convert(conversion: ChunkStream | Completion, data: bytes, size: int = 0) -> bytes:
    """Feed ``data`` in pieces of ``size`` bytes (0: whole), then the end."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)] if size else [data]
    return b"".join(conversion.feed(p) for p in pieces) + conversion.feed(b"", final=True)


def sse_payloads(data: bytes) -> list[Any]:
    """The ``data:`` payloads of an event stream, JSON parsed except ``[DONE]``."""
    out: list[Any] = []
    for block in data.decode().split("\n\n"):
        if block:
            assert block.startswith("data: ")
            text = block[len("data: ") :]
            out.append(text if text == "[DONE]" else json.loads(text))
    return out


def chunk_stream(include_usage: bool = False) -> ChunkStream:
    return ChunkStream("chatcmpl-x", 1700000000, "gpt-4o", 7, include_usage)


def streamed_text(chunks: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if c != "[DONE]" and c.get("choices")
    )


# --- the delta rule ---------------------------------------------------------------------


def deltas(texts: list[str]) -> list[str]:
    tracker = DeltaTracker()
    return [tracker.advance(t) for t in texts]


def test_growing_text_sends_only_the_new_part() -> None:
    assert deltas(["", "Hel", "Hello", "Hello", "Hello world"]) == ["", "Hel", "lo", "", " world"]


def test_rewritten_text_sends_nothing_then_goes_on_with_the_growth() -> None:
    # The simulator's rewrite mode: the third text changes earlier text, the last shrinks.
    assert list(REWRITE_PARTS) == [
        "Hello",
        "Hello wor",
        "Hello, world",
        "Hello, world!!!",
        "Hello, world!",
    ]
    assert deltas(list(REWRITE_PARTS)) == ["Hello", " wor", "", "!!!", ""]


def test_shrinking_text_sends_nothing_and_never_repeats() -> None:
    tracker = DeltaTracker()
    assert tracker.advance("Hello world. ") == "Hello world. "
    assert tracker.advance("Hello world.") == ""  # trailing space trimmed
    assert tracker.advance("Hello") == ""
    assert tracker.advance("Hello world.") == ""  # regrowing what the client has
    assert tracker.advance("Hello world. Bye") == "Bye"
    assert tracker.sent == "Hello world. Bye"


def test_shrinking_after_a_rewrite_never_repeats() -> None:
    # The rewrite mode's texts, then the last two again and more.
    texts = [*REWRITE_PARTS, "Hello, world!!!", "Hello, world!!!?"]
    assert deltas(texts) == ["Hello", " wor", "", "!!!", "", "", "?"]


def test_a_citation_removed_mid_stream_loses_at_most_one_event_of_growth() -> None:
    texts = [
        "See here 【11†source】",
        "See here 【11†source】 and",
        "See here and more",  # the marker removed, and " more" arrived at once
        "See here and more text.",
    ]
    assert deltas(texts) == ["See here 【11†source】", " and", "", " text."]


def test_coming_back_to_the_clients_text_resynchronises() -> None:
    tracker = DeltaTracker()
    tracker.advance("abc")
    assert tracker.advance("aXc") == ""
    assert tracker.advance("abcdef") == "def"  # starts with what the client has
    assert tracker.sent == "abcdef"


@given(st.lists(st.text(max_size=5), max_size=12))
def test_pure_growth_reassembles_exactly(pieces: list[str]) -> None:
    texts = ["".join(pieces[: i + 1]) for i in range(len(pieces))]
    assert "".join(deltas(texts)) == "".join(pieces)


@given(st.text(max_size=20), st.lists(st.integers(min_value=0, max_value=20), max_size=12))
def test_text_that_grows_and_shrinks_along_one_answer_arrives_exactly(
    final: str, cuts: list[int]
) -> None:
    texts = [final[:cut] for cut in cuts] + [final]
    sent = deltas(texts)
    assert "".join(sent) == final


@given(st.lists(st.text(alphabet="ab ,!", max_size=8), max_size=12))
def test_what_was_sent_only_grows(texts: list[str]) -> None:
    tracker = DeltaTracker()
    before = ""
    for text in texts:
        tracker.advance(text)
        assert tracker.sent.startswith(before)
        before = tracker.sent


# --- reading ChatGPT's events -------------------------------------------------------------


def answer_of(*payloads: Any) -> ChatGPTAnswer:
    answer = ChatGPTAnswer()
    for payload in payloads:
        if payload == "ping":
            answer.feed(SSEEvent(data="{}", event="ping"))
        else:
            answer.feed(SSEEvent(data=json.dumps(payload)))
    return answer


def test_only_the_assistants_visible_text_counts() -> None:
    answer = answer_of(
        message("the prompt", role="user", message_id="u"),
        message("You are ChatGPT", role="system", message_id="s"),
        "ping",
        message("search('x')", content_type="code", recipient="browser", message_id="t1"),
        message("draw a cat", recipient="dalle.text2im", message_id="t4"),
        message("tool output", role="tool", message_id="t2"),
        message("thinking", content_type="thoughts", message_id="t3"),
        MODERATION,
        message("The answer", finish="stop", message_id="a"),
    )
    assert answer.text == "The answer"
    assert answer.finish_reason == "stop"


def test_several_assistant_messages_are_joined_with_a_blank_line() -> None:
    answer = answer_of(message("First", message_id="a"), message("Second", message_id="b"))
    assert answer.text == "First\n\nSecond"


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "stop"), ("max_tokens", "length"), ("interrupted", "stop"), (None, "stop")],
)
def test_finish_reason(finish: str | None, reason: str) -> None:
    assert answer_of(message("x", finish=finish)).finish_reason == reason


def test_a_blocked_answer_finishes_with_content_filter() -> None:
    answer = answer_of(message("x"), BLOCKED, message("x", finish="stop"))
    assert answer.finish_reason == "content_filter"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (ERROR, "Something went wrong"),
        ({"error": {"message": "Too many requests", "code": "rate"}}, "Too many requests"),
        ({"error": {"code": "x"}}, "ChatGPT reported an error"),
        (message("fine"), None),
        ({"error": None}, None),
        ([1, 2], None),
    ],
)
def test_error_events(payload: Any, error: str | None) -> None:
    assert event_error(payload) == error


# --- streaming conversion ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7, 64])
def test_stream_chunks_carry_exactly_the_new_text(size: int) -> None:
    texts = ["Hi", "Hi there", "Hi there, friend"]
    conversion = chunk_stream()
    chunks = sse_payloads(convert(conversion, stream_of(texts), size))
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert [c["choices"][0]["delta"] for c in body] == [
        {"role": "assistant", "content": "Hi"},
        {"content": " there"},
        {"content": ", friend"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in body] == [None, None, None, "stop"]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in body} == {
        ("chatcmpl-x", 1700000000, "gpt-4o", "chat.completion.chunk")
    }
    assert all("usage" not in c for c in body)


def test_stream_of_rewritten_and_shrinking_text() -> None:
    chunks = sse_payloads(convert(chunk_stream(), stream_of(list(REWRITE_PARTS))))
    assert streamed_text(chunks) == "Hello wor!!!"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == [
        "Hello",
        " wor",
        "!!!",
        None,
    ]


def test_stream_with_usage_ends_with_a_usage_chunk() -> None:
    conversion = chunk_stream(include_usage=True)
    chunks = sse_payloads(convert(conversion, stream_of(["abcd", "abcd efgh"], "max_tokens")))
    *body, usage_chunk, done = chunks
    assert done == "[DONE]"
    assert body[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["usage"] is None for c in body)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert conversion.usage.completion_tokens == 3


def test_stream_error_before_any_chunk_raises_bad_gateway() -> None:
    conversion = chunk_stream()
    with pytest.raises(BadGateway, match="Something went wrong"):
        conversion.feed(recorded(ERROR))


def test_stream_error_after_text_ends_the_stream_with_an_error_event() -> None:
    conversion = chunk_stream()
    data = recorded(message("Partial"), message("Partial answer"), ERROR, message("late"))
    chunks = sse_payloads(convert(conversion, data))
    assert streamed_text(chunks[:-2]) == "Partial answer"
    assert chunks[-2] == {
        "error": {
            "message": "ChatGPT: Something went wrong",
            "type": "upstream_error",
            "code": "bad_gateway",
        }
    }
    assert chunks[-1] == "[DONE]"


def test_stream_cut_short_ends_with_an_error_event() -> None:
    conversion = chunk_stream()
    chunks = sse_payloads(convert(conversion, recorded(message("Half an"), done=False)))
    assert streamed_text(chunks) == "Half an"
    assert "ended before it was complete" in chunks[-2]["error"]["message"]


def test_stream_without_done_but_finished_ends_normally() -> None:
    chunks = sse_payloads(
        convert(chunk_stream(), recorded(message("ok", finish="stop"), done=False))
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1] == "[DONE]"


def test_stream_without_an_assistant_message_is_bad_gateway() -> None:
    with pytest.raises(BadGateway, match="no message"):
        convert(chunk_stream(), recorded(MODERATION))


def test_events_after_the_end_are_ignored() -> None:
    conversion = chunk_stream()
    out = convert(conversion, stream_of(["a", "ab"]) + recorded(message("abc")))
    assert streamed_text(sse_payloads(out)) == "ab"
    assert out.count(b"[DONE]") == 1


# --- non-streaming conversion ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 5])
def test_completion_is_one_object_with_the_final_text(size: int) -> None:
    conversion = Completion("chatcmpl-y", 1700000000, "gpt-3.5-turbo", 4)
    out = json.loads(convert(conversion, stream_of(list(REWRITE_PARTS), "max_tokens"), size))
    assert out == {
        "id": "chatcmpl-y",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-3.5-turbo",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, world!", "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8},
    }


def test_completion_holds_everything_back_until_the_end() -> None:
    conversion = Completion("c", 0, "m", 1)
    data = recorded(message("a"), message("ab", finish="stop"), done=False)
    assert conversion.feed(data) == b""
    assert json.loads(conversion.feed(b"", final=True))["choices"][0]["message"]["content"] == "ab"


@pytest.mark.parametrize(
    "data",
    [
        recorded(message("some text"), ERROR),
        recorded(message("some text"), done=False),
        recorded(MODERATION),
    ],
    ids=["error-event", "cut-short", "no-message"],
)
def test_completion_failures_are_bad_gateway(data: bytes) -> None:
    with pytest.raises(BadGateway):
        convert(Completion("c", 0, "m", 1), data)


# --- requests -----------------------------------------------------------------------------


def test_request_conversion() -> None:
    request = parse_chat_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
                },
                {"role": "assistant", "content": "Hello!"},
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": "How are you?"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.2,
            "n": 1,
        }
    )
    assert request.stream and request.include_usage
    assert request.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi\nthere"),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("system", "Answer in French."),
        ChatMessage("user", "How are you?"),
    )
    body = conversation_body(request, "gpt-4")
    assert body["action"] == "next"
    assert body["model"] == "gpt-4"
    assert "conversation_id" not in body
    assert body["history_and_training_disabled"] is True
    assert body["timezone_offset_min"] == 0
    assert [(m["author"]["role"], m["content"]["parts"]) for m in body["messages"]] == [
        (m.role, [m.text]) for m in request.messages
    ]
    assert all(m["content"]["content_type"] == "text" for m in body["messages"])
    ids = [m["id"] for m in body["messages"]] + [body["parent_message_id"]]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)
    # Each conversion is a new conversation: new ids every time.
    assert conversation_body(request, "gpt-4")["parent_message_id"] != body["parent_message_id"]


def test_include_usage_needs_stream() -> None:
    request = parse_chat_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "stream_options": {"include_usage": True},
        }
    )
    assert not request.stream and not request.include_usage


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "'model' is required"),
        ({"model": "m"}, "'messages' is required"),
        ({"model": "m", "messages": []}, "'messages' is required"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "'messages[0].role'"),
        ({"model": "m", "messages": [{"content": "x"}]}, "'messages[0].role'"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "cannot call tools"),
        ({"model": "m", "messages": [{"role": "user"}]}, "'messages[0].content'"),
        ({"model": "m", "messages": [{"role": "assistant", "content": None}]}, "content"),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "'image_url' is not supported",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "without a 'type'",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            ".text' must",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "'n' > 1"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "positive"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "'stream'",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function"}],
            },
            "'tools' is not supported",
        ),
    ],
)
def test_invalid_requests_are_400(body: Any, problem: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_chat_request(body)
    assert problem in caught.value.message
    assert caught.value.response().status == 400


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("é" * 9, 3)]
)
def test_token_estimate(text: str, tokens: int) -> None:
    assert estimate_tokens(len(text)) == tokens


def test_prompt_tokens_count_every_message() -> None:
    request = parse_chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": ""},
                {"role": "user", "content": "abcdefgh"},
            ],
        }
    )
    assert request.prompt_tokens == 1 + 2


# --- models ---------------------------------------------------------------------------------


def test_model_names_map_exact_then_longest_prefix_then_default() -> None:
    models = ModelMap({"gpt-4*": "gpt-4", "gpt-4o*": "gpt-4o", "gpt-4-32k": "x", "gpt-3.5*": "sha"})
    assert models.slug("gpt-4-32k") == "x"
    assert models.slug("gpt-4o-mini") == "gpt-4o"
    assert models.slug("gpt-4-turbo") == "gpt-4"
    assert models.slug("gpt-3.5-turbo-0125") == "sha"
    assert models.slug("text-davinci-002-render-sha") == "text-davinci-002-render-sha"
    assert ModelMap({}, default="auto").slug("claude") == "auto"


@pytest.mark.parametrize("key", ["", "*", "gpt*4", "a**"])
def test_bad_model_patterns_are_config_errors(key: str) -> None:
    with pytest.raises(ValueError, match="models"):
        ModelMap({key: "slug"})


def test_config_structures_from_toml_tables() -> None:
    config, problems = structure(
        {
            "access_token": "secret-token-123",
            "allow_anonymous": "true",
            "models": {"gpt-4*": "gpt-4"},
        },
        Imitate.Config,
        "$.plugins.imitate",
    )
    assert problems == []
    assert Imitate(config).models.slug("gpt-4o") == "gpt-4"
    assert config.allow_anonymous is True
    assert "secret-token-123" not in repr(config)  # the token stays out of reprs
    _, problems = structure({"model": {}}, Imitate.Config, "$.plugins.imitate")
    assert problems == ["$.plugins.imitate.model: unknown key (did you mean 'models'?)"]


def test_model_list_lists_slugs_and_working_aliases() -> None:
    chatgpt = {
        "models": [{"slug": "text-davinci-002-render-sha"}, {"slug": "gpt-4"}],
        "categories": [],
    }
    models = ModelMap({"gpt-3.5*": "text-davinci-002-render-sha", "gpt-4*": "gpt-4", "o1": "o1"})
    listing = openai_model_list(chatgpt, models)
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["text-davinci-002-render-sha", "gpt-4", "gpt-3.5"]
    assert all(m["object"] == "model" and m["owned_by"] == "chatgpt" for m in listing["data"])


def test_model_list_answer_finds_one_model_or_404() -> None:
    body = json.dumps({"models": [{"slug": "gpt-4"}]}).encode()
    answer = ModelListAnswer(ModelMap({}), "gpt-4")
    assert answer.feed(body) == b""
    assert json.loads(answer.feed(b"", final=True))["id"] == "gpt-4"
    with pytest.raises(GatewayError) as caught:
        ModelListAnswer(ModelMap({}), "gpt-5").feed(body, final=True)
    assert caught.value.status == 404 and caught.value.type == "not_found_error"
    with pytest.raises(BadGateway):
        ModelListAnswer(ModelMap({})).feed(b"<html>", final=True)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "status", "kind"),
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (429, 429, "rate_limit_error"),
        (422, 502, "upstream_error"),
        (500, 502, "upstream_error"),
        (503, 502, "upstream_error"),
    ],
)
def test_upstream_status_mapping(upstream: int, status: int, kind: str) -> None:
    error = upstream_error(upstream, b'{"detail": "nope"}', {})
    response = error.response()
    assert response.status == status
    assert json.loads(response.body)["error"] == {  # type: ignore[arg-type]
        "message": f"ChatGPT answered {upstream}: nope",
        "type": kind,
        "code": error.code,
    }


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"detail": "Unauthorized"}', "Unauthorized"),
        (b'{"detail": {"message": "Too many", "code": "rate"}}', "Too many"),
        (b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', "field required"),
        (b'{"error": "bad"}', "bad"),
        (b"<html>Cloudflare</html>", None),
        (b'{"detail": {}}', None),
    ],
)
def test_error_detail(body: bytes, detail: str | None) -> None:
    assert error_detail(body) == detail


def test_error_answer_keeps_retry_after_and_holds_the_body_back() -> None:
    answer = ErrorAnswer(429, {"Retry-After": "7", "Set-Cookie": "x"})
    assert answer.feed(b'{"detail": "slow ') == b""
    with pytest.raises(GatewayError) as caught:
        answer.feed(b'down"}', final=True)
    assert caught.value.status == 429
    assert caught.value.headers == {"Retry-After": "7"}
    assert caught.value.message == "ChatGPT answered 429: slow down"
