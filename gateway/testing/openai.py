"""A simulated OpenAI API at ``/v1``: models, chat completions and embeddings.

Point the gateway's OpenAI upstream at the server's root (``http://HOST:PORT``). Every
route needs ``Authorization: Bearer <anything>``; ``X-Sim-Status: NNN`` answers that
status; errors use OpenAI's ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

from aiohttp import web

from gateway.testing.flavors import OPENAI
from gateway.testing.guard import guard
from gateway.testing.openai_chat import ChatCompletions
from gateway.testing.recorder import Recorder
from gateway.testing.text import count_tokens

CLIENT_MAX_SIZE = 16 * 1024 * 1024
EMBEDDING_SIZE = 8
MODEL_IDS = ("gpt-3.5-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small")


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1686935002, "owned_by": "openai"}


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the OpenAI list format."""
    return web.json_response({"object": "list", "data": [_model(m) for m in MODEL_IDS]})


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``: one model, or 404."""
    model_id = request.match_info["model"]
    if model_id not in MODEL_IDS:
        return OPENAI.error(404, f"The model '{model_id}' does not exist")
    return web.json_response(_model(model_id))


def embedding(text: str) -> list[float]:
    """A small deterministic vector for ``text`` (from its SHA-256)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255 * 2 - 1, 4) for b in digest[:EMBEDDING_SIZE]]


def _inputs(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]  # one input given as token ids
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return [" ".join(map(str, v)) for v in value]
    return None


def _encode(vector: list[float], encoding: Any) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``: one small fake vector per input (floats or base64)."""
    try:
        body = await request.json()
    except ValueError:
        return OPENAI.error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return OPENAI.error(400, "you must provide a model parameter")
    texts = _inputs(body.get("input"))
    if texts is None:
        return OPENAI.error(400, "'input' must be a string or a non-empty array")
    encoding = body.get("encoding_format", "float")
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(embedding(t), encoding)}
        for i, t in enumerate(texts)
    ]
    tokens = sum(count_tokens(t) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return web.json_response(
        {"object": "list", "data": data, "model": body["model"], "usage": usage}
    )


def install_openai(
    app: web.Application, recorder: Recorder | None = None, *, delay: float = 0.0
) -> None:
    """Add the OpenAI routes (under ``/v1``) and their guard to ``app``."""
    app.middlewares.append(guard(OPENAI, recorder))
    p = OPENAI.prefix
    app.add_routes(
        [
            web.get(f"{p}/models", list_models),
            web.get(f"{p}/models/{{model}}", get_model),
            web.post(f"{p}/chat/completions", ChatCompletions(delay).handle),
            web.post(f"{p}/embeddings", embeddings),
        ]
    )


def openai_app(recorder: Recorder | None = None, *, delay: float = 0.0) -> web.Application:
    """A simulated OpenAI API, to mount at the root of a server.

    ``recorder`` receives every request; ``delay`` seconds separate streamed chunks.
    """
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    install_openai(app, recorder, delay=delay)
    return app
