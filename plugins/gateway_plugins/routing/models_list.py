"""``GET /v1/models`` and ``GET /v1/models/{model}`` answered from the model table.

Only exact public names are listed (a wildcard is a family of names, not a
model), and only those the caller's key may use: a key with ``models`` sees
those, a key without sees all.  A model the key may not use is not found, as
OpenAI answers for a model an organisation cannot see.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api import NotFound

__all__ = ["ModelNotFound", "model_answer", "models_answer"]

#: ``created`` of every listed model: the table has no dates, and 0 is honest.
_CREATED = 0


class ModelNotFound(NotFound):
    """404 ``model_not_found``, OpenAI's code for a model that does not exist."""

    code = "model_not_found"

    def __init__(self, model: str) -> None:
        shown = model if len(model) <= 256 else model[:256] + "..."
        super().__init__(f"The model '{shown}' does not exist or you do not have access to it.")


def _entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "gateway"}


def visible(names: list[str], allowed: frozenset[str] | None) -> list[str]:
    """The public ``names`` a key restricted to ``allowed`` (``None``: any) may use."""
    return names if allowed is None else [n for n in names if n in allowed]


def models_answer(names: list[str], allowed: frozenset[str] | None) -> web.Response:
    """The OpenAI model list of the names the caller may use."""
    data = [_entry(name) for name in visible(names, allowed)]
    return web.json_response({"object": "list", "data": data})


def model_answer(name: str, names: list[str], allowed: frozenset[str] | None) -> web.Response:
    """One model's object, or 404 ``model_not_found``."""
    if name not in visible(names, allowed):
        raise ModelNotFound(name)
    return web.json_response(_entry(name))
