"""``imitate``'s model names: OpenAI names mapped to ChatGPT slugs, and the model list.

The ``models`` table maps an OpenAI model name to a ChatGPT model slug.  A key
is an exact name (``"gpt-4"``) or a prefix pattern ending in ``*``
(``"gpt-3.5*"``).  An exact key wins; else the longest matching prefix wins,
whatever the table's order (so ``"gpt-4o*"`` beats ``"gpt-4*"``); else
``default_model`` when set; else the name goes to ChatGPT unchanged (so a
client may ask for a slug such as ``text-davinci-002-render-sha`` directly,
and an unknown name gets ChatGPT's own error).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.api import json_loads_upstream
from gateway_plugins.imitate.errors import UpstreamNotFound, upstream_unreadable

__all__ = ["ModelListAnswer", "ModelMap", "openai_model_list"]


class ModelMap:
    """Resolves OpenAI model names to ChatGPT slugs (rules in the module docstring)."""

    __slots__ = ("_default", "_exact", "_prefixes")

    def __init__(self, models: Mapping[str, str], default: str = "") -> None:
        exact: dict[str, str] = {}
        prefixes: list[tuple[str, str]] = []
        for key, slug in models.items():
            if not slug.strip():
                raise ValueError(f"models.{key}: the ChatGPT model slug is empty")
            pattern = key.strip()
            if not pattern or pattern == "*":
                raise ValueError(f"models.{key!r}: name a model or a prefix ending in '*'")
            if "*" in pattern[:-1]:
                raise ValueError(f"models.{key}: '*' may only end a pattern")
            if pattern.endswith("*"):
                prefixes.append((pattern[:-1], slug))
            else:
                exact[pattern] = slug
        # Longest prefix first: the most specific pattern wins.
        prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        self._exact = exact
        self._prefixes = tuple(prefixes)
        self._default = default.strip()

    def slug(self, model: str) -> str:
        """The ChatGPT slug for the OpenAI model name ``model``."""
        found = self._exact.get(model)
        if found is not None:
            return found
        for prefix, slug in self._prefixes:
            if model.startswith(prefix):
                return slug
        return self._default or model

    def aliases(self) -> list[tuple[str, str]]:
        """``(OpenAI name, slug)`` for every exact key and every pattern's prefix."""
        names = [*self._exact.items(), *((p, s) for p, s in self._prefixes if p)]
        return sorted(names)


def openai_model_list(chatgpt: Any, models: ModelMap) -> dict[str, Any]:
    """ChatGPT's ``{"models": [{"slug", ...}]}`` as OpenAI's ``{"object": "list", "data"}``.

    Each ChatGPT slug is listed, then each configured alias (an exact name, or a
    pattern's prefix) whose slug ChatGPT listed: every id in the list is a name
    the endpoint accepts and can serve.  ChatGPT gives no creation time: ``created``
    is 0.  An answer without a ``models`` list raises `BadGateway`.
    """
    listed = chatgpt.get("models") if isinstance(chatgpt, dict) else None
    if not isinstance(listed, list):
        raise upstream_unreadable("ChatGPT's model list has no 'models' array")
    slugs = [m["slug"] for m in listed if isinstance(m, dict) and isinstance(m.get("slug"), str)]
    available = set(slugs)
    aliases = [name for name, slug in models.aliases() if slug in available]
    ids = dict.fromkeys([*slugs, *aliases])
    return {"object": "list", "data": [model_object(model_id) for model_id in ids]}


def model_object(model_id: str) -> dict[str, Any]:
    """One entry of OpenAI's model list."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "chatgpt"}


class ModelListAnswer:
    """ChatGPT's ``GET /models`` body, read whole and answered as OpenAI's list or one model.

    ``model_id`` set: the answer is that model's object (404 when it is not listed).
    """

    __slots__ = ("_body", "model_id", "models")

    #: The largest model list read (ChatGPT's is a few KiB).
    LIMIT = 4 * 1024 * 1024

    def __init__(self, models: ModelMap, model_id: str | None = None) -> None:
        self.models = models
        self.model_id = model_id
        self._body = bytearray()

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """Hold the body back; at the end, return the converted answer."""
        self._body += chunk
        if len(self._body) > self.LIMIT:
            raise upstream_unreadable(f"ChatGPT's model list is larger than {self.LIMIT} bytes")
        if not final:
            return b""
        try:
            parsed = json_loads_upstream(self._body)
        except ValueError:  # (UnicodeDecodeError is one)
            raise upstream_unreadable("ChatGPT's model list is not valid JSON") from None
        listing = openai_model_list(parsed, self.models)
        if self.model_id is None:
            return json.dumps(listing, ensure_ascii=False).encode()
        for model in listing["data"]:
            if model["id"] == self.model_id:
                return json.dumps(model, ensure_ascii=False).encode()
        raise UpstreamNotFound(f"The model {self.model_id!r} does not exist")
