"""A simulated ChatGPT web backend, every route under ``/backend-api``.

Point the gateway's ChatGPT upstream at ``http://HOST:PORT/backend-api``. Every route
needs ``Authorization: Bearer <anything>``; ``X-Sim-Status: NNN`` answers that status;
``POST /backend-api/conversation`` streams (see `gateway.testing.chatgpt_stream`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from gateway.testing.chatgpt_stream import ConversationStream
from gateway.testing.flavors import CHATGPT
from gateway.testing.guard import guard
from gateway.testing.recorder import Recorder

TOTAL_CONVERSATIONS = 42
CREATED = "2024-01-01T00:00:00.000000+00:00"
CLIENT_MAX_SIZE = 16 * 1024 * 1024

MODELS: list[dict[str, Any]] = [
    {
        "slug": "text-davinci-002-render-sha",
        "max_tokens": 8191,
        "title": "Default (GPT-3.5)",
        "description": "Our fastest model, great for most everyday tasks.",
        "tags": ["gpt3.5"],
        "capabilities": {},
        "product_features": {},
    },
    {
        "slug": "gpt-4",
        "max_tokens": 4095,
        "title": "GPT-4",
        "description": "Our most capable model, great for creative stuff.",
        "tags": ["gpt4"],
        "capabilities": {},
        "product_features": {},
    },
]


def conversation_id(index: int) -> str:
    """The id of the ``index``-th simulated conversation (stable across runs)."""
    digest = hashlib.sha256(f"conversation-{index}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _summary(index: int) -> dict[str, Any]:
    return {
        "id": conversation_id(index),
        "title": f"Simulated conversation {index}",
        "create_time": CREATED,
        "update_time": CREATED,
        "mapping": None,
        "current_node": None,
        "conversation_template_id": None,
        "gizmo_id": None,
        "is_archived": False,
        "workspace_id": None,
    }


def _int_param(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise web.HTTPUnprocessableEntity(reason=f"{name} must be an integer") from None


async def list_conversations(request: web.Request) -> web.Response:
    """``GET /conversations``: a page of summaries, echoing ``offset`` and ``limit``."""
    offset = _int_param(request, "offset", 0)
    limit = _int_param(request, "limit", 20)
    stop = min(max(offset, 0) + max(limit, 0), TOTAL_CONVERSATIONS)
    items = [_summary(i) for i in range(max(offset, 0), stop)]
    return web.json_response(
        {
            "items": items,
            "total": TOTAL_CONVERSATIONS,
            "limit": limit,
            "offset": offset,
            "has_missing_conversations": False,
        }
    )


def _node(nid: str, parent: str, child: str | None, role: str, text: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": nid,
        "author": {"role": role, "name": None, "metadata": {}},
        "content": {"content_type": "text", "parts": [text]},
        "status": "finished_successfully",
        "end_turn": True if role == "assistant" else None,
        "metadata": {},
        "recipient": "all",
    }
    children = [child] if child else []
    return {"id": nid, "message": message, "parent": parent, "children": children}


async def get_conversation(request: web.Request) -> web.Response:
    """``GET /conversation/{id}``: one conversation with a short message tree."""
    cid = request.match_info["id"]
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["user-1"]},
        "user-1": _node("user-1", "root", "assistant-1", "user", "Hello"),
        "assistant-1": _node("assistant-1", "user-1", None, "assistant", "You said: Hello"),
    }
    return web.json_response(
        {
            "title": "Simulated conversation",
            "create_time": CREATED,
            "update_time": CREATED,
            "mapping": mapping,
            "moderation_results": [],
            "current_node": "assistant-1",
            "conversation_id": cid,
            "is_archived": False,
        }
    )


async def success(request: web.Request) -> web.Response:
    """``PATCH /conversation/{id}`` and ``PATCH /conversations``: ``{"success": true}``."""
    return web.json_response({"success": True})


async def gen_title(request: web.Request) -> web.Response:
    """``POST /conversation/gen_title/{id}``: a title derived from the conversation id."""
    return web.json_response({"title": f"Simulated title {request.match_info['id'][:8]}"})


async def message_feedback(request: web.Request) -> web.Response:
    """``POST /conversation/message_feedback``: the feedback as ChatGPT stores it."""
    try:
        body = await request.json()
    except ValueError:
        return CHATGPT.error(400, "the request body is not valid JSON")
    fields = body if isinstance(body, dict) else {}
    return web.json_response(
        {
            "message_id": fields.get("message_id"),
            "conversation_id": fields.get("conversation_id"),
            "user_id": "user-simulated",
            "rating": fields.get("rating"),
            "content": "{}",
        }
    )


async def models(request: web.Request) -> web.Response:
    """``GET /models``: ChatGPT's model list."""
    return web.json_response({"models": MODELS, "categories": []})


def install_chatgpt(
    app: web.Application,
    recorder: Recorder | None = None,
    *,
    delay: float = 0.0,
    words: int | None = None,
) -> None:
    """Add the ChatGPT routes (under ``/backend-api``) and their guard to ``app``."""
    app.middlewares.append(guard(CHATGPT, recorder))
    p = CHATGPT.prefix
    app.add_routes(
        [
            web.get(f"{p}/conversations", list_conversations),
            web.patch(f"{p}/conversations", success),
            web.post(f"{p}/conversation", ConversationStream(delay, words).handle),
            web.post(f"{p}/conversation/gen_title/{{id}}", gen_title),
            web.post(f"{p}/conversation/message_feedback", message_feedback),
            web.get(f"{p}/conversation/{{id}}", get_conversation),
            web.patch(f"{p}/conversation/{{id}}", success),
            web.get(f"{p}/models", models),
        ]
    )


def chatgpt_app(
    recorder: Recorder | None = None, *, delay: float = 0.0, words: int | None = None
) -> web.Application:
    """A simulated ChatGPT web backend, to mount at the root of a server.

    ``recorder`` receives every request; ``delay`` seconds separate stream events;
    ``words`` fixes the number of words of every answer.
    """
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    install_chatgpt(app, recorder, delay=delay, words=words)
    return app
